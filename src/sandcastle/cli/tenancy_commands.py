"""``sandcastle org|project|workspace|member|key …``: tenancy through a running server.

Like the other client commands they read ``SANDCASTLE_URL`` and ``SANDCASTLE_API_KEY``; the org
is ``--org`` (or ``SANDCASTLE_ORG``, default ``default``). A new key is printed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from pydantic import BaseModel
from rich.table import Table

from sandcastle.cli.connection import DEFAULT_URL, KeyOpt, UrlOpt, connected, err, out
from sandcastle_sdk.models import NewKey

OrgOpt = Annotated[str, typer.Option("--org", envvar="SANDCASTLE_ORG", help="Org slug.")]
DEFAULT_ORG = "default"

org_app = typer.Typer(help="Orgs: create, inspect, limits and credits.", no_args_is_help=True)
project_app = typer.Typer(help="Projects of an org.", no_args_is_help=True)
workspace_app = typer.Typer(help="Workspaces of an org's projects.", no_args_is_help=True)
member_app = typer.Typer(help="Members of an org and their roles.", no_args_is_help=True)
key_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)


def _table(columns: list[str], rows: Sequence[BaseModel]) -> None:
    table = Table(*columns)
    for row in rows:
        values = row.model_dump(mode="json")
        table.add_row(*("" if values.get(c) is None else str(values.get(c)) for c in columns))
    out.print(table)


def _print_new_key(key: NewKey) -> None:
    err.print("[yellow]the key is shown this once; store it now[/]")
    out.print(key.key)


# --- org --------------------------------------------------------------------------------------


@org_app.command("list")
def org_list(url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """The org your key acts in."""
    with connected(url, key) as client:
        orgs = client.orgs.list()
    _table(["slug", "name", "role", "credit_balance", "created_at"], orgs)


@org_app.command("create")
def org_create(
    slug: Annotated[str, typer.Argument(help="Lowercase letters, digits, hyphens.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
) -> None:
    """Create an org you own; prints the new org's owner key (once)."""
    with connected(url, key) as client:
        created = client.orgs.create(slug, name=name)
    err.print(f"org [bold]{created.org.slug}[/] created")
    _print_new_key(created.key)


