"""`python -m bench.startup [--runs N] [--baseline-src DIR]`: how fast the light commands start.

`slack-backend version`, `jobs counts` and `check-config` (and the `--json` forms) run as users start them (the
installed `slack-backend` script, a fresh process), against a redis-server of its own on a free loopback port.
Reported per command: the median [min-max] wall time and the median CPU time (user + system, from the child's
rusage), which a loaded machine inflates much less than wall time. With `--baseline-src`, each run also starts the
same script with another source tree first on the path (say `git archive main src | tar -x -C /tmp/base`),
interleaved, so before and after share the machine's load. With `--instructions`, each command (and tree) also runs
once under valgrind's cachegrind and its instruction count is printed: a figure the host's speed does not move
(needs `valgrind`, the Debian package).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._server import BenchRedis
from bench.instructions import instructions_of_run

COMMANDS = (["version"], ["jobs", "counts"], ["jobs", "counts", "--json"], ["check-config"], ["check-config", "--json"])
SCRIPT = Path(sys.executable).with_name("slack-backend")


def time_one(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run the command once; return (wall s, CPU s). A non-zero exit is an error: a failing start is not fast."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([str(SCRIPT), *argv], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"slack-backend {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def instructions_of(argv: list[str], env: dict[str, str]) -> int:
    """The instructions one start of the command runs, as cachegrind counts them."""
    return instructions_of_run([str(SCRIPT), *argv], env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--runs", type=int, default=9, help="runs per command (default 9), interleaved")
    parser.add_argument("--baseline-src", type=Path, help="another source tree's src/ to compare against")
    parser.add_argument(
        "--instructions", action="store_true", help="also count each command's instructions once (valgrind)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        redis = BenchRedis(Path(tmp))
        redis.start()
        env = {
            **os.environ,
            "REDIS_URL": redis.url,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/startup.db",
            "SLACK_SIGNING_SECRET": "startup-bench-secret",
            "SLACK_BOT_TOKEN": "xoxb-startup-bench",
            "ANTHROPIC_API_KEY": "sk-ant-startup-bench",
        }
        # An install has its modules compiled; without their .pyc files (a shell that sets this, over an editable
        # install) every start compiles the package anew: ~14% more instructions for `jobs counts`.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        envs = {"": env}
        if args.baseline_src is not None:
            envs["baseline"] = {**env, "PYTHONPATH": str(args.baseline_src.resolve())}
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {
            (tree, " ".join(c)): [] for tree in envs for c in COMMANDS
        }
        try:
            for tree_env in envs.values():  # one unmeasured run each: the first start reads (and compiles) files
                for argv_ in COMMANDS:
                    time_one(argv_, tree_env)
            for _ in range(args.runs):
                for argv_ in COMMANDS:
                    for tree, tree_env in envs.items():
                        samples[(tree, " ".join(argv_))].append(time_one(argv_, tree_env))
            counts = {
                (tree, " ".join(argv_)): instructions_of(argv_, tree_env)
                for argv_ in (COMMANDS if args.instructions else ())
                for tree, tree_env in envs.items()
            }
        finally:
            redis.stop()
    counted = " instructions |" if counts else ""
    print(f"| command | wall s, median [min-max] of {args.runs} | CPU s (user + sys), median |{counted}")
    print("|---|---|---|" + ("---|" if counts else ""))
    for (tree, name), runs in samples.items():
        walls = [w for w, _ in runs]
        cpus = [c for _, c in runs]
        label = f"`slack-backend {name}`" + (f" ({tree})" if tree else "")
        wall = f"{statistics.median(walls):.3f} [{min(walls):.3f}-{max(walls):.3f}]"
        counted = f" {counts[(tree, name)]:,} |" if counts else ""
        print(f"| {label} | {wall} | {statistics.median(cpus):.3f} |{counted}")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
