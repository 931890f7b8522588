"""The Dockerfile subset: what parses into what, what is refused (naming the line), and the
recipe a Dockerfile and its build context make."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sandcastle.agent import layout
from sandcastle.runtime.templates import dockerfile as df
from sandcastle.runtime.templates.from_dockerfile import (
    BuildContextError,
    recipe_from_dockerfile,
)
from sandcastle.runtime.templates.recipes import (
    Base,
    Chown,
    CopyIn,
    Run,
    Write,
    digest,
    get_recipe,
)


def test_instructions_parse_with_continuations_comments_and_both_forms() -> None:
    text = """# syntax=docker/dockerfile:1
ARG BASE=python
FROM $BASE
ENV A=1 B="two words" \\
    C=3
ENV LEGACY some value
# a comment
RUN apt-get update && \\
    # inside a continuation
    apt-get install -y ffmpeg
RUN ["pip", "install", "torch"]
copy --chown=user a.txt b/ /dst/
LABEL org.example.x="y z"
"""
    assert df.parse(text) == [
        df.Arg(2, "BASE", "python"),
        df.From(3, "$BASE"),
        df.Env(4, (("A", "1"), ("B", "two words"), ("C", "3"))),
        df.Env(6, (("LEGACY", "some value"),)),
        df.Run(8, None, "apt-get update && apt-get install -y ffmpeg"),
        df.Run(11, ("pip", "install", "torch"), None),
        df.Copy(12, ("a.txt", "b/"), "/dst/", "user", add=False),
        df.Label(13, (("org.example.x", "y z"),)),
    ]


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ('FROM python\nCMD ["x"]', 2, "CMD is not supported"),
        ("FROM python\nEXPOSE 80", 2, "EXPOSE is not supported"),
        ("FROM python AS build\nFROM python", 1, "multi-stage"),
        ("FROM python\nFROM debian:bookworm", 2, "multi-stage"),
        ("RUN true\nFROM python", 1, "only ARG may come before FROM"),
        ("FROM python\nRUN --mount=type=cache,target=/x true", 2, "RUN --mount is not supported"),
        ("FROM python\nCOPY --from=build /a /b", 2, "COPY --from is not supported"),
        ("FROM python\nADD https://example.com/x /x", 2, "ADD of a URL"),
        ("FROM python\n\nFROBNICATE now", 3, "unknown instruction FROBNICATE"),
        ("FROM python\nENV", 2, "ENV needs arguments"),
        ("# only a comment\n", 1, "no instructions"),
        ("ARG X=1\n", 1, "no FROM"),
    ],
)
def test_what_is_not_supported_is_refused_naming_its_line(text: str, line: int, says: str) -> None:
    with pytest.raises(df.DockerfileError, match=says) as caught:
        df.parse(text)
    assert caught.value.line == line and f"line {line}:" in str(caught.value)


def test_an_arg_before_from_is_for_from_alone_unless_declared_again(templates: Path) -> None:
    text = "ARG A=1\nARG B=2\nFROM python\nARG A\nRUN echo $A $B"
    (run, *_) = recipe_from_dockerfile("mine", text, None, templates).steps
    assert isinstance(run, Run) and run.env.get("A") == "1" and "B" not in run.env


def test_variables_expand_with_defaults_alternatives_and_escapes() -> None:
    values = {"A": "1", "EMPTY": ""}
    assert df.expand("$A-${A}-${NONE:-d}-${EMPTY:-e}-${A:+alt}-${NONE:+alt}-\\$A", values) == (
        "1-1-d-e-alt--$A"
    )


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A templates directory holding a built ``python`` (a manifest and an empty rootfs)."""
    root = tmp_path / "templates"
    (root / "python" / "rootfs").mkdir(parents=True)
    manifest = {
        "name": "python", "build_id": "b-1", "built_at": "2026-12-03T00:00:00Z",
        "recipe_digest": "x", "size_bytes": 0,
    }  # fmt: skip
    (root / "python" / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture
def context(tmp_path: Path) -> Path:
    root = tmp_path / "context"
    (root / "data" / "deep").mkdir(parents=True)
    (root / "data" / "deep" / "a.txt").write_text("a")
    (root / "tool.py").write_text("print('tool')")
    os.chmod(root / "tool.py", 0o755)
    return root


def test_a_dockerfile_from_a_template_becomes_steps_with_their_env_user_and_directory(
    templates: Path, context: Path
) -> None:
    text = """ARG VERSION=1.0
FROM python
ARG VERSION
ENV APP=/opt/app TAG=v$VERSION
WORKDIR $APP
USER user
RUN echo "$TAG" > tag
COPY --chown=user tool.py data ./
"""
    recipe = recipe_from_dockerfile("mine", text, context, templates, {"VERSION": "2.5"})
    assert recipe.base == Base("python", "b-1")
    workdir, run, copy, *closing = recipe.steps
    assert isinstance(workdir, Write) and workdir.directories[0].path == "/opt/app"
    assert isinstance(run, Run) and run.argv == ("/bin/sh", "-c", 'echo "$TAG" > tag')
    assert (run.uid, run.cwd, run.env["TAG"], run.env["VERSION"]) == (
        layout.USER_UID, "/opt/app", "v2.5", "2.5",
    )  # fmt: skip
    assert run.env["PATH"].startswith(f"{layout.USER_VENV}/bin:")
    assert isinstance(copy, CopyIn)
    placed = {(e.path, e.mode, e.uid, bool(e.sha256)) for e in copy.entries}
    assert ("/opt/app/tool.py", 0o755, layout.USER_UID, True) in placed
    assert ("/opt/app/deep/a.txt", 0o644, layout.USER_UID, True) in placed
    assert ("/opt/app/deep", 0o755, layout.USER_UID, False) in placed
    assert isinstance(closing[0], Chown) and closing[0].paths == layout.USER_WRITABLE
    assert (closing[0].uid, closing[0].gid) == (layout.HOST_UID, layout.HOST_GID)


def test_from_debian_starts_with_the_platform_layer(templates: Path) -> None:
    recipe = recipe_from_dockerfile("mine", "FROM debian:bookworm-slim\nRUN true", None, templates)
    platform = get_recipe("python")
    assert recipe.base is None and recipe.suite == platform.suite
    assert recipe.steps[: len(platform.steps)] == platform.steps


def test_a_changed_context_file_changes_the_recipe_digest(templates: Path, context: Path) -> None:
    text = "FROM python\nCOPY tool.py /opt/tool.py"
    before = digest(recipe_from_dockerfile("mine", text, context, templates))
    (context / "tool.py").write_text("print('changed')")
    assert digest(recipe_from_dockerfile("mine", text, context, templates)) != before


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("FROM nowhere:latest", "not a built template here"),
        ("FROM mine", "cannot start from itself"),
        ("FROM python\nCOPY ../secret /x", "must stay inside the build context"),
        ("FROM python\nCOPY /etc/passwd /x", "must stay inside the build context"),
        ("FROM python\nCOPY missing /x", "is not in the build context"),
        ("FROM python\nUSER nobody", "only root and user exist here"),
    ],
)
def test_a_dockerfile_reaching_outside_is_refused(
    templates: Path, context: Path, text: str, says: str
) -> None:
    with pytest.raises(df.DockerfileError, match=says):
        recipe_from_dockerfile("mine", text, context, templates)


@pytest.mark.parametrize("kind", ["absolute link", "escaping link", "fifo"])
def test_a_build_context_with_links_out_or_special_files_is_refused(
    templates: Path, context: Path, kind: str
) -> None:
    if kind == "absolute link":
        (context / "data" / "passwd").symlink_to("/etc/passwd")
    elif kind == "escaping link":
        (context / "data" / "up").symlink_to("../../..")
    else:
        os.mkfifo(context / "pipe")
    with pytest.raises(BuildContextError):
        recipe_from_dockerfile("mine", "FROM python\nCOPY tool.py /t", context, templates)
