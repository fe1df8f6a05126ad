"""Organisations, roles and fine-grained tokens (issue 21, first part).

The policy (``lorahub.registry.hub.access.allowed``) is checked against one hand-written table of
roles x actions x public/private repos x token limits, on SQLite and PostgreSQL; the same table
is then asked of the real HTTP routes (repo info, tree, resolve, listing, search, by-hash, commit,
settings, delete, the Xet token routes, repo creation, member management), which must agree with
it cell by cell. The real huggingface_hub client is used against ``lorahub serve`` for whoami,
create_repo in an organisation and the member list.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hubkit import NDJSON, ndjson, sha256, write_kohya_lora

from lorahub.cli.main import cli

ORG = "studio"
PUB, PRIV, MINE = f"{ORG}/pub", f"{ORG}/priv", f"{ORG}/mine"
REPOS = (PUB, PRIV, MINE)
READ = frozenset({"read", "xet-read"})
ALL = frozenset({"read", "xet-read", "write", "xet-write", "settings", "delete"})
NONE: frozenset[str] = frozenset()

#: who -> (user, token options): members by role, an outsider, a server admin, limited tokens.
WHO = {
    "adm": ("adm", {}),
    "rdr": ("rdr", {}),
    "ctb": ("ctb", {}),
    "wtr": ("wtr", {}),
    "eve": ("eve", {}),
    "root": ("sysop", {}),
    "wtr_ro": ("wtr", {"write": False}),
    "wtr_repo": ("wtr", {"repos": [PUB]}),
    "wtr_org": ("wtr", {"orgs": [ORG]}),
    "adm_elsewhere": ("adm", {"repos": ["adm/other"]}),
    "adm_ro": ("adm", {"write": False}),
}

#: The policy, by hand: what each caller may do on each repo. studio/pub is public, studio/priv
#: private (both created by wtr), studio/mine private and created by the contributor ctb.
TABLE: dict[str | None, dict[str, frozenset[str]]] = {
    None: {PUB: READ, PRIV: NONE, MINE: NONE},
    "eve": {PUB: READ, PRIV: NONE, MINE: NONE},
    "rdr": {PUB: READ, PRIV: READ, MINE: READ},
    "ctb": {PUB: READ, PRIV: READ, MINE: ALL},
    "wtr": {PUB: ALL, PRIV: ALL, MINE: ALL},
    "adm": {PUB: ALL, PRIV: ALL, MINE: ALL},
    "root": {PUB: ALL, PRIV: ALL, MINE: ALL},
    "wtr_ro": {PUB: READ, PRIV: READ, MINE: READ},
    "wtr_repo": {PUB: ALL, PRIV: NONE, MINE: NONE},
    "wtr_org": {PUB: ALL, PRIV: ALL, MINE: ALL},
    "adm_elsewhere": {PUB: READ, PRIV: NONE, MINE: NONE},
    "adm_ro": {PUB: READ, PRIV: READ, MINE: READ},
}
#: And on the organisation itself: creating a repo in it, managing its members.
ORG_TABLE: dict[str | None, frozenset[str]] = {
    None: NONE, "eve": NONE, "rdr": NONE, "ctb": frozenset({"create"}), "wtr": frozenset({"create"}),
    "adm": frozenset({"create", "manage-members"}), "root": frozenset({"create", "manage-members"}),
    "wtr_ro": NONE, "wtr_repo": NONE, "wtr_org": frozenset({"create"}), "adm_elsewhere": NONE, "adm_ro": NONE,
}


@pytest.fixture(scope="module")
def world(local_hub, tmp_path_factory):  # noqa: ANN001, ANN201
    """The organisation, its members, the tokens of TABLE and the three repos (made over HTTP)."""
    import sqlalchemy as sa
    from sqlmodel import Session

    from lorahub.registry.hub.auth import create_token
    from lorahub.registry.hub.orgs import create_org, set_member
    from lorahub.registry.tables import User

    with Session(local_hub.registry.engine, expire_on_commit=False) as s:
        create_org(s, ORG, admin="adm")
        for user, role in (("rdr", "read"), ("ctb", "contributor"), ("wtr", "write")):
            set_member(s, ORG, user, role, as_operator=True)
        for key, (user, opts) in WHO.items():
            local_hub.tokens[key], _, _ = create_token(s, user, name=key, **opts)
        s.execute(sa.update(User).where(User.name == "sysop").values(is_admin=True))
        s.commit()
    local_hub.create_repo(PUB, user="wtr")
    local_hub.create_repo(PRIV, private=True, user="wtr")
    local_hub.create_repo(MINE, private=True, user="ctb")
    lora = write_kohya_lora(tmp_path_factory.mktemp("orgs") / "x.safetensors", title="orgsecretstyle", seed=21).read_bytes()
    local_hub.upload(PRIV, "orgsecretstyle.safetensors", lora, user="wtr")
    return local_hub, sha256(lora)


def _identity(hub, key: str | None):  # noqa: ANN001, ANN202
    return None if key is None else hub.app.state.lorahub.identify(f"Bearer {hub.tokens[key]}")


def test_the_policy_function_is_the_table(world) -> None:  # noqa: ANN001
    from sqlmodel import Session

    from lorahub.registry.hub.access import RepoRef, allowed
    from lorahub.registry.hub.repos import find_repo

    hub, _ = world
    with Session(hub.registry.engine) as s:
        repos = {r: find_repo(s, "model", r) for r in REPOS}
    wrong = []
    for key, row in TABLE.items():
        ident = _identity(hub, key)
        for repo_id, want in row.items():
            for action in sorted(ALL):
                if allowed(ident, action, repos[repo_id]) != (action in want):
                    wrong.append((key, repo_id, action, action in want))
        for action in ("create", "manage-members"):
            target = RepoRef(namespace=ORG, name="brand-new") if action == "create" else RepoRef(namespace=ORG)
            if allowed(ident, action, target) != (action in ORG_TABLE[key]):
                wrong.append((key, ORG, action, action in ORG_TABLE[key]))
    assert wrong == []


def _refusal(key: str | None, may_read: bool, writing: bool) -> int:
    """The status a refusal is: 401 without a token (for writes), 404 when the caller may not even
    read the repo (no existence leak), else 403."""
    if key is None and writing:
        return 401
    return 404 if not may_read else 403


def test_every_route_agrees_with_the_table(world) -> None:  # noqa: ANN001
    hub, lora_sha = world
    wrong = []

    def check(key: str | None, what: str, got: int, want: int) -> None:
        if got != want:
            wrong.append((key, what, got, want))

    for key, row in TABLE.items():
        listed = {m["id"] for m in hub.request("GET", f"/api/models?author={ORG}", user=key).json()}
        found = {r["sha256"] for r in hub.request("GET", "/api/lorahub/search?q=orgsecretstyle", user=key).json()}
        by_hash = hub.request("GET", f"/api/lorahub/by-hash/{lora_sha}", user=key)
        check(key, "search", lora_sha in found, "read" in row[PRIV])
        check(key, "by-hash", [m["sha256"] for m in by_hash.json()["matches"]], [lora_sha] if "read" in row[PRIV] else [])
        for repo_id, want in row.items():
            may_read = "read" in want
            ok_read = 200 if may_read else 404
            check(key, f"info {repo_id}", hub.request("GET", f"/api/models/{repo_id}", user=key).status_code, ok_read)
            check(key, f"tree {repo_id}", hub.request("GET", f"/api/models/{repo_id}/tree/main", user=key).status_code, ok_read)
            check(key, f"resolve {repo_id}",
                  hub.request("GET", f"/{repo_id}/resolve/main/.gitattributes", user=key).status_code, ok_read)
            check(key, f"listing {repo_id}", repo_id in listed, may_read)
            check(key, f"xet-read {repo_id}",
                  hub.request("GET", f"/api/models/{repo_id}/xet-read-token/main", user=key).status_code,
                  200 if "xet-read" in want else 404)
            for action, method, path, body in (
                ("xet-write", "GET", f"/api/models/{repo_id}/xet-write-token/main", None),
                ("settings", "PUT", f"/api/models/{repo_id}/settings", {"private": repo_id != PUB}),
            ):
                r = hub.request(method, path, user=key, json=body) if body is not None else hub.request(method, path, user=key)
                check(key, f"{action} {repo_id}", r.status_code, 200 if action in want else _refusal(key, may_read, True))
            commit = ndjson({"key": "header", "value": {"summary": f"by {key}"}},
                            {"key": "file", "value": {"path": f"note-{key}.txt", "encoding": "base64",
                                                       "content": base64.b64encode(b"hello").decode()}})
            r = hub.request("POST", f"/api/models/{repo_id}/commit/main", user=key, content=commit, headers=NDJSON)
            check(key, f"write {repo_id}", r.status_code, 200 if "write" in want else _refusal(key, may_read, True))
            if "delete" not in want:  # allowed deletes are done below, on repos made for it
                r = hub.request("DELETE", "/api/repos/delete", user=key,
                                json={"name": repo_id.split("/")[1], "organization": ORG, "type": "model"})
                check(key, f"delete {repo_id}", r.status_code, _refusal(key, may_read, True))
        r = hub.request("POST", "/api/repos/create", user=key, json={"name": f"new-{key or 'anon'}", "organization": ORG})
        check(key, "create", r.status_code, 200 if "create" in ORG_TABLE[key] else (401 if key is None else 403))
        r = hub.request("PUT", f"/api/organizations/{ORG}/members/rdr/role", user=key, json={"role": "read"})
        sees_members = key is not None and "read" in TABLE[key][PRIV]
        want = 200 if "manage-members" in ORG_TABLE[key] else (401 if key is None else (403 if sees_members else 404))
        check(key, "manage-members", r.status_code, want)
    assert wrong == []
    # the repos are still there, private ones private
    assert all(hub.request("GET", f"/api/models/{r}", user="adm").json()["private"] == (r != PUB) for r in REPOS)


def test_deletes_follow_the_roles(world) -> None:  # noqa: ANN001
    """A contributor deletes the repos they created, not others'; write deletes any; read none."""
    hub, _ = world
    delete = {"organization": ORG, "type": "model"}
    hub.create_repo(f"{ORG}/ctb-scratch", private=True, user="ctb")
    hub.create_repo(f"{ORG}/wtr-scratch", private=True, user="wtr")
    assert hub.request("DELETE", "/api/repos/delete", user="ctb", json={"name": "wtr-scratch", **delete}).status_code == 403
    assert hub.request("DELETE", "/api/repos/delete", user="rdr", json={"name": "ctb-scratch", **delete}).status_code == 403
    assert hub.request("DELETE", "/api/repos/delete", user="eve", json={"name": "ctb-scratch", **delete}).status_code == 404
    assert hub.request("DELETE", "/api/repos/delete", user="ctb", json={"name": "ctb-scratch", **delete}).status_code == 200
    assert hub.request("DELETE", "/api/repos/delete", user="wtr", json={"name": "wtr-scratch", **delete}).status_code == 200
    assert hub.request("GET", f"/api/models/{ORG}/ctb-scratch", user="adm").status_code == 404


