"""The Hugging Face Hub compatible routes (see ``docs/server.md``).

Not part of the OpenAPI schema (they follow the Hub's protocol, not ours). ``{tp}`` is the plural
repo type (``models``, ``datasets``, ``spaces``); file routes use the Hub's URL prefixes
(``/<ns>/<name>/resolve/...``, ``/datasets/<ns>/<name>/resolve/...``).

Revisions may contain ``/`` (``refs/pr/1``) and arrive URL-quoted (``refs%2Fpr%2F1``), which the
router has already decoded; the tree and resolve routes therefore split the *raw* path.
"""

from __future__ import annotations

import mimetypes
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from lorahub.hub.card import MAX_CARD_BYTES, check_card
from lorahub.registry.hub.auth import UPLOAD_URL_TTL_S
from lorahub.registry.hub.errors import (
    BadRequest,
    Conflict,
    EntryNotFound,
    Forbidden,
    HubApiError,
    Unauthorized,
    UnsupportedMediaType,
)
from lorahub.registry.hub.gitobj import is_sha256
from lorahub.registry.hub.names import PLURAL_TO_TYPE, URL_PREFIX, check_path, repo_id_of
from lorahub.registry.hub.trees import paths_info as tree_paths_info
from lorahub.registry.hub.trees import tree_page

from . import hub_views
from .app import base_url, error_response, identify, is_json_type, read_body, read_json, state_of
from .blobs import blob_response

router = APIRouter(include_in_schema=False)

#: GETs of these files count as downloads of the repo (as on the Hub: weights and pipeline index).
COUNTED_SUFFIXES = (".safetensors",)
COUNTED_NAMES = ("model_index.json",)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _repo_type(tp: str) -> str:
    rt = PLURAL_TO_TYPE.get(tp)
    if rt is None:
        raise HubApiError("Not Found", status=404)
    return rt


def _repo_url(request: Request, repo_type: str, repo_id: str) -> str:
    return f"{base_url(request)}/{URL_PREFIX[repo_type]}{repo_id}"


def _raw_segments(request: Request) -> list[str]:
    raw = request.scope.get("raw_path") or request.url.path.encode()
    return raw.decode("latin-1").split("/")


def _unquote(segment: str) -> str:
    """A percent-decoded raw path segment; bytes that are not UTF-8 (``%FF``, an overlong ``%C0%AE``,
    an encoded surrogate ``%ED%A0%80``) are a 400, not a replacement character."""
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(f"invalid URL: {segment[:80]!r} does not decode to UTF-8") from None


def _split_rev_path(segments: list[str]) -> tuple[str, str]:
    """``[rev, *path]`` raw segments -> (revision, path); handles an unquoted ``refs/pr/N``."""
    if not segments or not segments[0]:
        raise BadRequest("missing revision")
    first = _unquote(segments[0])
    if first == "refs" and len(segments) >= 3:
        rev = "/".join(_unquote(s) for s in segments[:3])
        rest = segments[3:]
    else:
        rev, rest = first, segments[1:]
    path = "/".join(_unquote(s) for s in rest)
    return rev, path


# -- identity ------------------------------------------------------------------------------


@router.get("/api/whoami-v2")
async def whoami(request: Request) -> JSONResponse:
    ident = await identify(request)
    if ident is None:
        raise Unauthorized("Invalid credentials in Authorization header", headers={"X-Error-Message": "Invalid credentials in Authorization header"})
    return JSONResponse(
        {
            "type": "user",
            "id": str(ident.user_id),
            "name": ident.name,
            "fullname": ident.name,
            "isPro": False,
            "canPay": False,
            "emailVerified": False,
            "orgs": [
                {
                    "type": "org",
                    "id": str(org_id),
                    "name": org,
                    "fullname": org,
                    "roleInOrg": role,
                    "isEnterprise": False,
                    "canPay": False,
                    "avatarUrl": "",
                }
                for org, org_id, role in ident.orgs
            ],
            "auth": {"type": "access_token", "accessToken": _access_token_view(ident)},
        }
    )


