"""``sandcastle``: serve, purge, template, info, sandbox, exec, org, project, workspace, member,
key."""

from __future__ import annotations

import sys

import typer

from sandcastle.cli import (
    client_commands,
    process_commands,
    server_commands,
    template_push,
    tenancy_commands,
)

app = typer.Typer(help="Sandcastle: self-hosted isolated sandboxes.", no_args_is_help=True)
app.command("serve")(server_commands.serve)
app.command("purge")(server_commands.purge)
server_commands.template_app.command("push")(template_push.push)
app.add_typer(server_commands.template_app, name="template")
app.command("info")(client_commands.info)
app.add_typer(client_commands.sandbox_app, name="sandbox")
app.command("exec")(client_commands.exec_code)
app.command("run")(process_commands.run_command)
app.command("sh")(process_commands.shell)
app.add_typer(tenancy_commands.org_app, name="org")
app.add_typer(tenancy_commands.project_app, name="project")
app.add_typer(tenancy_commands.workspace_app, name="workspace")
app.add_typer(tenancy_commands.member_app, name="member")
app.add_typer(tenancy_commands.key_app, name="key")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
