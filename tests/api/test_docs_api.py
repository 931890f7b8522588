"""The API documents' pages load nothing from elsewhere: every script, style and icon they
name is served by the server itself (a real browser renders them offline in
``tests/e2e/test_docs_offline.py``)."""

from __future__ import annotations

import re

import pytest

from tests.api.conftest import Harness


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_documentation_pages_use_only_the_servers_own_assets(
    harness: Harness, page: str
) -> None:
    html = await harness.anon.get(page)
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assets += re.findall(r"url: '([^']+)'", html.text)  # Swagger UI's document
    assert any(a.endswith(".js") for a in assets), html.text
    for asset in assets:
        assert not re.match(r"^(https?:)?//", asset), f"{page} loads {asset} from elsewhere"
        assert (await harness.anon.get(asset)).status_code == 200, asset