def _access_token_view(ident: Any) -> dict[str, Any]:
    """``auth.accessToken`` as the Hub shapes it: role ``read``/``write``, or ``fineGrained`` with the
    scopes (``entity`` and ``permissions``) for a token limited to named repos and namespaces."""
    out: dict[str, Any] = {"displayName": f"token {ident.token_id}", "role": "write" if ident.can_write else "read"}
    if ident.scopes is not None:
        perms = ["repo.content.read", "repo.write"] if ident.can_write else ["repo.content.read"]
        own = ident.name.lower()
        out["role"] = "fineGrained"
        out["fineGrained"] = {
            "canReadGatedRepos": False,
            "global": [],
            "scoped": [
                {
                    "entity": {"type": "model" if kind == "repo" else ("user" if name == own else "org"), "name": name},
                    "permissions": perms,
                }
                for kind, name in ident.scopes
            ],
        }
    return out


# -- organisations ---------------------------------------------------------------------


@router.get("/api/organizations/{org}/members")
async def org_members(org: str, request: Request) -> JSONResponse:
    """``list_organization_members``: to members (any role) and server admins; others get ``404``."""
    st = state_of(request)
    ident = await identify(request)
    rows = await run_in_threadpool(st.orgs.members, ident, org)
    return JSONResponse([{"type": "user", "user": u, "fullname": u, "avatarUrl": "", "role": r} for u, r in rows])


@router.put("/api/organizations/{org}/members/{user}/role")
async def org_member_role(org: str, user: str, request: Request) -> JSONResponse:
    """Set a member's role (the Hub's route); here it also adds an existing user who is no member yet.
    Org admins and server admins only (``manage-members``)."""
    st = state_of(request)
    body = await read_json(request, st.settings.max_json_bytes)
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object with 'role'")
    ident = await identify(request)
    name, previous = await run_in_threadpool(st.orgs.set_role, ident, org, user, body.get("role"))
    return JSONResponse({"user": name, "role": body.get("role"), "previous": previous})


@router.delete("/api/organizations/{org}/members/{user}")
async def org_member_remove(org: str, user: str, request: Request) -> JSONResponse:
    """Remove a member (lorahub's route; the Hub removes members in its web pages). ``manage-members``."""
    st = state_of(request)
    ident = await identify(request)
    role = await run_in_threadpool(st.orgs.remove, ident, org, user)
    return JSONResponse({"user": user, "removed": role})


# -- repos -------------------------------------------------------------------------------


@router.post("/api/repos/create")
async def create_repo(request: Request) -> JSONResponse:
    st = state_of(request)
    body = await read_json(request, st.settings.max_json_bytes)
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    ident = await identify(request)
    repo_type = body.get("type") or "model"
    visibility = body.get("visibility")
    private = body.get("private")
    if visibility is not None:
        private = visibility in ("private", "protected")
    if not isinstance(body.get("name"), str) or (body.get("organization") is not None and not isinstance(body.get("organization"), str)):
        raise BadRequest("'name' (and 'organization') must be strings")
    try:
        repo, _ = await run_in_threadpool(
            st.repos.create, ident, repo_type=repo_type, name=body["name"], organization=body.get("organization"), private=bool(private)
        )
    except Conflict as exc:
        existing = exc.extra.get("repo")
        if existing is not None:
            rid = repo_id_of(existing)
            return JSONResponse({"error": exc.message, "url": _repo_url(request, existing.repo_type, rid)}, status_code=409)
        raise
    rid = repo_id_of(repo)
    return JSONResponse({"url": _repo_url(request, repo.repo_type, rid), "name": rid, "id": repo.public_id})


