"""`python -m bench.draft_instructions [--small N] [--large N] [--baseline-src DIR]`: instructions a draft costs.

`bench.overhead`'s service and traffic (`slack-backend run` with the loopback fakes of Slack and Anthropic, signed
`/draft` commands, INFO JSON logs, a SQLite file), with the service run under valgrind's cachegrind, which counts
the instructions it runs rather than the time they take: a figure a slow or noisy host does not move, for changes
worth a few percent of a draft that wall-clock runs cannot resolve. The service runs once with --small drafts and
once with --large; the difference over the difference in drafts is what one more draft costs the service (the web
request, the job, the database, the model call and the delivery), its start-up and shutdown cancelled out. Drafts
go at one a second, so the figure holds a second of the service's background work (lease renewals, heartbeats,
stall checks: about 330,000 instructions a second idle, measured), the same for every tree. The same code counted
13.28-13.54 million instructions a draft in three runs of 10 and 40 drafts: a change below 3% needs several runs,
or a narrower measure. With
--baseline-src, another source tree (say `git worktree add /tmp/base main`, then `/tmp/base/src`) is counted the
same way, alternately. `--oauth` counts a draft in multi-workspace mode (tokens from the installation store), as
`bench.overhead --oauth`. Needs `valgrind` (Debian package).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

from tests.fakes.anthropic_server import Behaviour

from bench._server import BenchRedis, free_port
from bench.instructions import VALGRIND, counted_trees, instructions_in, per_one_more
from bench.overhead import ClockedAnthropic, ClockedSlack, install, send_all, service_env, wait_delivered, wait_ready
from slack_backend.store import TokenCipher

# Valgrind runs Python some 30 to 50 times slower: the service takes a minute or more to start, and requests are
# sent slowly enough that it keeps up.
READY_TIMEOUT_S = 600.0
RATE = 1.0
MODEL_S = 0.05


async def count(drafts: int, src: Path | None, *, oauth: bool = False) -> int:
    """Instructions the service process ran to start, answer `drafts` drafts and stop."""
    with tempfile.TemporaryDirectory() as tmp:
        redis = BenchRedis(Path(tmp))
        redis.start()
        slack, claude = ClockedSlack(), ClockedAnthropic()
        await slack.start()
        await claude.start()
        claude.script(*[Behaviour(delay_s=MODEL_S) for _ in range(drafts + 10)])
        port = free_port()
        db_url = f"sqlite+aiosqlite:///{tmp}/drafts.db"
        key = TokenCipher.new_key() if oauth else None
        if key is not None:
            await install(db_url, key, slack)
        env = service_env(redis.url, db_url, slack, claude, port, keep=drafts + 100, oauth_key=key)
        if src is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
        script = Path(sys.executable).with_name("slack-backend")
        log_path = Path(tmp) / "service.log"
        try:
            with log_path.open("wb") as log:
                # The one blocking call is a fork, not a wait.
                proc = subprocess.Popen([*VALGRIND, str(script), "run"], env=env, stdout=log, stderr=log)  # noqa: ASYNC220
            try:
                await wait_ready(f"http://127.0.0.1:{port}", [proc], timeout_s=READY_TIMEOUT_S)
                await send_all(f"http://127.0.0.1:{port}", slack, RATE, drafts)
                await wait_delivered(slack, range(drafts), timeout_s=READY_TIMEOUT_S)
                delivered = sum(any(draft for _, draft in slack.post_times.get(f"r{seq}", [])) for seq in range(drafts))
                if delivered != drafts:
                    raise RuntimeError(f"{delivered} of {drafts} drafts delivered")
            finally:
                proc.terminate()
                await asyncio.to_thread(proc.wait, READY_TIMEOUT_S)
        finally:
            await slack.close()
            await claude.close()
            redis.stop()
        return instructions_in(log_path.read_text(errors="replace"))


def count_drafts(drafts: int, src: Path | None, *, oauth: bool) -> int:
    """`count`, run to its end on a loop of its own."""
    return asyncio.run(count(drafts, src, oauth=oauth))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.draft_instructions", description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=10, help="drafts in the small run (default 10)")
    parser.add_argument("--large", type=int, default=70, help="drafts in the large run (default 70)")
    parser.add_argument("--baseline-src", type=Path, help="another source tree's src/, counted alternately")
    parser.add_argument("--oauth", action="store_true", help="multi-workspace mode: tokens from the installation store")
    args = parser.parse_args(argv)
    trees = counted_trees(args.baseline_src)
    if trees is None:
        return 1
    per_draft: dict[str, float] = {}
    for name, src in trees:
        per_draft[name] = per_one_more(partial(count_drafts, src=src, oauth=args.oauth), args.small, args.large)
        print(f"{name}: {per_draft[name]:,.0f} instructions a draft", flush=True)
    if len(trees) > 1:
        print(f"this tree / baseline: {per_draft['this tree'] / per_draft['baseline']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
