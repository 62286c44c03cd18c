"""From raw rounds to figures: per-system medians, same-round ratios of ours to each peer, and the targets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from bench.pairs import paired_ratios
from bench.stats import summary

# Per-job figures of each process measurement, copied into the flat figure names.
_PROCESS_FIELDS = (
    "per_s",
    "cmds_per_job",
    "scripts_per_job",
    "redis_cpu_ms_per_job",
    "worker_cpu_ms_per_job",
    "worker_max_rss_mb",
)


def figures(result: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
    """One driver run as flat figure names (enqueue_seq_per_s, process_c10_per_s, latency_p99_ms ...) and errors."""
    out: dict[str, float] = {}
    errors: list[str] = []
    for phase in ("enqueue_seq", "enqueue_fast"):
        data = result.get(phase)
        if isinstance(data, dict) and "error" not in data:
            for key in ("per_s", "cmds_per_job", "scripts_per_job", "redis_cpu_ms_per_job"):
                out[f"{phase}_{key}"] = float(data[key])
        elif isinstance(data, dict):
            errors.append(f"{phase}: {data['error']}")
    for label, data in (result.get("process") or {}).items():
        if "error" in data:
            errors.append(f"process {label}: {data['error']}")
            continue
        for key in _PROCESS_FIELDS:
            if data.get(key) is not None:
                out[f"process_{label}_{key}"] = float(data[key])
    lat = result.get("latency")
    if isinstance(lat, dict) and "error" not in lat:
        for key in ("p50_ms", "p99_ms", "p99_after_1s_ms", "max_ms"):
            if lat.get(key) is not None:
                out[f"latency_{key}"] = float(lat[key])
    elif isinstance(lat, dict):
        errors.append(f"latency: {lat['error']}")
    return {k: v for k, v in out.items() if not math.isnan(v)}, errors


def summarize(out: dict[str, Any]) -> None:
    """Add `summary` (median/min/max per figure), `version`, `errors` and `unavailable` to each system."""
    for entry in out["systems"].values():
        per_figure: dict[str, list[float]] = {}
        errors: list[str] = []
        unavailable = [r["unavailable"] for r in entry["rounds"] if "unavailable" in r]
        for result in entry["rounds"]:
            if "unavailable" in result:
                continue
            entry["version"] = result.get("version", "")
            entry["fast_method"] = result.get("fast_method", "")
            figs, errs = figures(result)
            errors += [f"round {result['round'] + 1}: {e}" for e in errs]
            for name, value in figs.items():
                per_figure.setdefault(name, []).append(value)
        entry["summary"] = {name: summary(values) for name, values in per_figure.items()}
        entry["errors"] = errors
        if unavailable and len(unavailable) == len(entry["rounds"]):
            entry["unavailable"] = unavailable[0]


def _round_figures(out: dict[str, Any], name: str) -> dict[int, dict[str, float]]:
    entry = out["systems"].get(name)
    if entry is None:
        return {}
    return {r["round"]: figures(r)[0] for r in entry["rounds"] if "unavailable" not in r}


def ratios(out: dict[str, Any]) -> dict[str, Any]:
    """Ours over a peer, figure by figure, from the same round; then the median and range of those ratios."""
    ours = _round_figures(out, "ours")
    peers = {n: _round_figures(out, n) for n, e in out["systems"].items() if e["peer"]}
    raw = _round_figures(out, "raw-redis-py")
    found: dict[str, Any] = {}

    def pair(label: str, other: dict[int, dict[str, float]], ours_fig: str, other_fig: str) -> None:
        values = [
            ours[r][ours_fig] / other[r][other_fig]
            for r in ours
            if r in other and ours_fig in ours[r] and other.get(r, {}).get(other_fig)
        ]
        if values:
            found[label] = {"rounds": values, **summary(values)}

    best_values: list[float] = []
    best_names: list[str] = []
    for r, figs in ours.items():
        candidates = {n: p[r]["process_c10_per_s"] for n, p in peers.items() if "process_c10_per_s" in p.get(r, {})}
        if candidates and "process_c10_per_s" in figs:
            best = max(candidates, key=lambda n: candidates[n])
            best_values.append(figs["process_c10_per_s"] / candidates[best])
            best_names.append(best)
    if best_values:
        found["process_vs_best_peer"] = {"rounds": best_values, "best_peer": best_names, **summary(best_values)}
    pair("process_vs_raw", raw, "process_c10_per_s", "process_c10_per_s")
    pair("enqueue_seq_vs_raw", raw, "enqueue_seq_per_s", "enqueue_seq_per_s")
    pair("latency_p50_vs_raw", raw, "latency_p50_ms", "latency_p50_ms")
    pair("latency_p99_vs_raw", raw, "latency_p99_ms", "latency_p99_ms")
    for name, peer in peers.items():
        pair(f"process_vs_{name}", peer, "process_c10_per_s", "process_c10_per_s")
        pair(f"enqueue_fast_vs_{name}", peer, "enqueue_fast_per_s", "enqueue_fast_per_s")
        pair(f"enqueue_seq_vs_{name}", peer, "enqueue_seq_per_s", "enqueue_seq_per_s")
    # The paired runs' ratios, one a pair (bench/pairs.py): ours and the peer seconds apart, not a round apart.
    for key, values in paired_ratios(out.get("pairs", {})).items():
        if values:
            found[f"enqueue_seq_paired_vs_{key}"] = {"rounds": values, **summary(values)}
    return found


@dataclass(frozen=True)
class Target:
    """One target line: what it asks, the figure that answers it, and PASS / FAIL / NOT MEASURED."""

    name: str
    figure: str
    status: str

    def line(self) -> str:
        return f"{self.status:<12} {self.name}: {self.figure}"


def _ratio_target(rats: dict[str, Any], key: str, name: str, at_least: float | None, at_most: float | None) -> Target:
    data = rats.get(key)
    if data is None:
        return Target(name, "not measured (a side of the ratio has no figure)", "NOT MEASURED")
    value = data["median"]
    ok = (at_least is None or value >= at_least) and (at_most is None or value <= at_most)
    span = f" [{data['min']:.2f}-{data['max']:.2f}]" if data["n"] > 1 else ""
    extra = f", best peer {'/'.join(sorted(set(data['best_peer'])))}" if "best_peer" in data else ""
    return Target(name, f"{value:.2f}x{span}{extra}", "PASS" if ok else "FAIL")


def targets(out: dict[str, Any]) -> list[Target]:
    """Every target of the issue, judged on medians over rounds (ratios from the same round)."""
    rats = out.get("ratios", {})
    found = [
        _ratio_target(rats, "process_vs_best_peer", "process/s (c10) >= 2x best peer", 2.0, None),
        _ratio_target(rats, "process_vs_raw", "process/s (c10) >= 0.4x raw redis-py", 0.4, None),
        _ratio_target(rats, "enqueue_fast_vs_bullmq", "bulk enqueue >= 1.5x bullmq addBulk (Python)", 1.5, None),
        _ratio_target(rats, "enqueue_fast_vs_bullmq-node", "bulk enqueue >= 1.5x bullmq addBulk (Node.js)", 1.5, None),
        _ratio_target(rats, "enqueue_seq_vs_raw", "one-by-one enqueue >= 0.8x raw redis-py", 0.8, None),
        _ratio_target(
            rats, "enqueue_seq_paired_vs_raw", "one-by-one enqueue >= 0.8x raw redis-py (paired runs)", 0.8, None
        ),
        _ratio_target(
            rats,
            "enqueue_seq_paired_vs_bullmq-node",
            "one-by-one enqueue >= 1.2x BullMQ on Node.js (paired runs)",
            1.2,
            None,
        ),
        _ratio_target(rats, "latency_p50_vs_raw", "latency p50 within 2x raw redis-py", None, 2.0),
        _ratio_target(rats, "latency_p99_vs_raw", "latency p99 within 2x raw redis-py", None, 2.0),
    ]
    ours = out["systems"].get("ours", {}).get("summary", {})
    cmds = ours.get("process_c10_cmds_per_job")
    if cmds:
        scripts = ours.get("process_c10_scripts_per_job", {}).get("median", math.nan)
        figure = f"{cmds['median']:.1f} commands/job counting those inside Lua ({scripts:.2f} script calls/job)"
        found.append(Target("Redis cmds per processed job <= 3", figure, "PASS" if cmds["median"] <= 3 else "FAIL"))
    else:
        found.append(Target("Redis cmds per processed job <= 3", "not measured", "NOT MEASURED"))
    found += _limiter_targets(out.get("limiter"))
    found.append(_ingress_target(out.get("ingress", {})))
    found.append(_memory_target(out.get("memory")))
    found.append(_groups_target(out.get("groups", {})))
    return found


def _limiter_targets(lim: dict[str, Any] | None) -> list[Target]:
    names = (
        "limiter never > 10 starts per sliding 1 s (engine clock)",
        "limiter never > 10 starts per sliding 1 s (worker clock)",
        "limiter mean >= 9.9 starts/s",
    )
    if not lim or "error" in lim:
        why = f"not measured: {lim['error']}" if lim else "not measured (not selected)"
        return [Target(n, why, "NOT MEASURED") for n in names]
    engine, worker, mean = (
        lim["max_in_sliding_window_engine_clock"],
        lim["max_in_sliding_window_worker_clock"],
        lim["mean_per_s"],
    )
    return [
        Target(names[0], f"max {engine} in any 1 s window", "PASS" if engine <= lim["limit"] else "FAIL"),
        Target(names[1], f"max {worker} in any 1 s window", "PASS" if worker <= lim["limit"] else "FAIL"),
        Target(names[2], f"{mean:.2f}/s over {lim['jobs']} starts", "PASS" if mean >= 9.9 else "FAIL"),
    ]


def _ingress_target(ing: dict[str, Any]) -> Target:
    name = "ingress p99 <= 20 ms at 300/s with 0 errors"
    rounds = [r for r in ing.get("rounds", []) if "error" not in r]
    if not rounds:
        errs = [r["error"] for r in ing.get("rounds", [])]
        return Target(name, f"not measured{': ' + errs[0] if errs else ''}", "NOT MEASURED")
    p99 = summary([r["p99_ms"] for r in rounds])
    errors = sum(int(r["errors"]) for r in rounds)
    achieved = summary([r["achieved_rate"] for r in rounds])["median"]
    ok = p99["median"] <= 20 and errors == 0
    spread = f"[{p99['min']:.1f}-{p99['max']:.1f}]"
    figure = f"p99 {p99['median']:.1f} ms {spread}, {errors} errors, {achieved:.0f} req/s sent"
    return Target(name, figure, "PASS" if ok else "FAIL")


def _memory_target(mem: dict[str, Any] | None) -> Target:
    name = "Redis memory flat within 10% (last half, max/min)"
    if not mem or "error" in mem:
        return Target(name, f"not measured{': ' + mem['error'] if mem else ''}", "NOT MEASURED")
    lo, hi = mem["last_half_mb"]
    figure = f"{mem['last_half_max_over_min']:.3f} ({lo}-{hi} MB over {mem['jobs']:,} jobs)"
    return Target(name, figure, "PASS" if mem["flat"] else "FAIL")


def _groups_target(groups: dict[str, Any]) -> Target:
    name = "fetch with 10,000 groups <= 1.5x one group"
    rounds = [r for r in groups.get("rounds", []) if "error" not in r]
    if not rounds:
        errs = [r["error"] for r in groups.get("rounds", [])]
        return Target(name, f"not measured{': ' + errs[0] if errs else ''}", "NOT MEASURED")
    mean = summary([r["ratio_mean"] for r in rounds])
    p50 = summary([r["ratio_p50"] for r in rounds])["median"]
    figure = f"{mean['median']:.2f}x mean per fetch [{mean['min']:.2f}-{mean['max']:.2f}] ({p50:.2f}x median)"
    return Target(name, figure, "PASS" if mean["median"] <= 1.5 else "FAIL")


def finish(out: dict[str, Any]) -> list[Target]:
    """Summaries, ratios and targets, all stored in `out` (so --json has them) and the targets returned."""
    summarize(out)
    out["ratios"] = ratios(out)
    found = targets(out)
    out["targets"] = [asdict(t) for t in found]
    return found
