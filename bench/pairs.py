"""Paired one-by-one enqueue: ours and a peer run back to back, alternating who goes first.

In a round every system runs once, so ours and a peer are measured a minute or two apart; a one-by-one add is a
ping-pong whose price on a shared VM is mostly wake-ups, and the host's speed drifts over such a gap (round 18 saw
BullMQ on Node.js's own rate move 5,262-9,923 a second between rounds). Here the two runs of a pair lie seconds
apart, each a fresh process doing only the one-by-one phase, and the first of a pair alternates, so a drift within
a pair falls on ours and the peer alike. Each pair gives one ratio, ours over the peer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import RunConfig
from bench.systems import SYSTEMS, System, run_system

# The peers ours is paired with: the one-by-one rows compare against these two.
PAIRED_PEERS = ("bullmq-node", "raw")


def _system(key: str) -> System:
    return next(s for s in SYSTEMS if s.key == key)


class _UnavailableError(Exception):
    """A driver of the pair gave no one-by-one figure (not installed, or its run failed): the reason."""


async def _one_by_one_rate(system: System, url: str, workdir: Path, tag: str, n: int) -> float:
    """One fresh driver process of `system` doing only the one-by-one phase: its adds a second."""
    cfg = RunConfig(tag=tag, n=n, phases=["enqueue_seq"], log_dir=str(workdir))
    result = await run_system(
        system, {"url": url, **cfg.to_json()}, timeout_s=120 + n / 100, log_path=workdir / f"pair-{system.key}.log"
    )
    phase = result.get("enqueue_seq") or {}
    if "unavailable" in result or "per_s" not in phase:
        why = result.get("unavailable") or phase.get("error") or "no one-by-one figure"
        raise _UnavailableError(f"{system.name}: {why}")
    return float(phase["per_s"])


async def run_pairs(
    url: str, workdir: Path, flush: Callable[[], None], *, n: int, pairs: int, round_no: int, tag: str = "pair"
) -> dict[str, Any]:
    """`pairs` pairs of one-by-one enqueue runs of `n` jobs, ours and each peer of PAIRED_PEERS (keyed by its --only
    name).

    Ours goes first in even pairs of even rounds and odd pairs of odd rounds, so over a run each side leads as
    often as the other. A peer whose driver cannot run (not installed) is reported as unavailable, with no ratio.
    `flush` empties Redis before each run; queues are named `<tag><round>-<pair>-seq`.
    """
    ours = _system("ours")
    out: dict[str, Any] = {"n": n}
    for key in PAIRED_PEERS:
        peer = _system(key)
        runs: list[dict[str, Any]] = []
        try:
            for i in range(pairs):
                ours_first = (i + round_no) % 2 == 0
                rates: dict[str, float] = {}
                for system in (ours, peer) if ours_first else (peer, ours):
                    flush()
                    rates[system.key] = await _one_by_one_rate(system, url, workdir, f"{tag}{round_no}-{i}", n)
                runs.append(
                    {
                        "first": "ours" if ours_first else peer.name,
                        "ours_per_s": rates["ours"],
                        "peer_per_s": rates[key],
                        "ratio": rates["ours"] / rates[key],
                    }
                )
        except _UnavailableError as exc:
            out[key] = {"unavailable": str(exc)}
        else:
            out[key] = {"pairs": runs}
    return out


def paired_ratios(section: dict[str, Any]) -> dict[str, list[float]]:
    """Every pair's ratio over the run, by the peer's --only name (a round with an error or an unavailable peer
    gives none)."""
    found: dict[str, list[float]] = {}
    for rnd in section.get("rounds", []):
        for name, entry in rnd.items():
            if isinstance(entry, dict) and "pairs" in entry:
                found.setdefault(name, []).extend(p["ratio"] for p in entry["pairs"])
    return found
