"""Bounded JSON (contract.jsonsafe) and the request-body parser built on it."""

from __future__ import annotations

import json
import time

import pytest

from vizdesk.contract.jsonsafe import (
    MAX_JSON_DEPTH,
    JsonTooDeep,
    check_depth,
    json_depth,
    loads_bounded,
)
from vizdesk.core.validate import ValidationError, parse_json_body


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("", 0),
        ("1", 0),
        ('"[[[["', 0),  # brackets inside a string do not count
        ("[]", 1),
        ("[[], {}]", 2),
        ('{"a": [1, {"b": "]]]"}]}', 3),
        ('["\\"[[[", "x"]', 1),  # an escaped quote does not end the string
        ('["\\\\", [["x"]]]', 3),  # an escaped backslash does
        ("[" * 60000, 60000),
        ('"unterminated [[[[', 0),
    ],
)
def test_json_depth(text: str, depth: int) -> None:
    assert json_depth(text) == depth


def test_loads_bounded_accepts_up_to_the_limit() -> None:
    doc = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert loads_bounded(doc) == json.loads(doc)
    assert loads_bounded(b'{"a": ["x"]}') == {"a": ["x"]}
    assert loads_bounded('{"a": 1}'.encode("utf-16")) == {"a": 1}  # like json.loads


@pytest.mark.parametrize("doc", ["[" * 60000, "[" * 65 + "]" * 65, '{"a":' * 100 + "1"])
def test_loads_bounded_refuses_deeper_and_never_recurses(doc: str) -> None:
    with pytest.raises(JsonTooDeep) as err:
        loads_bounded(doc)
    assert isinstance(err.value, ValueError)  # callers catching ValueError are covered
    with pytest.raises(JsonTooDeep):
        loads_bounded(doc.encode())
    with pytest.raises(JsonTooDeep):
        check_depth(doc, 64)
    assert loads_bounded("[[[1]]]", max_depth=3) == [[[1]]]
    with pytest.raises(JsonTooDeep):
        loads_bounded("[[[1]]]", max_depth=2)


@pytest.mark.parametrize(
    "text",
    [
        '["' + '\\"' * 40000,  # unterminated string of escaped quotes (quadratic regexes)
        '["' + 'a\\"' * 40000,
        '"\\' * 40000,
        "[]" * 40000,
        json.dumps(["ab"] * 20000),
    ],
)
def test_depth_scan_is_linear(text: str) -> None:
    started = time.perf_counter()
    json_depth(text)
    assert time.perf_counter() - started < 0.5


def test_malformed_is_a_value_error() -> None:
    for raw in ("{not json", b"\xff\xfe\xff", "[1,]"):
        with pytest.raises(ValueError):
            loads_bounded(raw)


def test_parse_json_body_names_the_body() -> None:
    with pytest.raises(ValidationError) as err:
        parse_json_body(b"[" * 60000)
    e = err.value
    assert (e.status, e.code, e.field) == (400, "json_too_deep", "body")
    assert str(MAX_JSON_DEPTH) in e.message
    with pytest.raises(ValidationError) as err:
        parse_json_body(b"{not json")
    assert (err.value.status, err.value.code) == (400, "invalid_json")
    with pytest.raises(ValidationError) as err:
        parse_json_body(b"\xff\xfe\xff")
    assert err.value.code == "invalid_json"
    assert parse_json_body(b'{"cpus": 2}') == {"cpus": 2}