@router.delete("/api/repos/delete")
async def delete_repo(request: Request) -> JSONResponse:
    st = state_of(request)
    body = await read_json(request, st.settings.max_json_bytes)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise BadRequest("body must be a JSON object with 'name'")
    ident = await identify(request)
    name = body["name"]
    org = body.get("organization")
    repo_id = f"{org}/{name}" if org else (name if "/" in name else f"{ident.name if ident else ''}/{name}")
    await run_in_threadpool(st.repos.delete, ident, body.get("type") or "model", repo_id)
    return JSONResponse({"deleted": repo_id})


@router.put("/api/{tp}/{ns}/{name}/settings")
async def repo_settings(tp: str, ns: str, name: str, request: Request) -> JSONResponse:
    st = state_of(request)
    rt = _repo_type(tp)
    body = await read_json(request, st.settings.max_json_bytes)
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    ident = await identify(request)
    private = body.get("private")
    if body.get("visibility") is not None:
        private = body["visibility"] in ("private", "protected")
    if private is not None and not isinstance(private, bool):
        raise BadRequest("'private' must be a boolean")
    repo = await run_in_threadpool(st.repos.update_settings, ident, rt, f"{ns}/{name}", private)
    return JSONResponse({"private": repo.private})


@router.post("/api/validate-yaml")
async def validate_yaml(request: Request) -> JSONResponse:
    st = state_of(request)
    try:
        body = await read_json(request, min(st.settings.max_json_bytes, 4 * MAX_CARD_BYTES))
    except HubApiError as exc:
        return JSONResponse({"errors": [{"message": exc.message}], "warnings": []}, status_code=exc.status)
    content = body.get("content") if isinstance(body, dict) else None
    if not isinstance(content, str):
        return JSONResponse({"errors": [{"message": "'content' must be a string"}], "warnings": []}, status_code=400)
    errors, warnings = check_card(content)
    return JSONResponse(
        {"errors": [{"message": m} for m in errors], "warnings": [{"message": m} for m in warnings]},
        status_code=400 if errors else 200,
    )


# -- reading -----------------------------------------------------------------------------


def _list_repos(request: Request, rt: str) -> tuple[list[dict[str, Any]], str | None]:
    st = state_of(request)
    ident = st.identify(request.headers.get("authorization"))
    q = request.query_params
    try:
        limit = int(q.get("limit") or 1000)
        offset = int(q.get("offset") or 0)
    except ValueError:
        raise BadRequest("limit and offset must be integers") from None
    page = max(1, min(limit, 1000))
    offset = max(0, offset)
    expand = set(q.getlist("expand"))
    full = _truthy(q.get("full"))
    want_card = _truthy(q.get("cardData")) or full or "cardData" in expand
    want_files = full or "siblings" in expand
    repos, files, more = st.repos.listing(
        ident,
        with_files=want_files,
        repo_type=rt,
        search=q.get("search"),
        author=q.get("author"),
        filters=[f for f in q.getlist("filter") if f],
        pipeline_tag=q.get("pipeline_tag"),
        sort=q.get("sort"),
        offset=offset,
        limit=page,
    )
    base = base_url(request)
    items = [hub_views.repo_json(r, files=files.get(r.id) if want_files else None, card_data=want_card) for r in repos]
    nxt = None
    if more:
        params = [(k, v) for k, v in q.multi_items() if k != "offset"]
        params.append(("offset", str(offset + page)))
        nxt = f"{base}{request.url.path}?{urlencode(params)}"
    return items, nxt


@router.get("/api/{tp}")
async def list_repos(tp: str, request: Request) -> JSONResponse:
    rt = _repo_type(tp)
    items, nxt = await run_in_threadpool(_list_repos, request, rt)
    headers = {"Link": f'<{nxt}>; rel="next"'} if nxt else {}
    return JSONResponse(items, headers=headers)


def _info(request: Request, rt: str, repo_id: str, rev: str | None) -> dict[str, Any]:
    st = state_of(request)
    ident = st.identify(request.headers.get("authorization"))
    blobs = _truthy(request.query_params.get("blobs"))
    repo, commit, files = st.repos.revision(ident, rt, repo_id, rev)
    return hub_views.repo_json(repo, commit=commit, files=files, blobs=blobs)