def test_membership_changes_apply_at_once(world) -> None:  # noqa: ANN001
    """Members managed by an org admin over HTTP: a removed member (and the Xet token they hold)
    loses the private repos at the next request; a non-admin cannot add anyone."""
    hub, _ = world
    r = hub.request("PUT", f"/api/organizations/{ORG}/members/eve/role", user="adm", json={"role": "read"})
    assert r.status_code == 200, r.text
    assert hub.request("GET", f"/api/models/{PRIV}", user="eve").status_code == 200
    xet = hub.request("GET", f"/api/models/{PRIV}/xet-read-token/main", user="eve")
    assert xet.status_code == 200
    cas, tok = xet.headers["X-Xet-Cas-Url"], xet.headers["X-Xet-Access-Token"]
    members = hub.request("GET", f"/api/organizations/{ORG}/members", user="eve").json()
    assert {"user": "eve", "role": "read"}.items() <= next(m for m in members if m["user"] == "eve").items()
    assert hub.request("PUT", f"/api/organizations/{ORG}/members/eve/role", user="eve", json={"role": "admin"}).status_code == 403
    assert hub.request("PUT", f"/api/organizations/{ORG}/members/nobody-here/role", user="adm", json={"role": "read"}).status_code == 404
    assert hub.request("PUT", f"/api/organizations/{ORG}/members/eve/role", user="adm", json={"role": "owner"}).status_code == 400
    assert hub.request("DELETE", f"/api/organizations/{ORG}/members/eve", user="adm").status_code == 200
    assert hub.request("GET", f"/api/models/{PRIV}", user="eve").status_code == 404
    assert hub.request("GET", f"/api/organizations/{ORG}/members", user="eve").status_code == 404
    assert hub.request("GET", f"{cas}/v1/reconstructions/{'0' * 64}", user=None,
                       headers={"Authorization": f"Bearer {tok}"}).status_code == 401


