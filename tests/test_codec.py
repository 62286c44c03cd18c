"""Job records decode exactly as the standard library reads them (orjson, with a fallback); data stays with json."""

from __future__ import annotations

import json
import math

import pytest

from slack_backend.queue.job import Job, loads_record

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
