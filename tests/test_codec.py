"""Job records decode exactly as the standard library reads them (orjson, with a fallback); data stays with json,
and is written as json.dumps writes it."""

from __future__ import annotations

import json
import math
import sys

import pytest

from slack_backend.queue import job as job_module
from slack_backend.queue.job import Job, dumps_compact, loads_record

RECORDS = [
    '{"id":"1","created_ms":1733030400000,"opts":{"attempts":4},"failed_reason":"caf\\u00e9 \\ud83d\\ude00"}',
    '{"id":"2","lone":"\\ud800"}',  # a lone surrogate escape: orjson refuses, json reads it
    '{"id":"3","dup":1,"dup":2}',
    '{"id":"4","cost":1.5e+29}',  # cjson writes large numbers in this form, never as 20-digit integers
]


@pytest.mark.parametrize("text", RECORDS)
def test_records_read_as_the_standard_library_reads_them(text: str) -> None:
    """loads_record gives json.loads's value, including for what orjson alone refuses."""
    assert loads_record(text) == json.loads(text)


def test_nan_in_a_record_reads_as_the_standard_library_reads_it() -> None:
    """NaN decodes to a float NaN, as json.loads does, not to an error."""
    assert math.isnan(loads_record('{"x": NaN}')["x"])


def test_data_keeps_integers_past_64_bits() -> None:
    """Job data (a client's JSON) keeps an integer past 64 bits exact; orjson would have made it a float."""
    big = 123456789012345678901234567890
    job = Job.from_record('{"id": "7", "name": "draft"}', json.dumps({"big": big}))
    assert job.data == {"big": big}


def test_corrupt_data_keeps_the_standard_librarys_message() -> None:
    """A job whose data is not JSON carries json's own error text in data_error."""
    job = Job.from_record('{"id": "7", "name": "draft"}', '{"broken"')
    with pytest.raises(json.JSONDecodeError) as caught:
        json.loads('{"broken"')
    assert job.data_error == f"job data is not valid JSON: {caught.value}"
    with pytest.raises(json.JSONDecodeError, match="Expecting value"):
        loads_record("not json")


VALUES = [
    None,
    "café \ud83d\ude00 \u2028",
    {"a": [1, 2.5, True, None], "b": {"c": "d"}, 1: "int key", None: "none key"},
    [123456789012345678901234567890, -0.0, 1e16, 1e-7],
    (1, "tuple"),
]


@pytest.mark.parametrize("value", VALUES)
def test_data_and_results_encode_as_json_dumps_does(value: object) -> None:
    """Job data and results are written as json.dumps writes them with the engine's arguments, one encoder kept."""
    assert dumps_compact(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def test_the_kept_encoder_refuses_what_json_dumps_refuses_and_recovers() -> None:
    """NaN, objects JSON has no form for and circular values raise json's errors; the next value still encodes."""
    circular: list[object] = []
    circular.append(circular)
    for bad, error in ((math.nan, ValueError), ({1, 2}, TypeError), (circular, ValueError)):
        with pytest.raises(error) as ours:
            dumps_compact({"x": bad})
        with pytest.raises(error) as theirs:
            json.dumps({"x": bad}, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        assert str(ours.value) == str(theirs.value)
        assert dumps_compact({"x": [1]}) == '{"x":[1]}'


def test_the_kept_encoder_is_the_c_one_and_nesting_past_the_limit_fails_as_in_json_dumps() -> None:
    """On CPython the encoder kept is the C one, made once; a value nested past the recursion limit raises
    RecursionError as json.dumps does, and a value that holds itself deep inside says so."""
    assert dumps_compact is not job_module._standard_compact
    deep: list[object] = []
    for _ in range(sys.getrecursionlimit() + 10):
        deep = [deep]
    with pytest.raises(RecursionError):
        dumps_compact(deep)
    with pytest.raises(RecursionError):
        json.dumps(deep, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    inner: dict[str, object] = {}
    inner["self"] = [1, {"again": inner}]
    with pytest.raises(ValueError, match="Circular reference detected"):
        dumps_compact({"a": [{"b": inner}]})
