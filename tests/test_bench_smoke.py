"""Smoke test of the benchmark suite: its smallest pieces run against the test Redis; speed is never asserted."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench import client_instructions, ingress, overhead, pairs
from bench.drivers import ours
from bench.harness import ProcessSpec, RunConfig, run_driver
from bench.raw_http import RawHttpConnection, RawHttpError, build_request
from bench.render import markdown, pairs_table
from bench.report import finish, ratios, targets
from bench.stats import max_in_window, per_second

N = 200


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value) and value > 0


async def test_our_enqueue_and_process_give_positive_figures_in_the_json_shape(redis_url: str, prefix: str) -> None:
    """Our driver enqueues (one by one and in bulk) and processes 200 jobs, and reports positive figures."""
    phases = ["enqueue_seq", "enqueue_fast", "process"]
    cfg = RunConfig(tag=prefix, n=N, process=[ProcessSpec("c10", 10)], phases=phases)
    result = await run_driver(ours.DRIVER, redis_url, cfg)
    json.dumps(result)  # the driver's line must be JSON
    assert result["system"] == "ours"
    for phase in ("enqueue_seq", "enqueue_fast"):
        assert "error" not in result[phase], result[phase]
        for key in ("per_s", "cmds_per_job", "redis_cpu_ms_per_job"):
            assert _positive(result[phase][key]), (phase, key, result[phase][key])
    process = result["process"]["c10"]
    assert "error" not in process, process
    assert process["finished"] == N
    for key in ("per_s", "cmds_per_job", "scripts_per_job", "worker_cpu_ms_per_job", "worker_max_rss_mb"):
        assert _positive(process[key]), (key, process[key])


async def test_what_the_client_instruction_counts_measure_does_its_work(redis_url: str) -> None:
    """`bench.client_instructions` counts adds that are made and token lookups that answer what was saved."""
    assert await client_instructions.adds(redis_url, 5) == 5
    assert await client_instructions.token_lookups(3) == 3


async def test_report_turns_a_run_into_targets_and_markdown(redis_url: str, prefix: str) -> None:
    """The report judges what was measured and says NOT MEASURED for what was not (no peers, no sections)."""
    cfg = RunConfig(tag=prefix, n=N, process=[ProcessSpec("c10", 10)], phases=["enqueue_seq", "process"])
    result = {**await run_driver(ours.DRIVER, redis_url, cfg), "round": 0}
    out: dict[str, Any] = {
        "meta": {
            "started_utc": "now",
            "plan": {"quick": True, "rounds": 1, "n": N, "latency_n": 0, "rate": 200.0},
            "python": "3",
            "cpus": 2,
            "loadavg_start": [0.0, 0.0, 0.0],
        },
        "systems": {"ours": {"key": "ours", "peer": False, "rounds": [result]}},
        "groups": {"rounds": []},
        "ingress": {"rounds": []},
    }
    found = finish(out)
    json.dumps(out)
    statuses = {t.name: t.status for t in found}
    assert statuses["Redis cmds per processed job <= 3"] in ("PASS", "FAIL")
    assert statuses["process/s (c10) >= 2x best peer"] == "NOT MEASURED"
    assert out["systems"]["ours"]["summary"]["process_c10_per_s"]["median"] > 0
    assert "| ours |" in markdown(out, found)


def test_sliding_window_and_per_second_counts() -> None:
    """The limiter's figures: most events in any half-open 1 s window, and counts per whole second."""
    times = [0.0, 0.1, 0.5, 0.99, 1.0, 1.5, 2.2]
    assert max_in_window(times, 1.0) == 4
    assert per_second(times) == [4, 2, 1]