@router.get("/api/{tp}/{ns}/{name}")
async def repo_info(tp: str, ns: str, name: str, request: Request) -> JSONResponse:
    rt = _repo_type(tp)
    return JSONResponse(await run_in_threadpool(_info, request, rt, f"{ns}/{name}", None))


@router.get("/api/{tp}/{ns}/{name}/revision/{rev:path}")
async def repo_info_rev(tp: str, ns: str, name: str, rev: str, request: Request) -> JSONResponse:
    rt = _repo_type(tp)
    return JSONResponse(await run_in_threadpool(_info, request, rt, f"{ns}/{name}", rev))


def _tree(request: Request, rt: str, repo_id: str, rev: str, path: str) -> tuple[list[dict[str, Any]], str | None]:
    st = state_of(request)
    ident = st.identify(request.headers.get("authorization"))
    q = request.query_params
    recursive = _truthy(q.get("recursive"))
    expand = _truthy(q.get("expand"))
    try:
        cursor = max(0, int(q.get("cursor") or 0))
        limit = int(q.get("limit") or (50 if expand else 1000))
    except ValueError:
        raise BadRequest("cursor and limit must be integers") from None
    limit = max(1, min(limit, 1000))
    if path:
        check_path(path)
    _, _, files = st.repos.revision(ident, rt, repo_id, rev)
    items, total = tree_page(files, path, recursive, cursor, limit)
    page = hub_views.tree_items(items)
    nxt = None
    if cursor + limit < total:
        params = [(k, v) for k, v in q.multi_items() if k != "cursor"]
        params.append(("cursor", str(cursor + limit)))
        nxt = f"{base_url(request)}{request.url.path}?{urlencode(params)}"
    return page, nxt


@router.get("/api/{tp}/{ns}/{name}/tree/{rest:path}")
async def list_tree(tp: str, ns: str, name: str, rest: str, request: Request) -> JSONResponse:
    rt = _repo_type(tp)
    segs = _raw_segments(request)
    # ["", "api", tp, ns, name, "tree", rev, *path]
    rev, path = _split_rev_path(segs[6:])
    items, nxt = await run_in_threadpool(_tree, request, rt, f"{ns}/{name}", rev, path.strip("/"))
    headers = {"Link": f'<{nxt}>; rel="next"'} if nxt else {}
    return JSONResponse(items, headers=headers)


@router.post("/api/{tp}/{ns}/{name}/paths-info/{rev:path}")
async def paths_info(tp: str, ns: str, name: str, rev: str, request: Request) -> JSONResponse:
    rt = _repo_type(tp)
    st = state_of(request)
    ctype = request.headers.get("content-type", "")
    if is_json_type(ctype):
        body = await read_json(request, st.settings.max_json_bytes)
        paths = body.get("paths") if isinstance(body, dict) else None
    else:  # huggingface_hub sends a form here
        if ctype and not ctype.lower().startswith("application/x-www-form-urlencoded"):
            raise UnsupportedMediaType(f"send a form or JSON body, not {ctype[:60]!r}")
        raw = await read_body(request, st.settings.max_json_bytes)
        from urllib.parse import parse_qs

        paths = parse_qs(raw.decode("utf-8", errors="replace")).get("paths", [])
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths) or len(paths) > 10_000:
        raise BadRequest("'paths' must be a list of strings")

    def work() -> list[dict[str, Any]]:
        ident = st.identify(request.headers.get("authorization"))
        _, _, files = st.repos.revision(ident, rt, f"{ns}/{name}", rev)
        return hub_views.tree_items(tree_paths_info(files, paths))

    return JSONResponse(await run_in_threadpool(work))


@router.get("/api/{tp}/{ns}/{name}/refs")
async def list_refs(tp: str, ns: str, name: str, request: Request) -> JSONResponse:
    rt = _repo_type(tp)
    st = state_of(request)

    def work() -> dict[str, Any]:
        ident = st.identify(request.headers.get("authorization"))
        return hub_views.refs_json(st.repos.refs(ident, rt, f"{ns}/{name}"))

    return JSONResponse(await run_in_threadpool(work))


