"""The languages an execution or a context may ask for (``execute.txt``), and their families."""

from __future__ import annotations

from sandcastle.errors import FieldError

#: Every spelling ``execute.txt`` accepts, mapped to the language family that runs it.
LANGUAGES: dict[str, str] = {
    "python": "python",
    "py": "python",
    "python3": "python",
    "typescript": "typescript",
    "ts": "typescript",
    "javascript": "typescript",
    "js": "typescript",
    "bun": "typescript",
    "node": "typescript",
}


def _any_case(name: str) -> str:
    return "".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in name)


#: The spellings above in any letter case, as a JSON Schema (ECMA) pattern, which has no flag
#: for that; it documents what :func:`normalise_language` accepts.
LANGUAGE_PATTERN = "^(?:" + "|".join(_any_case(name) for name in sorted(LANGUAGES)) + ")$"
#: Language families whose kernel this server's templates carry.
AVAILABLE = frozenset({"python", "typescript"})


def check_spelling(language: str) -> str:
    """``language`` if it is one of :data:`LANGUAGES` (any case); ``ValueError`` if not."""
    if language.lower() not in LANGUAGES:
        raise ValueError(f"unsupported language {language!r}; use one of {sorted(LANGUAGES)}")
    return language


def normalise_language(language: str | None) -> str:
    """The family of ``language`` (default python); a ``FieldError`` naming it if unknown."""
    family = LANGUAGES.get("python" if language is None else language.lower())
    if family is None:
        raise FieldError(
            "language", f"unsupported language {language!r}; use one of {sorted(LANGUAGES)}"
        )
    if family not in AVAILABLE:
        raise FieldError("language", f"language {language!r} is not available on this server yet")
    return family
