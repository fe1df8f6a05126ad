"""``lorahub org create|add|remove|list``: organisations of `lorahub serve` and their members.

They operate on the server's database, as ``lorahub token`` does (``--data``/``--database``): the
operator's own tools, with no token. Roles are the Hub's (read, contributor, write, admin; see
``docs/server.md``); members' rights follow from ``lorahub.registry.hub.access``.
"""

from __future__ import annotations

import click

from lorahub.cli.output import emit, info, json_option, table

from .serve import _session, data_option, database_option

ROLE_CHOICE = click.Choice(["read", "contributor", "write", "admin"])


@click.group("org")
def org_group() -> None:
    """Organisations of `lorahub serve`: create them, add and remove members, list them."""


@org_group.command("create")
@click.argument("name")
@click.option("--admin", "admin", default=None, metavar="USER", help="Its first admin (a user, created if needed).")
@data_option
@database_option
@json_option
def org_create(name: str, admin: str | None, data_dir: str | None, database: str | None, as_json: bool) -> None:
    """Create the organisation NAME (a namespace: no user or organisation may have the name)."""
    from lorahub.registry.hub.orgs import create_org

    registry, session = _session(data_dir, database)
    try:
        with session:
            org, member = create_org(session, name, admin=admin)
            out = {"org": org.name, "admin": member.name if member is not None else None}
    finally:
        registry.close()
    info(f"organisation {out['org']} created" + (f", admin {out['admin']}" if out["admin"] else ""))
    emit(out, as_json, lambda o: None)


@org_group.command("add")
@click.argument("org")
@click.argument("user")
@click.option("--role", type=ROLE_CHOICE, default="read", show_default=True,
              help="read: read its repos; contributor: also create repos and write to those it created; "
                   "write: write to all its repos; admin: also manage members.")
@data_option
@database_option
@json_option
def org_add(org: str, user: str, role: str, data_dir: str | None, database: str | None, as_json: bool) -> None:
    """Add USER (created if needed) to ORG with a role, or change their role."""
    from lorahub.registry.hub.orgs import set_member

    registry, session = _session(data_dir, database)
    try:
        with session:
            org_row, member, previous = set_member(session, org, user, role, as_operator=True)
            out = {"org": org_row.name, "user": member.name, "role": role, "previous": previous}
    finally:
        registry.close()
    change = f"was {previous}" if previous else "new member"
    info(f"{out['user']} is {role} of {out['org']} ({change})")
    emit(out, as_json, lambda o: None)


@org_group.command("remove")
@click.argument("org")
@click.argument("user")
@data_option
@database_option
@json_option
def org_remove(org: str, user: str, data_dir: str | None, database: str | None, as_json: bool) -> None:
    """Remove USER from ORG (their tokens stop reaching its private repos at once)."""
    from lorahub.registry.hub.orgs import remove_member

    registry, session = _session(data_dir, database)
    try:
        with session:
            org_row, member, role = remove_member(session, org, user, as_operator=True)
            out = {"org": org_row.name, "user": member.name, "role": role}
    finally:
        registry.close()
    info(f"{out['user']} ({role}) removed from {out['org']}")
    emit(out, as_json, lambda o: None)


@org_group.command("list")
@click.argument("org", required=False)
@click.option("--user", "user_name", default=None, metavar="NAME", help="Only the organisations NAME is a member of.")
@data_option
@database_option
@json_option
def org_list(org: str | None, user_name: str | None, data_dir: str | None, database: str | None, as_json: bool) -> None:
    """List organisations (or ORG alone) with their members and roles."""
    from lorahub.registry.hub.orgs import list_members
    from lorahub.registry.server.run import prepare

    # A driver connection of its own, no SQLAlchemy: a fast start (see lorahub.registry.catalogue).
    registry = prepare(data_dir, database, pooled=False)[2]
    try:
        with registry.reading() as raw:
            rows = list_members(raw, org=org, user=user_name)
    finally:
        registry.close()
    items: dict[str, dict] = {}
    for r in rows:
        entry = items.setdefault(r.org, {"org": r.org, "members": []})
        if r.member is not None:
            entry["members"].append({"user": r.member, "role": r.role})
    out = list(items.values())

    def human(objs: list[dict]) -> list[str]:
        if not objs:
            return ["no organisations"]
        return table(
            [[o["org"], m["user"], m["role"]] for o in objs for m in (o["members"] or [{"user": "-", "role": "-"}])],
            ["ORG", "USER", "ROLE"],
        )

    emit(out, as_json, human)
