"""The base of every JSON request body: unknown fields refused, and no type coerced.

Pydantic's lax mode would take ``true`` for a number (``{"amount": true}`` topped up one credit),
``"5"`` for an integer and ``"yes"`` for a boolean. A client that sends those has a bug we
should tell it about, not guess around. Enum fields keep lax mode (``Field(strict=False)``):
JSON has no enums, so strict mode would refuse even the right string.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
