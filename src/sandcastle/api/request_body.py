"""The base of every JSON request body: unknown fields refused, and no type coerced.

Pydantic's lax mode would take ``true`` for a number (``{"amount": true}`` topped up one credit),
``"5"`` for an integer and ``"yes"`` for a boolean. A client that sends those has a bug we
should tell it about, not guess around. Choices are ``Literal`` strings, which strict mode
takes as they are (an ``Enum`` field would need ``Field(strict=False)``: JSON has no enums).

Integer fields are :data:`Integer`: JSON Schema's ``integer`` is any number without a
fraction, so ``5.0`` is one (Python's ``json`` writes floats that way) while ``5.5``, ``true``
and ``"5"`` are not.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict
from pydantic_core import PydanticCustomError

from sandcastle.domain.languages import LANGUAGE_PATTERN, check_spelling


def _number_only(value: object) -> object:
    # bool is an int to Python, and lax mode would parse the digits of a string.
    if isinstance(value, bool | str | bytes):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


Integer = Annotated[int, Strict(False), BeforeValidator(_number_only)]
#: For an optional field: a bound given on the field (``Integer | None = Field(ge=1)``) lands
#: after the validator, where pydantic still enforces it but documents it as ``ge``, which JSON
#: Schema does not know; inside the alias, before the validator, it is ``minimum``.
PositiveInteger = Annotated[int, Field(ge=1), Strict(False), BeforeValidator(_number_only)]


#: A language name ``execute`` accepts: checked as the body is read (a run's too, which would
#: otherwise fail only when it starts), and documented as a pattern.
Language = Annotated[
    str,
    AfterValidator(check_spelling),
    Field(json_schema_extra={"pattern": LANGUAGE_PATTERN}),
]


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