@router.get("/api/{tp}/{ns}/{name}/commits/{rev:path}")
async def list_commits(tp: str, ns: str, name: str, rev: str, request: Request) -> JSONResponse:
    rt = _repo_type(tp)
    st = state_of(request)

    def work() -> list[dict[str, Any]]:
        ident = st.identify(request.headers.get("authorization"))
        return [hub_views.commit_json(c) for c in st.repos.history(ident, rt, f"{ns}/{name}", rev)]

    return JSONResponse(await run_in_threadpool(work))


# -- Xet: the token routes (the CAS itself is xet_api) ---------------------------------------


@router.get("/api/{tp}/{ns}/{name}/xet-write-token/{rev:path}")
async def xet_write_token(tp: str, ns: str, name: str, rev: str, request: Request) -> JSONResponse:
    return await _xet_token(request, tp, ns, name, write=True)


@router.get("/api/{tp}/{ns}/{name}/xet-read-token/{rev:path}")
async def xet_read_token(tp: str, ns: str, name: str, rev: str, request: Request) -> JSONResponse:
    return await _xet_token(request, tp, ns, name, write=False)


async def _xet_token(request: Request, tp: str, ns: str, name: str, *, write: bool) -> JSONResponse:
    """A short-lived CAS token bound to the user, the repo and the right (read or write): in the
    headers huggingface_hub reads and in the JSON body hf_xet reads when it refreshes."""
    from .xet_api import cas_url

    rt = _repo_type(tp)
    st = state_of(request)
    ident = await identify(request)
    token, exp = await run_in_threadpool(st.xet.issue_token, ident, rt, f"{ns}/{name}", write=write)
    url = cas_url(request)
    return JSONResponse(
        {"casUrl": url, "accessToken": token, "exp": exp},
        headers={"X-Xet-Cas-Url": url, "X-Xet-Access-Token": token, "X-Xet-Token-Expiration": str(exp), "Cache-Control": "no-store"},
    )


# -- upload --------------------------------------------------------------------------------


@router.post("/api/{tp}/{ns}/{name}/preupload/{rev:path}")
async def preupload(tp: str, ns: str, name: str, rev: str, request: Request) -> JSONResponse:
    rt = _repo_type(tp)
    st = state_of(request)
    body = await read_json(request, st.settings.max_json_bytes)
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object with 'files'")
    create_pr = _truthy(request.query_params.get("create_pr"))

    def work() -> list[dict[str, Any]]:
        ident = st.identify(request.headers.get("authorization"))
        return st.lfs.preupload(ident, rt, f"{ns}/{name}", rev, body.get("files"), create_pr=create_pr)

    return JSONResponse({"files": await run_in_threadpool(work)})


async def _lfs_batch(request: Request, rt: str, ns: str, repo_git: str) -> JSONResponse:
    st = state_of(request)
    if not repo_git.endswith(".git"):
        raise HubApiError("Not Found", status=404)
    name = repo_git[: -len(".git")]
    body = await read_json(request, st.settings.max_json_bytes)
    base = base_url(request)

    def work() -> dict[str, Any]:
        ident = st.identify(request.headers.get("authorization"))
        repo, objects, to_sign = st.lfs.batch(ident, rt, f"{ns}/{name}", body)
        assert ident is not None
        signer = st.auth.upload_signer
        wanted = dict(to_sign)
        for obj in objects:
            if obj.get("error") or obj["oid"] not in wanted:
                continue
            fields = signer.upload_fields(repo.id, repo.key, obj["oid"], obj["size"], ident.user_id)
            obj["actions"] = {
                "upload": {"href": f"{base}/api/lorahub/lfs/{repo.public_id}/objects/{obj['oid']}?{urlencode(fields)}", "expires_in": UPLOAD_URL_TTL_S},
                "verify": {"href": f"{base}/api/lorahub/lfs/{repo.public_id}/verify"},
            }
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    result = await run_in_threadpool(work)
    return JSONResponse(result, media_type="application/vnd.git-lfs+json")


