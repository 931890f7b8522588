"""Leap0's Python SDK, unmodified, against a Sandcastle server: the scenario of
``tests/e2e/test_leap0_sdk.py``, run by the interpreter of the SDK's own venv
(``make leap0-sdk``). It reads ``LEAP0_API_KEY``, ``LEAP0_BASE_URL`` and
``LEAP0_SANDBOX_DOMAIN`` like any Leap0 user's program, asserts as it goes, and prints one JSON
line per step it passed.
"""

from __future__ import annotations

import json
import re
import typing

import typing_extensions

# leap0 0.8.0 declares its TypedDicts with typing.TypedDict, which pydantic refuses below
# Python 3.12; this must run before any leap0 module is imported (docs/LEAP0.md).
typing.TypedDict = typing_extensions.TypedDict

from leap0 import Leap0Client, Leap0ConflictError, Leap0NotFoundError  # noqa: E402 - after the fix above


def passed(step: str, **detail: object) -> None:
    print(json.dumps({"step": step, **detail}), flush=True)


def main() -> None:
    with Leap0Client() as client:
        sandbox = client.sandboxes.create()
        try:
            assert re.fullmatch(r"sb-[0-9a-f]{8}", sandbox.id), sandbox.id
            assert sandbox.state == "running", sandbox.state
            passed("create", id=sandbox.id)

            # On the sandbox's own host, https://{id}.{sandbox_domain}.
            interpreter = sandbox.code_interpreter
            assert interpreter.health() is True
            context = interpreter.create_context(language="python", cwd="/home/user/work")
            assert context.id and context.cwd == "/home/user/work", context
            result = interpreter.execute(code="x = 1+2+3\nx", context_id=context.id)
            assert result.main_text == "6" and result.error is None, result
            result = interpreter.execute(
                code="import os\nprint(x * 2, os.getcwd())", context_id=context.id
            )
            assert result.logs.stdout == ["12 /home/user/work\n"], result.logs
            assert context.id in {c.id for c in interpreter.list_contexts()}
            fresh = interpreter.execute(
                code="import os\nprint(os.environ['GREETING'])\n1 / 0",
                env_vars={"GREETING": "hi"},
            )
            assert fresh.context_id and fresh.context_id != context.id
            assert fresh.logs.stdout == ["hi\n"], fresh.logs
            assert fresh.error is not None and fresh.error.name == "ZeroDivisionError"
            interpreter.execute(
                code="open('/home/user/made.txt', 'w').write('by code')", context_id=context.id
            )
            interpreter.delete_context(context.id)
            passed("code")

            # On the control plane.
            files = sandbox.filesystem
            files.write_file(path="/home/user/hello.txt", content="héllo\n")
            assert files.read_file(path="/home/user/hello.txt") == "héllo\n"
            files.write_file(path="/home/user/hello.txt", content="replaced")
            assert files.read_file(path="/home/user/hello.txt") == "replaced"
            blob = bytes(range(256)) * 4096
            files.write_bytes(path="/home/user/deep/blob.bin", content=blob)
            assert files.read_bytes(path="/home/user/deep/blob.bin") == blob
            assert files.read_bytes(path="/home/user/deep/blob.bin", offset=5, limit=3) == blob[5:8]
            assert files.read_file(path="/home/user/made.txt") == "by code"
            listed = {item.name: item for item in files.ls(path="/home/user").items}
            assert {"hello.txt", "deep", "made.txt"} <= set(listed), sorted(listed)
            assert listed["deep"].is_dir and listed["hello.txt"].size == len("replaced")
            files.delete(path="/home/user/hello.txt")
            try:
                files.read_file(path="/home/user/hello.txt")
            except Leap0NotFoundError:
                pass
            else:
                raise AssertionError("a deleted file was read")
            try:
                files.delete(path="/home/user/deep")
            except Leap0ConflictError:
                pass  # not empty, and not recursive
            else:
                raise AssertionError("a directory with a file in it was deleted")
            files.delete(path="/home/user/deep", recursive=True)
            assert "deep" not in {item.name for item in files.ls(path="/home/user").items}
            passed("files")

            got = client.sandboxes.get(sandbox.id)
            assert got.id == sandbox.id and got.state == "running", got
            passed("get")
        finally:
            sandbox.delete()
        try:
            client.sandboxes.get(sandbox.id)
        except Leap0NotFoundError:
            passed("delete")
        else:
            raise AssertionError("a deleted sandbox was found")


if __name__ == "__main__":
    main()
