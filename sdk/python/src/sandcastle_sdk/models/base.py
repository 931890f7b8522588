"""The base of every model: unknown fields are kept out, so a newer server breaks nothing."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