@router.post("/{ns}/{repo_git}/info/lfs/objects/batch")
async def lfs_batch_model(ns: str, repo_git: str, request: Request) -> JSONResponse:
    return await _lfs_batch(request, "model", ns, repo_git)


@router.post("/datasets/{ns}/{repo_git}/info/lfs/objects/batch")
async def lfs_batch_dataset(ns: str, repo_git: str, request: Request) -> JSONResponse:
    return await _lfs_batch(request, "dataset", ns, repo_git)


@router.post("/spaces/{ns}/{repo_git}/info/lfs/objects/batch")
async def lfs_batch_space(ns: str, repo_git: str, request: Request) -> JSONResponse:
    return await _lfs_batch(request, "space", ns, repo_git)


@router.put("/api/lorahub/lfs/{public_id}/objects/{oid}")
async def lfs_upload(public_id: str, oid: str, request: Request) -> Response:
    """Basic-transfer PUT of one LFS object to a pre-signed URL (no Authorization header).

    The signature covers the repo's primary key *and* its name (``type/namespace/name``), both read
    from the database now: a URL handed out for a repo that was deleted since is refused, even when
    a new repo of the same name exists (it has another key; keys are never reused). A URL whose
    repo does not exist gets the same 403 as a forged one (no probing for repos)."""
    import time

    st = state_of(request)
    q = request.query_params
    try:
        size, exp, user_id = int(q.get("size", "")), int(q.get("exp", "")), int(q.get("u", ""))
    except ValueError:
        raise Forbidden("invalid upload URL") from None
    repo = await run_in_threadpool(st.repos.by_public_id, public_id) if is_sha256(oid) else None
    if repo is None or not st.auth.upload_signer.check(q.get("sig", ""), "upload", repo.id, repo.key, oid, size, user_id, exp):
        raise Forbidden("invalid upload URL signature")
    if exp < time.time():
        raise Forbidden("this upload URL has expired; ask the LFS batch API for a new one")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) != size):
        raise BadRequest(f"Content-Length {length} differs from the announced size {size}")
    writer = st.store.begin(expected_size=size)
    try:
        async for chunk in request.stream():
            writer.write(chunk)
        stored = await run_in_threadpool(writer.commit, oid)
    except BaseException:
        writer.abort()
        raise
    await run_in_threadpool(st.lfs.record_upload, repo.id, stored)
    return Response(status_code=200)


@router.post("/api/lorahub/lfs/{public_id}/verify")
async def lfs_verify(public_id: str, request: Request) -> JSONResponse:
    st = state_of(request)
    body = await read_json(request, 64 * 1024)
    oid = body.get("oid") if isinstance(body, dict) else None
    size = body.get("size") if isinstance(body, dict) else None
    if not is_sha256(oid) or not isinstance(size, int):
        raise BadRequest("verify needs {oid, size}")

    def work() -> None:
        ident = st.identify(request.headers.get("authorization"))
        st.lfs.verify(ident, public_id, oid, size)

    await run_in_threadpool(work)
    return JSONResponse({"message": "ok"})


