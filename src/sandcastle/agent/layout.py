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
#: The unprivileged user code runs as, and its home (the default working directory).
USER_NAME = "user"
USER_UID = 1000
USER_GID = 1000
USER_HOME = "/home/user"
#: The host uid/gid the sandbox user is mapped to: unprivileged, and used by nothing else on
#: the host, so code that escaped every namespace would still hold no privilege there.
HOST_UID = 61000
HOST_GID = 61000
#: Paths inside the sandbox the user must be able to write: owned by ``HOST_UID`` in templates.
USER_WRITABLE = (USER_HOME, USER_VENV)
