"""Sandcastle's Python SDK: ``Sandbox`` and ``Sandcastle`` (synchronous), ``AsyncSandbox`` and
``AsyncSandcastle`` (asyncio), over one implementation (docs/SDK.md).

    from sandcastle_sdk import Sandbox

    with Sandbox.create() as sandbox:
        print(sandbox.run_code("1 + 1").text)
"""

from sandcastle_sdk import errors, models
from sandcastle_sdk._async.client import AsyncSandcastle
from sandcastle_sdk._async.runs import AsyncRunHandle
from sandcastle_sdk._async.sandbox import AsyncSandbox
from sandcastle_sdk._sync.client import Sandcastle
from sandcastle_sdk._sync.runs import RunHandle
from sandcastle_sdk._sync.sandbox import Sandbox
from sandcastle_sdk.errors import APIError, SandcastleError

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AsyncRunHandle",
    "AsyncSandbox",
    "AsyncSandcastle",
    "RunHandle",
    "Sandbox",
    "Sandcastle",
    "SandcastleError",
    "errors",
    "models",
]
