"""Where things live inside a sandbox's root filesystem.

Shared by the template builder (which creates these paths), the runtime (which mounts into them)
and the agent (which uses them). Paths are absolute inside the sandbox.
"""

from __future__ import annotations

#: The user's Python environment: ipykernel and the data libraries; first on ``PATH``.
USER_VENV = "/opt/venv"
#: The agent's own environment, apart from the user's so ``pip install`` cannot break the agent.
AGENT_VENV = "/opt/sandcastle/agent-venv"
#: ``PYTHONPATH`` for the agent; the host's ``sandcastle/agent`` package is bind-mounted below it.
AGENT_APP_DIR = "/opt/sandcastle/app"
AGENT_PACKAGE_DIR = "/opt/sandcastle/app/sandcastle/agent"
#: ``JUPYTER_PATH`` entry holding the kernelspecs the agent starts (``kernels/python3``).
JUPYTER_DIR = "/opt/sandcastle/share/jupyter"
#: Directory the runtime mounts read-only; the host listens on ``agent.sock`` inside it.
CHANNEL_DIR = "/run/sandcastle"
CHANNEL_SOCKET = "/run/sandcastle/agent.sock"
#: The host uid/gid the sandbox user is: unprivileged, and used by nothing else on the host, so
#: code that escaped every namespace would still hold no privilege there.
HOST_UID = 61000
HOST_GID = 61000
#: The unprivileged user code runs as, and its home (the default working directory). Its uid is
#: the same inside and outside: bubblewrap maps it to itself, and gVisor shows host ownership
#: unchanged, so one template's file ownership is right under both backends.
USER_NAME = "user"
USER_UID = HOST_UID
USER_GID = HOST_GID
USER_HOME = "/home/user"
#: Paths inside the sandbox the user must be able to write: owned by ``HOST_UID`` in templates.
USER_WRITABLE = (USER_HOME, USER_VENV)
