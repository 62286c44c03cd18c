"""Profile our worker during the process benchmark with py-spy: `python -m bench.profile [--n N] [--concurrency C]`.

py-spy comes from bench/.venv-peers (setup_peers.sh installs it there, never into the project). It samples the
worker process from outside, so the worker runs unmodified; the hot spots are printed and written to
bench/results/profile.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench._server import BenchRedis
from bench.drivers.ours import JOB_NAME, PREFIX
from bench.harness import RESULT, ROOT, payload
from slack_backend.queue import BulkJob, Queue, create_redis

PY_SPY = ROOT / "bench" / ".venv-peers" / "bin" / "py-spy"
RESULTS = ROOT / "bench" / "results"
TOP = 15


def _py_spy() -> str:
    found = str(PY_SPY) if PY_SPY.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy not found: run bench/setup_peers.sh (it installs py-spy into bench/.venv-peers)")
    return found


async def _preload(url: str, queue: str, n: int) -> None:
    client = create_redis(url)
    try:
        await Queue(queue, connection=client, prefix=PREFIX).add_bulk([BulkJob(JOB_NAME, payload(i)) for i in range(n)])
    finally:
        await client.aclose()


def _frame(raw: str) -> str:
    """`func (redis/asyncio/client.py:924)` -> `func (redis/asyncio/client.py)`: py-spy already gives package paths."""
    name, _, where = raw.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for root in ("slack_backend/", "site-packages/"):
        if root in path:
            path = (root if root == "slack_backend/" else "") + path.split(root, 1)[1]
    return f"{name} ({path})"


def summarize(collapsed: str) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """Total samples, the top frames by own (self) samples, and the engine's and redis-py's frames by inclusive
    samples (a frame's share of samples in which it is anywhere on the stack)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            if "slack_backend/" in frame or "(redis/" in frame:
                inclusive[frame] += count
    return total, own.most_common(TOP), inclusive.most_common(TOP)


def profile(n: int, concurrency: int, rate: int) -> str:
    workdir = Path(tempfile.mkdtemp(prefix="slack-backend-profile-"))
    server = BenchRedis(workdir / "redis")
    server.start()
    try:
        asyncio.run(_preload(server.url, "profile", n))
        cfg = {"url": server.url, "queue": "profile", "n": n, "concurrency": concurrency}
        out_path = workdir / "profile.txt"
        args = [_py_spy(), "record", "--format", "raw", "--function", "--rate", str(rate), "--output", str(out_path)]
        args += ["--", sys.executable, "-m", "bench.drivers.ours", "worker", json.dumps(cfg)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith(RESULT)), None)
        if line is None or not out_path.exists():
            raise SystemExit(f"profiling failed: {done.stderr.strip()[-500:]}")
        figures = json.loads(line[len(RESULT) :])
        total, own, inclusive = summarize(out_path.read_text())
    finally:
        server.stop()
    lines = [
        "# Profile of our worker (py-spy)",
        "",
        f"{n:,} no-op jobs, one worker process at concurrency {concurrency}, sampled {rate} times a second "
        f"(py-spy pauses the process to sample, so this run is slower than the benchmark's): "
        f"{figures.get('per_s', 0):,.0f} jobs/s, {total:,} samples of the busy threads.",
        "",
        "## Own time (the frame that was running)",
        "",
        "| share | frame |",
        "|---|---|",
        *[f"| {count / total:.1%} | `{frame}` |" for frame, count in own],
        "",
        "## Inclusive time in the engine (`slack_backend`) and redis-py (`redis`)",
        "",
        "| share | frame |",
        "|---|---|",
        *[f"| {count / total:.1%} | `{frame}` |" for frame, count in inclusive],
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    # Enough for a few seconds of samples on a fast host (20,000 jobs took one second in round 14, and the samples
    # were then mostly the worker's start-up); about half a minute on a slow one.
    parser.add_argument("--n", type=int, default=100_000, help="jobs to process (default 100,000)")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    args = parser.parse_args()
    report = profile(args.n, args.concurrency, args.rate)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "profile.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
