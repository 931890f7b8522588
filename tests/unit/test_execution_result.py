"""Folding agent events into an execution result: MIME fields, ``extra``, ANSI, order."""

from __future__ import annotations

from typing import Any

import pytest

from sandcastle.domain.execution import (
    ExecutionError,
    ExecutionResult,
    ResultItem,
    strip_ansi,
    to_error,
    to_item,
)

# execute.txt's item fields and the Jupyter MIME type each one carries.
DOCUMENTED = [
    ("text/plain", "text", "42"),
    ("text/html", "html", "<b>42</b>"),
    ("text/markdown", "markdown", "**42**"),
    ("image/svg+xml", "svg", "<svg/>"),
    ("image/png", "png", "iVBORw0KGgo="),
    ("image/jpeg", "jpeg", "/9j/4AAQ"),
    ("application/pdf", "pdf", "JVBERi0x"),
    ("text/latex", "latex", "$42$"),
    ("application/json", "json", {"answer": [42, None]}),
    ("application/javascript", "javascript", "console.log(42)"),
]


@pytest.mark.parametrize(("mime", "field", "value"), DOCUMENTED)
def test_each_documented_mime_type_has_its_field(mime: str, field: str, value: Any) -> None:
    assert to_item({mime: value}, is_primary=True) == ResultItem(
        is_primary=True, fields={field: value}, extra={}
    )


def test_a_full_bundle_splits_into_fields_and_extra() -> None:
    bundle = {mime: value for mime, _, value in DOCUMENTED}
    bundle["application/vnd.plotly.v1+json"] = {"data": []}
    bundle["text/x-custom"] = "custom"
    item = to_item(bundle, is_primary=False)
    assert item.is_primary is False
    assert item.fields == {field: value for _, field, value in DOCUMENTED}
    assert item.extra == {"application/vnd.plotly.v1+json": {"data": []}, "text/x-custom": "custom"}


def test_unknown_mime_types_only_go_to_extra() -> None:
    item = to_item({"image/gif": "R0lGOD"}, is_primary=True)
    assert item.fields == {}
    assert item.extra == {"image/gif": "R0lGOD"}


@pytest.mark.parametrize(
    ("coloured", "plain"),
    [
        ("\x1b[0;31mZeroDivisionError\x1b[0m", "ZeroDivisionError"),
        ("\x1b[1;32mOK\x1b[39m\x1b[49m", "OK"),
        ("\x1b[38;5;196mred\x1b[0m and \x1b[48;2;0;0;255mblue", "red and blue"),
        ("\x1b[?25lhidden cursor\x1b[?25h", "hidden cursor"),
        ("\x1b[2K\x1b[1Gprogress", "progress"),
        ("no escapes [0m here", "no escapes [0m here"),
        ("", ""),
    ],
)
def test_strip_ansi(coloured: str, plain: str) -> None:
    assert strip_ansi(coloured) == plain


def test_error_traceback_is_joined_and_stripped() -> None:
    error = to_error(
        {
            "kind": "error",
            "name": "ZeroDivisionError",
            "value": "division by zero",
            "traceback": [
                "\x1b[0;31m-----\x1b[0m",
                "\x1b[0;32m----> 1\x1b[0m 1/0",
                "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero",
            ],
        }
    )
    assert error == ExecutionError(
        name="ZeroDivisionError",
        value="division by zero",
        traceback="-----\n----> 1 1/0\nZeroDivisionError: division by zero",
    )


def test_error_with_odd_fields_still_converts() -> None:
    assert to_error({"kind": "error"}) == ExecutionError(name="Error", value="", traceback="")
    assert to_error({"name": 7, "value": None, "traceback": "one\x1b[0m line"}) == ExecutionError(
        name="7", value="None", traceback="one line"
    )


def test_events_fold_in_order() -> None:
    result = ExecutionResult()
    events: list[dict[str, Any]] = [
        {"kind": "execution_count", "value": 3},
        {"kind": "stdout", "text": "a\n"},
        {"kind": "stderr", "text": "warn\n"},
        {"kind": "result", "is_primary": False, "data": {"image/png": "AAA", "text/plain": "<F>"}},
        {"kind": "stdout", "text": "b\n"},
        {"kind": "result", "is_primary": True, "data": {"text/plain": "42"}},
    ]
    for event in events:
        result.add_event(event)
    assert result.execution_count == 3
    assert result.stdout == ["a\n", "b\n"]
    assert result.stderr == ["warn\n"]
    assert result.items == [
        ResultItem(is_primary=False, fields={"png": "AAA", "text": "<F>"}, extra={}),
        ResultItem(is_primary=True, fields={"text": "42"}, extra={}),
    ]
    assert result.error is None


def test_error_event_sets_the_error_and_the_last_one_wins() -> None:
    result = ExecutionResult()
    result.add_event({"kind": "error", "name": "First", "value": "1", "traceback": []})
    result.add_event({"kind": "error", "name": "TimeoutError", "value": "2", "traceback": []})
    assert result.error is not None and result.error.name == "TimeoutError"


@pytest.mark.parametrize(
    "event",
    [
        {"kind": "unknown", "text": "x"},
        {"text": "no kind"},
        {"kind": "execution_count", "value": "3"},
        {"kind": "execution_count"},
    ],
)
def test_unknown_or_malformed_events_change_nothing(event: dict[str, Any]) -> None:
    result = ExecutionResult()
    result.add_event(event)
    assert result == ExecutionResult()


def test_result_with_bad_data_is_an_empty_item() -> None:
    result = ExecutionResult()
    result.add_event({"kind": "result", "is_primary": 1, "data": ["not", "a", "bundle"]})
    result.add_event({"kind": "result"})
    assert result.items == [
        ResultItem(is_primary=True, fields={}, extra={}),
        ResultItem(is_primary=False, fields={}, extra={}),
    ]


def test_stream_text_is_kept_verbatim_except_type() -> None:
    result = ExecutionResult()
    result.add_event({"kind": "stdout", "text": "\x1b[31mred\x1b[0m"})
    result.add_event({"kind": "stdout", "text": 5})
    result.add_event({"kind": "stderr"})
    assert result.stdout == ["\x1b[31mred\x1b[0m", "5"]
    assert result.stderr == [""]


def test_output_past_the_bound_is_dropped_and_said_once_on_stderr() -> None:
    result = ExecutionResult(max_bytes=1000)
    for _ in range(5):
        result.add_event({"kind": "result", "data": {"text/html": "h" * 290}, "is_primary": False})
    result.add_event({"kind": "stdout", "text": "s" * 50})
    result.add_event({"kind": "stdout", "text": "s" * 500})
    result.add_event({"kind": "execution_count", "value": 3})

    assert len(result.items) == 3 and result.stdout == ["s" * 50]
    assert result.truncated and result.size <= 1000
    assert len(result.stderr) == 1 and "1000 bytes" in result.stderr[0]
    assert result.execution_count == 3  # what is not output still counts


@pytest.mark.parametrize(
    "data",
    [
        {"application/json": [[]] * 2000},  # empty containers still take bytes
        {"text/plain": "\x00" * 300},  # escaped as JSON, six bytes each
        {"text/plain": "\U0001f600" * 200},  # four bytes each in UTF-8
    ],
)
def test_output_is_counted_as_the_json_bytes_it_takes(data: dict[str, Any]) -> None:
    result = ExecutionResult(max_bytes=1000)
    for _ in range(5):
        result.add_event({"kind": "result", "data": data, "is_primary": False})

    assert result.truncated
    assert len(result.items) <= 1