def test_stock_client_whoami_create_repo_and_members(hub_server, tmp_path: Path) -> None:  # noqa: ANN001
    """huggingface_hub itself: whoami lists the orgs with the role, create_repo in an organisation,
    upload as a contributor to its own repo only, list_organization_members."""
    from huggingface_hub.errors import HfHubHTTPError
    from sqlmodel import Session

    from lorahub.hub.endpoint import hf_api
    from lorahub.registry.database import make_engine
    from lorahub.registry.hub.auth import create_token
    from lorahub.registry.hub.orgs import create_org, set_member

    engine = make_engine(hub_server.database)
    try:
        with Session(engine, expire_on_commit=False) as s:
            create_org(s, "Team", admin="alice")
            set_member(s, "team", "bob", "contributor", as_operator=True)
            ro, _, _ = create_token(s, "alice", write=False)
    finally:
        engine.dispose()
    alice, bob = hub_server.api("alice"), hub_server.api("bob")
    me = alice.whoami()
    assert [(o["name"], o["roleInOrg"]) for o in me["orgs"]] == [("Team", "admin")]
    assert me["auth"]["accessToken"]["role"] == "write"
    assert hf_api(hub_server.url, token=ro).whoami()["auth"]["accessToken"]["role"] == "read"
    url = alice.create_repo("Team/shared", private=True)
    assert url.repo_id == "Team/shared"
    assert bob.create_repo("team/bobs").repo_id == "Team/bobs"
    (tmp_path / "n.txt").write_text("x")
    bob.upload_file(path_or_fileobj=str(tmp_path / "n.txt"), path_in_repo="n.txt", repo_id="Team/bobs")
    with pytest.raises(HfHubHTTPError) as exc:
        bob.upload_file(path_or_fileobj=str(tmp_path / "n.txt"), path_in_repo="n.txt", repo_id="Team/shared")
    assert exc.value.response.status_code == 403
    members = {m.username: m.role for m in alice.list_organization_members("Team")}
    assert members == {"alice": "admin", "bob": "contributor"}
    assert "Team/shared" not in {m.id for m in hf_api(hub_server.url, token=False).list_models(author="Team")}
    assert "Team/shared" in {m.id for m in bob.list_models(author="Team")}


