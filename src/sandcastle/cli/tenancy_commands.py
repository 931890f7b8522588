"""``sandcastle org|project|workspace|member|key …``: tenancy through a running server.

Like the other client commands they read ``SANDCASTLE_URL`` and ``SANDCASTLE_API_KEY``; the org
is ``--org`` (or ``SANDCASTLE_ORG``, default ``default``). A new key is printed once.
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from sandcastle.cli.client_commands import DEFAULT_URL, KeyOpt, UrlOpt, _fail, err, out

OrgOpt = Annotated[str, typer.Option("--org", envvar="SANDCASTLE_ORG", help="Org slug.")]
DEFAULT_ORG = "default"

org_app = typer.Typer(help="Orgs: create, inspect, limits and credits.", no_args_is_help=True)
project_app = typer.Typer(help="Projects of an org.", no_args_is_help=True)
workspace_app = typer.Typer(help="Workspaces of an org's projects.", no_args_is_help=True)
member_app = typer.Typer(help="Members of an org and their roles.", no_args_is_help=True)
key_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)


def _request(method: str, url: str, key: str, path: str, **kwargs: Any) -> Any:
    """One call; exits 1 with one line on any error; ``None`` for a 204."""
    try:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {exc}")
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail") or response.text
        except ValueError:
            detail = response.text
        _fail(f"{response.status_code}: {detail}")
    return None if response.status_code == 204 else response.json()


def _table(columns: list[str], rows: list[dict[str, Any]]) -> None:
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(table)


def _print_new_key(key: dict[str, Any]) -> None:
    err.print("[yellow]the key is shown this once; store it now[/]")
    out.print(key["key"])


# --- org --------------------------------------------------------------------------------------


@org_app.command("list")
def org_list(url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """The org your key acts in."""
    _table(
        ["slug", "name", "role", "credit_balance", "created_at"],
        _request("GET", url, key, "/v1/orgs")["items"],
    )


@org_app.command("create")
def org_create(
    slug: Annotated[str, typer.Argument(help="Lowercase letters, digits, hyphens.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
) -> None:
    """Create an org you own; prints the new org's owner key (once)."""
    body: dict[str, Any] = {"slug": slug}
    if name:
        body["name"] = name
    created = _request("POST", url, key, "/v1/orgs", json=body)
    err.print(f"org [bold]{created['org']['slug']}[/] created")
    _print_new_key(created["key"])


@org_app.command("get")
def org_get(org: OrgOpt = DEFAULT_ORG, url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """The org, its credit balance and limits, as JSON."""
    out.print_json(data=_request("GET", url, key, f"/v1/orgs/{org}"))


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
    body = {
        name: value
        for name, value in (
            ("max_concurrent_sandboxes", max_concurrent_sandboxes),
            ("max_members", max_members),
            ("max_vcpus", max_vcpus),
            ("max_memory_mb", max_memory_mb),
            ("rate_limit_per_s", rate_limit_per_s),
            ("rate_limit_burst", rate_limit_burst),
        )
        if value is not None
    }
    updated = _request("PATCH", url, key, f"/v1/orgs/{org}/limits", json=body)
    out.print_json(data=updated["limits"])


@org_app.command("credits")
def org_credits(org: OrgOpt = DEFAULT_ORG, url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """The org's balance and latest credit transactions."""
    statement = _request("GET", url, key, f"/v1/orgs/{org}/credits")
    out.print(f"balance {statement['balance']}")
    _table(["created_at", "kind", "amount", "balance_after"], statement["transactions"])


@org_app.command("top-up")
def org_top_up(
    amount: Annotated[int, typer.Argument(help="Credits to add.")],
    org: OrgOpt = DEFAULT_ORG,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
) -> None:
    """Add credits to the org (owners, admins, operators)."""
    statement = _request("POST", url, key, f"/v1/orgs/{org}/credits", json={"amount": amount})
    out.print(f"balance {statement['balance']}")


# --- project and workspace --------------------------------------------------------------------


@project_app.command("list")
def project_list(org: OrgOpt = DEFAULT_ORG, url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """The org's projects."""
    projects = _request("GET", url, key, f"/v1/orgs/{org}/projects")["items"]
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
    body: dict[str, Any] = {"key": project_key, **({"name": name} if name else {})}
    out.print(_request("POST", url, key, f"/v1/orgs/{org}/projects", json=body)["id"])


@workspace_app.command("list")
def workspace_list(
    org: OrgOpt = DEFAULT_ORG,
    project: Annotated[str | None, typer.Option(help="Only this project's.")] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
) -> None:
    """The org's workspaces."""
    params = {"project_id": project} if project else {}
    found = _request("GET", url, key, f"/v1/orgs/{org}/workspaces", params=params)["items"]
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
    body: dict[str, Any] = {"key": workspace_key, **({"project_id": project} if project else {})}
    out.print(_request("POST", url, key, f"/v1/orgs/{org}/workspaces", json=body)["id"])


# --- member -----------------------------------------------------------------------------------


@member_app.command("list")
def member_list(org: OrgOpt = DEFAULT_ORG, url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """The org's members."""
    members = _request("GET", url, key, f"/v1/orgs/{org}/members")["items"]
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
    body: dict[str, Any] = {"email": email, "role": role, **({"name": name} if name else {})}
    out.print(_request("POST", url, key, f"/v1/orgs/{org}/members", json=body)["id"])


@member_app.command("role")
def member_role(
    member_id: str,
    role: str,
    org: OrgOpt = DEFAULT_ORG,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = "",
) -> None:
    """Change a member's role."""
    path = f"/v1/orgs/{org}/members/{member_id}"
    member = _request("PATCH", url, key, path, json={"role": role})
    out.print(f"{member['email']} {member['role']}")


@member_app.command("remove")
def member_remove(
    member_id: str, org: OrgOpt = DEFAULT_ORG, url: UrlOpt = DEFAULT_URL, key: KeyOpt = ""
) -> None:
    """Remove a member and revoke their keys."""
    _request("DELETE", url, key, f"/v1/orgs/{org}/members/{member_id}")
    out.print(f"{member_id} removed")


# --- key --------------------------------------------------------------------------------------


@key_app.command("list")
def key_list(org: OrgOpt = DEFAULT_ORG, url: UrlOpt = DEFAULT_URL, key: KeyOpt = "") -> None:
    """Keys of the org (your own, unless you are an owner or admin)."""
    keys = _request("GET", url, key, f"/v1/orgs/{org}/keys")["items"]
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
    body: dict[str, Any] = {"name": name}
    if member:
        body["member_id"] = member
    if project:
        body["project_id"] = project
    _print_new_key(_request("POST", url, key, f"/v1/orgs/{org}/keys", json=body))


@key_app.command("revoke")
def key_revoke(
    key_id: str, org: OrgOpt = DEFAULT_ORG, url: UrlOpt = DEFAULT_URL, key: KeyOpt = ""
) -> None:
    """Revoke a key at once."""
    _request("DELETE", url, key, f"/v1/orgs/{org}/keys/{key_id}")
    out.print(f"{key_id} revoked")
