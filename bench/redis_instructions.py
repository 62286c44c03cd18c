"""`python -m bench.redis_instructions [--adds N] [--jobs N] [--baseline-src DIR]`: what an add and a job cost Redis.

Counted by valgrind's callgrind in a redis-server of its own (no persistence, a free loopback port): instructions,
not time, so a slow or noisy host does not move the figure. Two measures, each counted between a zeroing and a dump
of the server's counters (`callgrind_control`), so start-up, loading the scripts and filling the queue stay out:

- **add**: `Queue.add` of the process benchmark's payload, one by one and awaited, after 50 adds to warm up;
- **process**: one Worker (concurrency 10, default retention, logging at WARNING) running a queue of no-op jobs
  filled beforehand with `add_bulk`, until every job has completed.

Printed: Redis's instructions per add and per processed job, and with --baseline-src the same for another source
tree (say `git worktree add /tmp/base main`, then `/tmp/base/src`), counted first. The figures hold the server's
own work around each script call (reading the request, writing the reply), not only the script.
Needs `valgrind` (Debian package), whose `callgrind_control` this uses.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.instructions import counted_trees, tree_env
from slack_backend.queue.testing import RedisServer

PREFIX = "bench-redis-ir"
# Valgrind runs redis-server some 30 times slower: it takes seconds to start.
READY_TIMEOUT_S = 120.0
CALLGRIND = ["valgrind", "--tool=callgrind"]
_SUMMARY = re.compile(r"^summary:\s+(\d+)$", re.MULTILINE)


async def _adds(url: str, n: int, server_pid: str) -> None:
    from bench.harness import payload
    from slack_backend.queue import Queue, create_redis

    client = create_redis(url)
    queue = Queue("adds", connection=client, prefix=PREFIX)
    datas = [payload(i) for i in range(n + 50)]
    for data in datas[:50]:
        await queue.add("slack-request", data)
    _control("-z", server_pid)
    for data in datas[50:]:
        await queue.add("slack-request", data)
    _control("-d", server_pid)
    await client.aclose()


async def _process(url: str, n: int, server_pid: str) -> None:
    from bench.drivers.ours import log_to_null
    from bench.harness import payload
    from slack_backend.queue import BulkJob, Job, JobEvent, Queue, Worker, create_redis

    log_to_null("WARNING")
    client = create_redis(url)
    queue = Queue("jobs", connection=client, prefix=PREFIX)
    await queue.add_bulk([BulkJob("slack-request", payload(i)) for i in range(n)])
    finished = asyncio.Event()
    done = 0

    async def processor(job: Job) -> None:
        return None

    def completed(event: JobEvent) -> None:
        # Told once the completion is written in Redis: the last acks are inside the count.
        nonlocal done
        done += 1
        if done == n:
            finished.set()

    worker = Worker(queue, processor, concurrency=10)
    worker.on("completed", completed)
    _control("-z", server_pid)
    running = asyncio.create_task(worker.run())
    await finished.wait()
    _control("-d", server_pid)
    await worker.close()
    await running
    await client.aclose()


def _control(flag: str, pid: str) -> None:
    subprocess.run(["callgrind_control", flag, pid], check=True, capture_output=True)


def count(measure: str, n: int, src: Path | None) -> int:
    """Redis's instructions for `n` adds or processed jobs (`measure`: add | process), counted for the tree `src`."""
    with tempfile.TemporaryDirectory() as workdir:
        out = Path(workdir) / "callgrind.out"
        server = RedisServer(
            Path(workdir),
            wrapper=[*CALLGRIND, f"--callgrind-out-file={out}"],
            start_timeout_s=READY_TIMEOUT_S,
        )
        server.start()
        try:
            assert server.proc is not None
            child = [sys.executable, "-m", "bench.redis_instructions", "--child", measure, server.url, str(n)]
            subprocess.run([*child, str(server.proc.pid)], env=tree_env(src), check=True)
        finally:
            server.stop()
        dumps = sorted(Path(workdir).glob("callgrind.out.*"))  # the dump the child asked for, then the final one
        if not dumps:
            raise RuntimeError("callgrind wrote no dump")
        found = _SUMMARY.search(dumps[0].read_text(errors="replace"))
        if found is None:
            raise RuntimeError(f"no summary line in {dumps[0].name}")
        return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["--child"]:
        measure, url, n, pid = args_in[1:5]
        from slack_backend.cli_service import run_event_loop

        run_event_loop((_adds if measure == "add" else _process)(url, int(n), pid))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adds", type=int, default=1000, help="adds counted (default 1,000)")
    parser.add_argument("--jobs", type=int, default=2000, help="jobs processed and counted (default 2,000)")
    parser.add_argument("--baseline-src", type=Path, help="another source tree's src/, counted first")
    args = parser.parse_args(args_in)
    trees = counted_trees(args.baseline_src)
    if trees is None:
        return 0
    print("| tree | Redis instructions per add | per processed job (c10) |")
    print("|---|---|---|")
    for label, src in trees:
        per_add = count("add", args.adds, src) / args.adds
        per_job = count("process", args.jobs, src) / args.jobs
        print(f"| {label} | {per_add:,.0f} | {per_job:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