def test_org_commands_one_line_errors(tmp_path: Path) -> None:
    """`lorahub org` on the server's database: wrong input is one line and a non-zero exit."""
    db = ["--data", str(tmp_path)]
    run = CliRunner()
    ok = run.invoke(cli, ["org", "create", "crew", "--admin", "ann", "--json", *db])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout) == {"org": "crew", "admin": "ann"}
    for args, code, words in (
        (["org", "create", "ann"], 1, "taken"),            # a user's name
        (["org", "create", "CREW"], 1, "taken"),           # names ignore case
        (["org", "add", "nope", "ann"], 1, "no organisation"),
        (["org", "add", "crew", "ann", "--role", "owner"], 2, "owner"),
        (["org", "add", "crew", "crew"], 1, "is an organisation"),
        (["org", "remove", "crew", "zed"], 1, "no member"),
        (["token", "create", "--user", "crew"], 1, "is an organisation"),
        (["token", "create", "--user", "ann", "--org", "nope"], 1, "no organisation"),
        (["token", "create", "--user", "ann", "--repo", "no-slash"], 2, "NAMESPACE/NAME"),
    ):
        r = run.invoke(cli, [*args, *db])
        assert r.exit_code == code, (args, r.output)
        errors = [line for line in r.output.splitlines() if line.startswith("Error")]
        assert len(errors) == 1 and words in errors[0] and "Traceback" not in r.output, r.output
    add = run.invoke(cli, ["org", "add", "crew", "bea", "--role", "write", "--json", *db])
    assert json.loads(add.stdout) == {"org": "crew", "user": "bea", "role": "write", "previous": None}
    again = run.invoke(cli, ["org", "add", "crew", "bea", "--role", "read", "--json", *db])
    assert json.loads(again.stdout)["previous"] == "write"
    gone = run.invoke(cli, ["org", "remove", "crew", "bea", "--json", *db])
    assert json.loads(gone.stdout) == {"org": "crew", "user": "bea", "role": "read"}
    listed = json.loads(run.invoke(cli, ["org", "list", "--json", *db]).stdout)
    assert listed == [{"org": "crew", "members": [{"user": "ann", "role": "admin"}]}]
