"""`python -m bench.client_instructions [--measures add,tokens] [--baseline-src DIR]`: what our client code costs.

Counted by valgrind's cachegrind (instructions, not time: a slow or noisy host does not move the figure), each
measure in a process of its own, once with --small repetitions and once with --large; the difference over the
difference in repetitions is what one more costs, start-up and set-up cancelled out.

- **add**: one `Queue.add` of the process benchmark's payload, awaited, one after another, on uvloop as the bench's
  driver runs (the adding process only; Redis is a server of its own, not counted);
- **tokens**: what a draft in multi-workspace mode asks the installation store, the workspace's bot token and the
  requester's own token (`InstallationStoreTokenSource` on a SQLite file, tokens encrypted; the requester installed
  the app and has no token of their own, as in `bench.overhead --oauth`).

With --baseline-src, another source tree (say `git worktree add /tmp/base main`, then `/tmp/base/src`) is counted
the same way, first. Needs `valgrind` (Debian package).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from bench._server import BenchRedis
from bench.instructions import counted_trees, instructions_of_run, per_one_more, tree_env

MEASURES = ("add", "tokens")
SMALL = {"add": 500, "tokens": 20}
LARGE = {"add": 2500, "tokens": 120}
TEAM, USER = "T0BENCH01", "U0USER0001"


async def adds(url: str, n: int) -> int:
    """Add `n` jobs one by one; how many were created (all, in a queue of their own, deleted after)."""
    from bench.harness import payload
    from slack_backend.queue import Queue, create_redis

    client = create_redis(url)
    queue = Queue(f"adds-{n}-{time.monotonic_ns()}", connection=client, prefix="bench-client-ir")
    data = payload(0)  # one payload for every add: making them would count too
    created = 0
    for _ in range(n):
        created += (await queue.add("slack-request", data)).created
    await queue.obliterate()
    await client.aclose()
    return created


async def token_lookups(n: int) -> int:
    """Look up the bot's and the requester's token `n` times; how many pairs answered what was saved (all)."""
    from slack_sdk.oauth.installation_store.models.installation import Installation

    from slack_backend.slack.tokens import InstallationStoreTokenSource
    from slack_backend.store import TokenCipher, create_engine, create_tables, installation_store

    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp}/tokens.db")
        cipher = TokenCipher([TokenCipher.new_key()])
        await create_tables(engine, cipher)
        store = installation_store(engine, "bench-client", cipher)
        await store.async_save(
            Installation(
                app_id="A0BENCH01",
                team_id=TEAM,
                bot_token="xoxb-bench-token",
                bot_id="B0BENCH01",
                bot_user_id="U0BOT0001",
                user_id=USER,
                installed_at=time.time(),
            )
        )
        source = InstallationStoreTokenSource(store)
        answered = 0
        for _ in range(n):
            bot = await source.bot_token(TEAM)
            own = await source.user_token_for(TEAM, USER)
            answered += bot == "xoxb-bench-token" and own is None
        await engine.dispose()
    return answered


def _child(measure: str, url: str, n: int) -> None:
    if measure == "add":
        from slack_backend.cli_service import run_event_loop

        done = run_event_loop(adds(url, n))
    else:
        done = asyncio.run(token_lookups(n))
    if done != n:  # a figure for work that did not happen would be wrong, not small
        raise SystemExit(f"{measure}: {done} of {n} did what was counted")


def count(measure: str, url: str, n: int, src: Path | None) -> int:
    """Instructions a process ran to do `measure` `n` times (and start, set up and stop)."""
    argv = [sys.executable, "-m", "bench.client_instructions", "--child", measure, url, str(n)]
    return instructions_of_run(argv, tree_env(src))


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["--child"]:
        _child(args_in[1], args_in[2], int(args_in[3]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.client_instructions", description=__doc__.split("\n")[0])
    parser.add_argument("--measures", default=",".join(MEASURES), help="what to count (default add,tokens)")
    parser.add_argument("--baseline-src", type=Path, help="another source tree's src/, counted first")
    args = parser.parse_args(args_in)
    measures = [m.strip() for m in args.measures.split(",") if m.strip()]
    unknown = sorted(set(measures) - set(MEASURES))
    if unknown:
        parser.error(f"unknown measure(s) {', '.join(unknown)}: choose from {', '.join(MEASURES)}")
    trees = counted_trees(args.baseline_src)
    if trees is None:
        return 1
    figures: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        redis = BenchRedis(Path(tmp))
        redis.start()
        try:
            for measure in measures:
                for name, src in trees:
                    counted = partial(count, measure, redis.url, src=src)
                    figures[name, measure] = per_one_more(counted, SMALL[measure], LARGE[measure])
                    print(f"{name}, {measure}: {figures[name, measure]:,.0f} instructions", flush=True)
        finally:
            redis.stop()
    print()
    print("| tree | " + " | ".join(f"{m} (instructions each)" for m in measures) + " |")
    print("|---|" + "---|" * len(measures))
    for name, _ in trees:
        print(f"| {name} | " + " | ".join(f"{figures[name, m]:,.0f}" for m in measures) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