@org_app.command("get")
def org_get(org: OrgOpt = DEFAULT_ORG, url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """The org, its credit balance and limits, as JSON."""
    with connected(url, key) as client:
        found = client.orgs.use(org).get()
    out.print_json(found.model_dump_json())


@org_app.command("limits")
def org_limits(
    org: OrgOpt = DEFAULT_ORG,
    max_concurrent_sandboxes: Annotated[int | None, typer.Option()] = None,
    max_members: Annotated[int | None, typer.Option()] = None,
    max_vcpus: Annotated[int | None, typer.Option()] = None,
    max_memory_mb: Annotated[int | None, typer.Option()] = None,
    rate_limit_per_s: Annotated[float | None, typer.Option()] = None,
    rate_limit_burst: Annotated[int | None, typer.Option()] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
) -> None:
    """Override the org's limits (operators only); prints the effective limits."""
    with connected(url, key) as client:
        updated = client.orgs.use(org).set_limits(
            max_concurrent_sandboxes=max_concurrent_sandboxes,
            max_members=max_members,
            max_vcpus=max_vcpus,
            max_memory_mb=max_memory_mb,
            rate_limit_per_s=rate_limit_per_s,
            rate_limit_burst=rate_limit_burst,
        )
    out.print_json(updated.limits.model_dump_json())


@org_app.command("credits")
def org_credits(org: OrgOpt = DEFAULT_ORG, url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """The org's balance and latest credit transactions."""
    with connected(url, key) as client:
        statement = client.orgs.use(org).credits()
    out.print(f"balance {statement.balance}")
    _table(["created_at", "kind", "amount", "balance_after"], statement.transactions)


@org_app.command("top-up")
def org_top_up(
    amount: Annotated[int, typer.Argument(help="Credits to add.")],
    org: OrgOpt = DEFAULT_ORG,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
) -> None:
    """Add credits to the org (owners, admins, operators)."""
    with connected(url, key) as client:
        statement = client.orgs.use(org).top_up(amount)
    out.print(f"balance {statement.balance}")


# --- project and workspace --------------------------------------------------------------------


@project_app.command("list")
def project_list(org: OrgOpt = DEFAULT_ORG, url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """The org's projects."""
    with connected(url, key) as client:
        projects = client.orgs.use(org).projects()
    _table(["id", "key", "name", "created_at"], projects)


@project_app.command("create")
def project_create(
    project_key: Annotated[str, typer.Argument(metavar="KEY", help="Unique in the org.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    org: OrgOpt = DEFAULT_ORG,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
) -> None:
    """Create a project; prints its id."""
    with connected(url, key) as client:
        project = client.orgs.use(org).create_project(project_key, name=name)
    out.print(project.id)


@workspace_app.command("list")
def workspace_list(
    org: OrgOpt = DEFAULT_ORG,
    project: Annotated[str | None, typer.Option(help="Only this project's.")] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
) -> None:
    """The org's workspaces."""
    with connected(url, key) as client:
        found = client.orgs.use(org).workspaces(project_id=project)
    _table(["id", "key", "name", "project_id", "created_at"], found)


@workspace_app.command("create")
def workspace_create(
    workspace_key: Annotated[str, typer.Argument(metavar="KEY", help="Unique in the org.")],
    project: Annotated[str | None, typer.Option(help="Project id.")] = None,
    org: OrgOpt = DEFAULT_ORG,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
) -> None:
    """Create a workspace; prints its id."""
    with connected(url, key) as client:
        workspace = client.orgs.use(org).create_workspace(workspace_key, project_id=project)
    out.print(workspace.id)


# --- member -----------------------------------------------------------------------------------


@member_app.command("list")
def member_list(org: OrgOpt = DEFAULT_ORG, url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """The org's members."""
    with connected(url, key) as client:
        members = client.orgs.use(org).members()
    _table(["id", "email", "name", "role", "over_limit", "created_at"], members)


@member_app.command("add")
def member_add(
    email: str,
    role: Annotated[str, typer.Option(help="owner, admin or member.")] = "member",
    name: Annotated[str | None, typer.Option(help="Display name of a new user.")] = None,
    org: OrgOpt = DEFAULT_ORG,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
) -> None:
    """Add a member; prints the member id (make them a key with ``key create --member``)."""
    with connected(url, key) as client:
        member = client.orgs.use(org).add_member(email, role=role, name=name)
    out.print(member.id)


@member_app.command("role")
def member_role(
    member_id: str,
    role: str,
    org: OrgOpt = DEFAULT_ORG,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
) -> None:
    """Change a member's role."""
    with connected(url, key) as client:
        member = client.orgs.use(org).set_role(member_id, role)
    out.print(f"{member.email} {member.role}")


@member_app.command("remove")
def member_remove(
    member_id: str, org: OrgOpt = DEFAULT_ORG, url: UrlOpt = DEFAULT_URL, key: KeyOpt = ""
) -> None:
    """Remove a member and revoke their keys."""
    with connected(url, key) as client:
        client.orgs.use(org).remove_member(member_id)
    out.print(f"{member_id} removed")


# --- key --------------------------------------------------------------------------------------


@key_app.command("list")
def key_list(org: OrgOpt = DEFAULT_ORG, url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """Keys of the org (your own, unless you are an owner or admin)."""
    with connected(url, key) as client:
        keys = client.orgs.use(org).keys()
    _table(["id", "name", "prefix", "member_id", "project_id", "created_at", "revoked_at"], keys)


@key_app.command("create")
def key_create(
    name: Annotated[str, typer.Option(help="A label for the key.")] = "key",
    member: Annotated[str | None, typer.Option(help="Member id (owners, admins).")] = None,
    project: Annotated[str | None, typer.Option(help="Scope the key to a project.")] = None,
    org: OrgOpt = DEFAULT_ORG,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
) -> None:
    """Create a key and print it (once)."""
    with connected(url, key) as client:
        created = client.orgs.use(org).create_key(name, member_id=member, project_id=project)
    _print_new_key(created)


@key_app.command("revoke")
def key_revoke(
    key_id: str, org: OrgOpt = DEFAULT_ORG, url: UrlOpt = DEFAULT_URL, key: KeyOpt = ""
) -> None:
    """Revoke a key at once."""
    with connected(url, key) as client:
        client.orgs.use(org).revoke_key(key_id)
    out.print(f"{key_id} revoked")
