"""Jupyter MIME bundles from real libraries mapped onto ``execute.txt``'s result items."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from tests.e2e.executing import run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def items_of(api: httpx.Client, sandbox: dict[str, Any], code: str) -> list[dict[str, Any]]:
    result = run(api, sandbox["id"], code=code)
    assert result["error"] is None, result["error"]
    items: list[dict[str, Any]] = result["items"]
    return items


def test_matplotlib_figure_is_a_png(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"
    [figure] = items_of(api, sandbox, code)
    assert figure["is_primary"] is False
    assert base64.b64decode(figure["png"]).startswith(PNG_SIGNATURE)
    assert figure["text"].startswith("<Figure size")


def test_pandas_dataframe_has_html_and_text(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    code = "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})"
    [frame] = items_of(api, sandbox, code)
    assert frame["is_primary"] is True
    assert "<table" in frame["html"] and "<td>x</td>" in frame["html"]
    assert frame["text"].split() == ["a", "b", "0", "1", "x", "1", "2", "y"]


def test_ipython_display_types_map_to_their_fields(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    code = (
        "from IPython.display import SVG, JSON, Latex, Markdown, display\n"
        'display(SVG(\'<svg xmlns="http://www.w3.org/2000/svg"><circle r="1"/></svg>\'))\n'
        "display(Markdown('**bold**'))\n"
        "display(Latex(r'$\\alpha$'))\n"
        "display(JSON({'k': [1, None]}))\n"
    )
    svg, markdown, latex, json_ = items_of(api, sandbox, code)
    assert "<circle" in svg["svg"] and svg["is_primary"] is False
    assert markdown["markdown"] == "**bold**"
    assert latex["latex"] == "$\\alpha$"
    assert json_["json"] == {"k": [1, None]}


def test_unknown_mime_types_land_under_extra(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    code = (
        "from IPython.display import display\n"
        "display({'application/vnd.example+json': {'n': 1}, 'text/plain': 'example'}, raw=True)"
    )
    assert items_of(api, sandbox, code) == [
        {
            "is_primary": False,
            "text": "example",
            "extra": {"application/vnd.example+json": {"n": 1}},
        }
    ]


def test_several_displays_keep_their_order(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    code = (
        "from IPython.display import HTML, Markdown, display\n"
        "display('first')\n"
        "display(HTML('<p>second</p>'))\n"
        "print('between')\n"
        "display(Markdown('third'))\n"
        "'last'"
    )
    result = run(api, sandbox["id"], code=code)
    assert [(i["is_primary"], i.get("html") or i.get("markdown") or i["text"]) for i in
            result["items"]] == [
        (False, "'first'"),
        (False, "<p>second</p>"),
        (False, "third"),
        (True, "'last'"),
    ]  # fmt: skip
    assert result["logs"]["stdout"] == ["between\n"]


def test_traceback_is_plain_text(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    error = run(api, sandbox["id"], code="import json\njson.loads('{')")["error"]
    assert error["name"] == "JSONDecodeError"
    assert "\x1b" not in error["traceback"]
    assert "json.loads('{')" in error["traceback"]
