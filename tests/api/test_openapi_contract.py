"""The OpenAPI document in the repository (``spec/openapi.json``) is the one the server serves:
a change to the API that is not written there fails here, so clients (and reviewers) see every
change of the contract in the diff.

After a deliberate change, write the new document with ``make spec``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.api.conftest import Harness

SPEC = Path(__file__).resolve().parents[2] / "spec" / "openapi.json"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_served_document_is_the_committed_one(harness: Harness) -> None:
    served = (await harness.anon.get("/openapi.json")).json()
    if os.environ.get("SANDCASTLE_TEST_WRITE_SPEC") == "1":
        SPEC.write_text(json.dumps(served, indent=2, sort_keys=True) + "\n")
    committed = json.loads(SPEC.read_text())
    assert served == committed, "the API changed: review it, then run `make spec`"
