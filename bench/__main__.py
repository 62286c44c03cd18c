"""`python -m bench [--quick] [--json PATH] [--only NAME,...]`: run the benchmarks and print the targets."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from bench.render import chart, markdown
from bench.report import finish
from bench.runner import Plan, Run, known_names

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes and one round (about two minutes)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure to PATH as JSON")
    parser.add_argument("--only", default="", metavar="NAME,...", help=f"run only these: {', '.join(known_names())}")
    parser.add_argument("--rounds", type=int, help="rounds of the comparison (default 5, 1 with --quick)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where latest.md and latest.png go")
    args = parser.parse_args(argv)
    only = tuple(n.strip() for n in args.only.split(",") if n.strip())
    unknown = sorted(set(only) - set(known_names()))
    if unknown:
        parser.error(f"unknown --only name(s): {', '.join(unknown)}; known: {', '.join(known_names())}")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be >= 1")
    args.only = only
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    plan = Plan.build(quick=args.quick, rounds=args.rounds, only=args.only)
    out = asyncio.run(Run(plan).execute())
    found = finish(out)
    # Figures first: a chart that fails to draw must not cost the run its numbers.
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=str))
    report = markdown(out, found)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "latest.md").write_text(report)
    try:
        chart(out, args.results / "latest.png")
    except ImportError:
        # matplotlib is the `bench` extra, not a dev dependency: the figures stand without the picture.
        print("no chart: matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr)
    print(report)
    print("\n".join(t.line() for t in found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
