"""Write the results: a Markdown report (bench/results/latest.md) and a chart (latest.png, matplotlib's Agg)."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

from bench.report import Target

# Columns of the main table: (header, figure name, decimals).
COLUMNS = (
    ("enqueue one-by-one /s", "enqueue_seq_per_s", 0),
    ("enqueue fast /s", "enqueue_fast_per_s", 0),
    ("process /s (c10)", "process_c10_per_s", 0),
    ("p50 ms", "latency_p50_ms", 2),
    ("p99 ms", "latency_p99_ms", 2),
    ("p99 ms after 1st s", "latency_p99_after_1s_ms", 2),
    ("worker max RSS MB", "process_c10_worker_max_rss_mb", 0),
    ("Redis cmds/job enq", "enqueue_seq_cmds_per_job", 1),
    ("Redis cmds/job proc", "process_c10_cmds_per_job", 1),
    ("script calls/job proc", "process_c10_scripts_per_job", 2),
    ("Redis CPU ms/job proc", "process_c10_redis_cpu_ms_per_job", 3),
    ("worker CPU ms/job", "process_c10_worker_cpu_ms_per_job", 3),
)


def cell(summ: dict[str, dict[str, float]], name: str, decimals: int) -> str:
    """`median [min-max]` (just the median for one round), or a dash."""
    data = summ.get(name)
    if not data or math.isnan(data["median"]):
        return "-"
    fmt = f"{{:,.{decimals}f}}"
    if data["n"] > 1:
        return f"{fmt.format(data['median'])} [{fmt.format(data['min'])}-{fmt.format(data['max'])}]"
    return fmt.format(data["median"])


def markdown(out: dict[str, Any], found: list[Target]) -> str:
    meta, plan = out["meta"], out["meta"]["plan"]
    load = "/".join(f"{x:.2f}" for x in meta["loadavg_start"])
    lines = [
        "# Benchmark results",
        "",
        f"Run {meta['started_utc']} UTC, {'quick' if plan['quick'] else 'full'}: {plan['rounds']} round(s), "
        f"n = {plan['n']:,} jobs per enqueue/process figure, latency {plan['latency_n']:,} jobs at "
        f"{plan['rate']:.0f}/s; Redis {meta.get('redis', '?')}, Python {meta['python']}, {meta['cpus']} CPUs, "
        f"load average {load} at start; took {meta.get('duration_s', 0):.0f} s. Figures are medians "
        "[min-max] over rounds; ratios are ours over the peer from the same round. How to read them: "
        "[docs/performance.md](../../docs/performance.md).",
        "",
        "## Targets",
        "",
        "| target | figure | result |",
        "|---|---|---|",
        *[f"| {t.name} | {t.figure} | {t.status} |" for t in found],
        "",
        "## Engine and peers",
        "",
        "| system | version | " + " | ".join(c[0] for c in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for name, entry in out["systems"].items():
        if "unavailable" in entry:
            lines.append(f"| {name} | unavailable: {entry['unavailable']} |" + " |" * len(COLUMNS))
            continue
        cells = " | ".join(cell(entry["summary"], c[1], c[2]) for c in COLUMNS)
        lines.append(f"| {name} | {entry.get('version', '')} | {cells} |")
    lines += ["", "Enqueue fast method:", ""]
    lines += [f"- {n}: {e['fast_method']}" for n, e in out["systems"].items() if e.get("fast_method")]
    errors = [(n, err) for n, e in out["systems"].items() for err in e.get("errors", [])]
    if errors:
        lines += ["", "Failed measurements:", "", *[f"- {n}: {err}" for n, err in errors]]
    lines += _ours_table(out)
    lines += _ratio_table(out)
    lines += _sections(out)
    return "\n".join(lines) + "\n"


def _ours_table(out: dict[str, Any]) -> list[str]:
    ours = out["systems"].get("ours")
    if not ours or "summary" not in ours:
        return []
    lines = [
        "",
        "## Our engine by concurrency (one worker process, keep 100 completed)",
        "",
        "| run | process /s | Redis cmds/job | script calls/job | Redis CPU ms/job | worker CPU ms/job "
        "| worker max RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in ("c1", "c10", "c50", "c10_info_logs"):
        fields = ("per_s", "cmds_per_job", "scripts_per_job", "redis_cpu_ms_per_job", "worker_cpu_ms_per_job")
        decimals = (0, 1, 2, 3, 3)
        cells = [cell(ours["summary"], f"process_{label}_{f}", d) for f, d in zip(fields, decimals, strict=True)]
        cells.append(cell(ours["summary"], f"process_{label}_worker_max_rss_mb", 0))
        title = "concurrency 10, INFO logs (production)" if label == "c10_info_logs" else f"concurrency {label[1:]}"
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def _ratio_table(out: dict[str, Any]) -> list[str]:
    rats = out.get("ratios", {})
    if not rats:
        return []
    lines = ["", "## Ratios, ours / other (same round)", "", "| ratio | median | min | max |", "|---|---|---|---|"]
    for key, data in sorted(rats.items()):
        lines.append(f"| {key} | {data['median']:.2f} | {data['min']:.2f} | {data['max']:.2f} |")
    return lines


def _sections(out: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    lim = out.get("limiter")
    if lim:
        lines += ["", "## Limiter (3 worker processes, 10 starts per 1 s window)", ""]
        if "error" in lim:
            lines.append(f"Not measured: {lim['error']}")
        else:
            lines += [
                f"- {lim['jobs']} starts over {lim['span_s']:.1f} s, per worker {lim['per_worker']}",
                f"- starts in each second: {lim['starts_per_second']}",
                f"- most in any sliding 1 s: {lim['max_in_sliding_window_engine_clock']} by the engine's clock "
                f"(Redis TIME at start), {lim['max_in_sliding_window_worker_clock']} by the workers' clocks",
                f"- mean rate {lim['mean_per_s']:.2f}/s",
            ]
    ing = out.get("ingress", {}).get("rounds", [])
    if ing:
        lines += [
            "",
            "## Ingress (signed slash commands, open loop)",
            "",
            "| round | sent /s | p50 ms | p99 ms | max ms | errors | server CPU ms/req | client CPU ms/req "
            "| client max lag ms |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in ing:
            if "error" in r:
                lines.append(f"| {r['round'] + 1} | not measured: {r['error']} ||||||||")
                continue
            lines.append(
                f"| {r['round'] + 1} | {r['achieved_rate']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                f"{r['max_ms']:.1f} | {r['errors']} | {r['server_cpu_ms_per_request']:.2f} | "
                f"{r['client_cpu_ms_per_request']:.2f} | {r['client_max_lag_ms']:.1f} |"
            )
    mem = out.get("memory")
    if mem:
        lines += ["", "## Redis memory while jobs flow through (one worker, concurrency 50, keep 100)", ""]
        if "error" in mem:
            lines.append(f"Not measured: {mem['error']}")
        else:
            mbs = [round(used / 2**20, 2) for _, used, _ in mem["samples"]]
            step = max(1, len(mbs) // 20)
            lines += [
                f"- {mem['jobs']:,} jobs at {mem['worker_per_s'] or 0:,.0f}/s; {len(mbs)} samples every 0.5 s",
                f"- last half: {mem['last_half_mb'][0]}-{mem['last_half_mb'][1]} MB, max/min "
                f"{mem['last_half_max_over_min']:.3f} ({'flat' if mem['flat'] else 'not flat'})",
                f"- used_memory MB, one sample in {step}: {mbs[::step]}",
            ]
    groups = out.get("groups", {}).get("rounds", [])
    if groups:
        lines += [
            "",
            "## Group cost (fetch of one job)",
            "",
            "| round | 10,000 groups mean / p50 / p99 us | 1 group mean / p50 / p99 us | ratio mean | ratio p50 |",
            "|---|---|---|---|---|",
        ]
        for g in groups:
            if "error" in g:
                lines.append(f"| {g['round'] + 1} | not measured: {g['error']} ||||")
                continue
            lines.append(
                f"| {g['round'] + 1} | {g['many_mean_us']:.0f} / {g['many_p50_us']:.0f} / {g['many_p99_us']:.0f} | "
                f"{g['one_mean_us']:.0f} / {g['one_p50_us']:.0f} / {g['one_p99_us']:.0f} | {g['ratio_mean']:.2f} | "
                f"{g['ratio_p50']:.2f} |"
            )
    return lines + pairs_table(out.get("pairs", {}).get("rounds", []))


def pairs_table(rounds: list[dict[str, Any]]) -> list[str]:
    """The paired runs, one line a pair."""
    if not rounds:
        return []
    lines = [
        "",
        "## One-by-one enqueue, paired runs (ours and the peer seconds apart, the first alternating)",
        "",
        "| round | peer | first | ours /s | peer /s | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in rounds:
        if "error" in r:
            lines.append(f"| {r['round'] + 1} | not measured: {r['error']} |||||")
            continue
        for key, entry in r.items():
            if not isinstance(entry, dict):
                continue
            if "unavailable" in entry:
                lines.append(f"| {r['round'] + 1} | {key} | unavailable: {entry['unavailable']} ||||")
                continue
            for p in entry["pairs"]:
                lines.append(
                    f"| {r['round'] + 1} | {key} | {p['first']} | {p['ours_per_s']:,.0f} | {p['peer_per_s']:,.0f} | "
                    f"{p['ratio']:.2f} |"
                )
    return lines


def chart(out: dict[str, Any], path: Path) -> None:
    """Four panels: process/s, enqueue/s, latency and Redis memory, with min-max bars where there are rounds."""
    # Imported by name: matplotlib is the optional `bench` extra, so neither the run nor mypy may need it installed.
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")

    systems = {n: e for n, e in out["systems"].items() if e.get("summary")}
    names = list(systems)
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    fig.suptitle(f"slack-backend benchmark ({out['meta']['started_utc']} UTC, {out['meta']['plan']['rounds']} rounds)")

    def bars(ax: Any, figure: str, offset: float, width: float, label: str) -> None:
        medians, lows, highs = [], [], []
        for n in names:
            data = systems[n]["summary"].get(figure)
            m = data["median"] if data else 0.0
            medians.append(m)
            lows.append(m - data["min"] if data else 0.0)
            highs.append(data["max"] - m if data else 0.0)
        xs = [i + offset for i in range(len(names))]
        if offset == 0:
            # One series: ours stands out in red.
            colors = ["#d62728" if n == "ours" else "#1f77b4" for n in names]
            ax.bar(xs, medians, width, yerr=[lows, highs], capsize=3, label=label, color=colors)
        else:
            ax.bar(xs, medians, width, yerr=[lows, highs], capsize=3, label=label)

    ax = axes[0][0]
    bars(ax, "process_c10_per_s", 0, 0.7, "process/s")
    ax.set_title("no-op jobs processed per second (one worker process, concurrency 10)")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax = axes[0][1]
    bars(ax, "enqueue_seq_per_s", -0.2, 0.4, "one by one")
    bars(ax, "enqueue_fast_per_s", 0.2, 0.4, "fast method")
    ax.set_title("jobs enqueued per second")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.legend()
    ax = axes[1][0]
    bars(ax, "latency_p50_ms", -0.2, 0.4, "p50")
    bars(ax, "latency_p99_ms", 0.2, 0.4, "p99")
    ax.set_yscale("log")
    ax.set_title(f"enqueue-to-start latency, ms (log), {out['meta']['plan']['rate']:.0f} jobs/s")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.legend()
    ax = axes[1][1]
    mem = out.get("memory")
    if mem and "samples" in mem:
        ax.plot([s[0] for s in mem["samples"]], [s[1] / 2**20 for s in mem["samples"]])
        ax.set_ylim(bottom=0)
        ax.set_title(f"Redis used_memory (MB) while {mem['jobs']:,} jobs flow through")
        ax.set_xlabel("seconds")
    else:
        ax.set_title("Redis memory: not measured")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