def test_the_cli_runs_the_bench_entry_point() -> None:
    """`slack-backend bench --help` reaches `python -m bench` and its options."""
    done = subprocess.run(
        [sys.executable, "-m", "slack_backend.cli", "bench", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout
    assert "--only" in done.stdout


@pytest.mark.parametrize("oauth", [False, True], ids=["one-bot-token", "oauth"])
async def test_overhead_bench_times_every_draft_through_the_real_service(tmp_path: Path, oauth: bool) -> None:
    """bench.overhead drives `slack-backend run` with the fakes, with one bot token or (--oauth) the installation
    store's tokens: every request gets a draft, and its segments add up."""
    result = await overhead.measure(rate=5, seconds=1, model_ms=50, log_path=tmp_path / "service.log", oauth=oauth)
    rows = result["rows"]
    assert len(rows) == 5
    assert [r for r in rows if "error" in r] == []
    for row in rows:
        parts = sum(row[name] for name in overhead.SEGMENTS)
        # Each segment is a difference of two clocks read at ms (Redis) or better: they add up to the overhead
        # within the rounding of the two Redis timestamps.
        assert row["overhead_ms"] >= 0
        # What is subtracted is the model's own time as the fake measured it: never less than its fixed delay.
        assert row["model_ms"] >= 50, row
        assert abs(parts - row["overhead_ms"]) <= 2.5, row
    assert "overhead" in overhead.summary(result)


async def test_paired_runs_give_one_ratio_a_pair_or_say_why_a_peer_is_missing(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """bench.pairs runs ours and raw redis-py (and BullMQ on Node.js where it is installed) one after the other; each
    pair's ratio is ours over the peer, and the report makes paired targets of them."""
    section = await pairs.run_pairs(redis_url, tmp_path, lambda: None, n=N, pairs=2, round_no=0, tag=prefix)
    raw = section["raw"]["pairs"]
    assert [p["first"] for p in raw] == ["ours", "raw-redis-py"]
    for p in raw:
        assert _positive(p["ours_per_s"]), p
        assert _positive(p["peer_per_s"]), p
        assert p["ratio"] == pytest.approx(p["ours_per_s"] / p["peer_per_s"])
    node = section["bullmq-node"]
    assert ("pairs" in node and len(node["pairs"]) == 2) or node["unavailable"], node
    out: dict[str, Any] = {"systems": {}, "pairs": {"rounds": [{**section, "round": 0}]}}
    found = ratios(out)["enqueue_seq_paired_vs_raw"]
    assert found["rounds"] == [p["ratio"] for p in raw]
    out["ratios"] = ratios(out)
    statuses = {t.name: t.status for t in targets(out)}
    expected = "PASS" if found["median"] >= 0.8 else "FAIL"
    assert statuses["one-by-one enqueue >= 0.8x raw redis-py (paired runs)"] == expected
    assert "| 1 | raw | ours |" in "\n".join(pairs_table(out["pairs"]["rounds"]))


async def test_ingress_bench_sends_every_request_through_its_senders(redis_url: str, tmp_path: Path) -> None:
    """bench.ingress paces signed slash commands to the real app through its bounded senders: every scheduled
    request is sent, acknowledged and queued, and each latency is counted."""
    result = await ingress.run_ingress(redis_url, tmp_path, rate=50.0, duration_s=1.0)
    assert result["requests"] == 50
    assert result["errors"] == 0, result["error_kinds"]
    assert result["jobs_queued"] >= 50 + ingress.WARMUP
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]


async def _serve_replies(replies: list[bytes]) -> tuple[asyncio.Server, int, list[int]]:
    """A loopback server that answers each request with the next reply; it counts the connections it accepts."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        while replies:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            reply = replies.pop(0)
            writer.write(reply)
            await writer.drain()
            if b"Connection: close" in reply:
                break
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], accepted


async def test_raw_http_client_reads_replies_by_length_and_reopens_a_closed_connection() -> None:
    """The ingress bench's client reads a reply by its Content-Length, keeps the connection, opens a new one after
    the server's "Connection: close", and names a chunked reply as an error instead of misreading it."""
    replies = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye",
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 6\r\n\r\nreason",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ]
    server, port, accepted = await _serve_replies(replies)
    connection = RawHttpConnection("127.0.0.1", port)
    request = build_request(f"127.0.0.1:{port}", "/x", b"body", {"Content-Type": "text/plain"})
    try:
        assert await connection.exchange(request) == (200, b"ok")
        assert await connection.exchange(request) == (200, b"bye")
        assert await connection.exchange(request) == (400, b"reason")
        assert len(accepted) == 2
        with pytest.raises(RawHttpError, match="Transfer-Encoding"):
            await connection.exchange(request)
    finally:
        await connection.close()
        server.close()
        await server.wait_closed()