@router.post("/api/{tp}/{ns}/{name}/commit/{rev:path}")
async def commit(tp: str, ns: str, name: str, rev: str, request: Request) -> JSONResponse:
    rt = _repo_type(tp)
    st = state_of(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-seq"):
        raise UnsupportedMediaType("commits are NDJSON: send Content-Type: application/x-ndjson")
    ident = await identify(request)
    if ident is None:
        raise Unauthorized("authentication required: send a write token (Authorization: Bearer lh_...)")
    body = await read_body(request, st.settings.max_commit_bytes)
    create_pr = _truthy(request.query_params.get("create_pr"))
    result = await run_in_threadpool(st.commits.commit, ident, rt, f"{ns}/{name}", rev, body, create_pr=create_pr)
    url = _repo_url(request, rt, result.repo_id or f"{ns}/{name}")
    return JSONResponse(
        {
            "success": True,
            "commitOid": result.oid,
            "commitUrl": f"{url}/commit/{result.oid}",
            "pullRequestUrl": f"{url}/discussions/{result.pr_num}" if result.pr_num is not None else None,
        }
    )


# -- download ------------------------------------------------------------------------------


def _resolve(request: Request, rt: str, repo_id: str, rev: str, path: str) -> tuple[Any, Any, str, Any]:
    st = state_of(request)
    ident = st.identify(request.headers.get("authorization"))
    repo, commit, entry = st.repos.file(ident, rt, repo_id, rev, path)
    return repo, commit, path, entry


async def _download(request: Request, rt: str, prefix_len: int) -> Response:
    st = state_of(request)
    segs = _raw_segments(request)
    # ["", (prefix), ns, name, "resolve", rev, *path]
    ns, name = _unquote(segs[1 + prefix_len]), _unquote(segs[2 + prefix_len])
    rev, path = _split_rev_path(segs[4 + prefix_len :])
    if path:
        check_path(path)
    repo, commit, path, entry = await run_in_threadpool(_resolve, request, rt, f"{ns}/{name}", rev, path)
    if entry is None:
        exc = EntryNotFound(f"{path or '(no path)'} does not exist at revision {commit.oid}", headers={"X-Repo-Commit": commit.oid})
        return error_response(exc)
    etag = entry.sha256 if entry.lfs else entry.git_oid
    headers = {
        "X-Repo-Commit": commit.oid,
        "ETag": f'"{etag}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=0, must-revalidate",
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(PurePosixPath(path).name)}",
    }
    if entry.lfs:
        headers["X-Linked-Etag"] = f'"{entry.sha256}"'
        headers["X-Linked-Size"] = str(entry.size)
        xet_hash = await run_in_threadpool(st.xet.file_for_sha256, entry.sha256, repo.id)
        if xet_hash is not None:
            # Stock clients with hf_xet reconstruct from the CAS; curl and browsers GET the bytes below.
            tp = {"model": "models", "dataset": "datasets", "space": "spaces"}.get(rt, f"{rt}s")
            headers["X-Xet-Hash"] = xet_hash
            headers["Link"] = f'<{base_url(request)}/api/{tp}/{repo.namespace}/{repo.name}/xet-read-token/{commit.oid}>; rel="xet-auth"'
    media = mimetypes.guess_type(PurePosixPath(path).name)[0] or "application/octet-stream"
    background = None
    if (
        request.method == "GET"
        and "range" not in request.headers
        and (path.endswith(COUNTED_SUFFIXES) or PurePosixPath(path).name in COUNTED_NAMES)
    ):
        background = BackgroundTask(run_in_threadpool, st.repos.count_download, repo.id)
    if entry.size == 0:
        headers["Content-Length"] = "0"
        return Response(b"", headers=headers, media_type=media, background=background)
    return await blob_response(st.store, entry.sha256, entry.size, request.method, headers=headers, media_type=media,
                               background=background, what=path)


@router.api_route("/datasets/{ns}/{name}/resolve/{rest:path}", methods=["GET", "HEAD"])
async def resolve_dataset(ns: str, name: str, rest: str, request: Request) -> Response:
    return await _download(request, "dataset", 1)


@router.api_route("/spaces/{ns}/{name}/resolve/{rest:path}", methods=["GET", "HEAD"])
async def resolve_space(ns: str, name: str, rest: str, request: Request) -> Response:
    return await _download(request, "space", 1)


@router.api_route("/{ns}/{name}/resolve/{rest:path}", methods=["GET", "HEAD"])
async def resolve_model(ns: str, name: str, rest: str, request: Request) -> Response:
    return await _download(request, "model", 0)
