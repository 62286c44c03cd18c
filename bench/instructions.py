"""`python -m bench.instructions [--levels WARNING,INFO] [--baseline-src DIR]`: a worker's instructions per job.

Counted by valgrind's cachegrind, which counts the instructions a process runs, not the time they take: a figure
that a slow or noisy host does not move, for changes worth a few percent that wall-clock runs cannot resolve. One
Worker (concurrency 10, default retention, JSON logs rendered to /dev/null at each level) processes a queue of
no-op jobs filled beforehand by another process; it runs once with --small jobs and once with --large, and the
difference over the difference in jobs is what one more job costs, start-up and shutdown cancelled out. Printed:
instructions per job at each level, the ratio WARNING/INFO (what INFO logging leaves of the rate, if the worker's
CPU sets it) and, with --baseline-src, the same for another source tree run alternately.

Needs `valgrind` (Debian package) and a redis-server of its own, started on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench._server import BenchRedis

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "bench-ir"


async def _fill(url: str, queue_name: str, jobs: int) -> None:
    from slack_backend.queue import BulkJob, Queue, create_redis

    client = create_redis(url)
    queue = Queue(queue_name, connection=client, prefix=PREFIX)
    for start in range(0, jobs, 1000):
        await queue.add_bulk([BulkJob("no-op", {"i": i}) for i in range(start, min(jobs, start + 1000))])
    await client.aclose()


async def _work(url: str, queue_name: str, jobs: int) -> None:
    from slack_backend.queue import Job, Queue, Worker, create_redis

    client = create_redis(url)

    async def processor(job: Job) -> None:
        return None

    worker = Worker(Queue(queue_name, connection=client, prefix=PREFIX), processor, concurrency=10)
    running = asyncio.ensure_future(worker.run())
    # Polled: a `completed` listener would make the worker build an event a job, and count in the figure.
    while worker.stats.completed < jobs:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await worker.close()
    await running
    await client.aclose()


def _child(argv: list[str]) -> None:
    """In the child: `fill URL QUEUE JOBS` or `work URL QUEUE JOBS LEVEL`."""
    if argv[0] == "fill":
        asyncio.run(_fill(argv[1], argv[2], int(argv[3])))
        return
    from bench.drivers.ours import log_to_null
    from slack_backend.cli_service import run_event_loop

    log_to_null(argv[4])  # as the process benchmark's worker renders its lines
    run_event_loop(_work(argv[1], argv[2], int(argv[3])))


def tree_env(src: Path | None) -> dict[str, str]:
    """The environment that runs `src`'s code (this checkout's when None), with the bench importable."""
    path = [str(ROOT)] if src is None else [str(src), str(ROOT)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


VALGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def instructions_in(valgrind_output: str) -> int:
    """The instruction count ("I refs") cachegrind printed for the process."""
    found = _REFS.search(valgrind_output)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {valgrind_output[-400:]}")
    return int(found.group(1).replace(",", ""))


def instructions_of_run(argv: list[str], env: dict[str, str]) -> int:
    """The instructions the process `argv` ran under cachegrind, to its end; it must exit 0."""
    done = subprocess.run([*VALGRIND, *argv], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return instructions_in(done.stderr)


def per_one_more(count: Callable[[int], int], small: int, large: int) -> float:
    """What one more repetition costs: `count` (instructions for n repetitions) at `small` and at `large`, the
    difference over the difference, so start-up, set-up and shutdown cancel out."""
    return (count(large) - count(small)) / (large - small)


def counted_trees(baseline_src: Path | None) -> list[tuple[str, Path | None]] | None:
    """The source trees to count, the baseline first, each compiled beforehand; None (said why) without valgrind.

    A tree without its .pyc files would be compiled in its first (small) run only, and the difference would be off
    by the compiling: a negative figure, measured.
    """
    if shutil.which("valgrind") is None:
        print("NOT MEASURED: valgrind is not installed (apt-get install valgrind)")
        return None
    trees: list[tuple[str, Path | None]] = [("this tree", None)]
    if baseline_src is not None:
        trees.insert(0, ("baseline", baseline_src.resolve()))
    for _, src in trees:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(src or ROOT / "src")], check=True)
    return trees


def count(url: str, jobs: int, level: str, src: Path | None, run: int) -> int:
    """Instructions the worker process ran to process `jobs` jobs at `level` (the queue filled by another process)."""
    queue_name = f"q{run}-{jobs}-{level}"
    module = [sys.executable, "-m", "bench.instructions", "--child"]
    subprocess.run([*module, "fill", url, queue_name, str(jobs)], env=tree_env(src), check=True)
    return instructions_of_run([*module, "work", url, queue_name, str(jobs), level], tree_env(src))


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["--child"]:
        _child(args_in[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="WARNING,INFO", help="log levels to count (default WARNING,INFO)")
    parser.add_argument("--small", type=int, default=1000, help="jobs in the small run (default 1,000)")
    parser.add_argument("--large", type=int, default=7000, help="jobs in the large run (default 7,000)")
    parser.add_argument("--baseline-src", type=Path, help="another source tree's src/, counted alternately")
    args = parser.parse_args(args_in)
    trees = counted_trees(args.baseline_src)
    if trees is None:
        return 1
    levels = [level.strip().upper() for level in args.levels.split(",") if level.strip()]
    per_job: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        redis = BenchRedis(Path(tmp))
        redis.start()
        try:
            run = 0
            for level in levels:
                for name, src in trees:
                    run += 1
                    counted = partial(count, redis.url, level=level, src=src, run=run)
                    per_job[name, level] = per_one_more(counted, args.small, args.large)
                    print(f"{name}, {level}: {per_job[name, level]:,.0f} instructions a job", flush=True)
        finally:
            redis.stop()
    print()
    print("| tree | " + " | ".join(levels) + " | ratio |")
    print("|---|" + "---|" * (len(levels) + 1))
    for name, _ in trees:
        figures = [per_job[name, level] for level in levels]
        ratio = f"{figures[0] / figures[-1]:.3f}" if len(figures) > 1 else "-"
        print(f"| {name} | " + " | ".join(f"{f:,.0f}" for f in figures) + f" | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
