"""The Civitai-compatible read API (``/api/v1/...``, ``/api/download/models/...``), as Civitai's public
REST API answers it: tools that speak Civitai (A1111/Forge and ComfyUI extensions, download managers,
``lorahub resolve --civitai``) can be pointed at this server. The logic is :mod:`lorahub.registry.hub.civitai`.

Authentication is the Hub API's (``Authorization: Bearer lh_...``): with a token, the caller also sees
the private repos it may read; without, public ones only; a bad token is a ``401``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool  # the download count: a write

from lorahub.registry.hub.civitai import CivitaiApi, dumps, parse_batch, parse_hash, parse_id, parse_list

from .app import base_url, read_json, state_of
from .blobs import blob_response
from .reads import run_read

#: Not in the OpenAPI document: like the Hub routes, they follow another API's protocol (docs/server.md).
router = APIRouter(tags=["civitai"], include_in_schema=False)

#: Largest batch body: 100 hashes of 64 hex digits, quoted, with room for spaces.
MAX_BATCH_BODY = 16 * 1024


def _api(request: Request) -> CivitaiApi:
    return state_of(request).civitai


def _json(data: Any) -> Response:
    return Response(dumps(data), media_type="application/json")


def _ident(request: Request) -> Any:
    return state_of(request).identify(request.headers.get("authorization"))


@router.get("/api/v1/model-versions/by-hash/{hash}", summary="Civitai: the model version of a file hash")
async def version_by_hash(hash: str, request: Request) -> Response:
    h = parse_hash(hash)
    base = base_url(request)

    def work() -> list[dict[str, Any]]:
        return _api(request).by_hashes(_ident(request), [h], base)

    found = await run_read(work, state_of(request))
    if not found:
        return Response(dumps({"error": "Model not found"}), status_code=404, media_type="application/json")
    return _json(found[0])


@router.post("/api/v1/model-versions/by-hash", summary="Civitai: the model versions of up to 100 file hashes")
async def versions_by_hashes(request: Request) -> Response:
    hashes = parse_batch(await read_json(request, MAX_BATCH_BODY))
    base = base_url(request)

    def work() -> list[dict[str, Any]]:
        return _api(request).by_hashes(_ident(request), hashes, base)

    return _json(await run_read(work, state_of(request), light=False))  # up to 100 hashes


@router.get("/api/v1/model-versions/{version_id}", summary="Civitai: a model version")
async def version(version_id: str, request: Request) -> Response:
    vid = parse_id(version_id, "model version id")
    base = base_url(request)
    return _json(await run_read(lambda: _api(request).version(_ident(request), vid, base), state_of(request)))


@router.get("/api/v1/models/{model_id}", summary="Civitai: a model")
async def model(model_id: str, request: Request) -> Response:
    mid = parse_id(model_id, "model id")
    base = base_url(request)
    return _json(await run_read(lambda: _api(request).model(_ident(request), mid, base), state_of(request)))


@router.get("/api/v1/models", summary="Civitai: search models")
async def models(request: Request) -> Response:
    q = parse_list(request.query_params)
    base = base_url(request)
    # up to 100 models, each with its versions: tens of milliseconds, not for the event loop
    items, next_offset = await run_read(lambda: _api(request).search(_ident(request), q, base), state_of(request),
                                        light=False)
    metadata: dict[str, Any] = {}
    if next_offset is not None:
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("cursor", "page")]
        if q.page_mode:
            page = next_offset // q.limit + 1 if next_offset % q.limit == 0 else None
            if page is not None:
                metadata["nextPage"] = f"{base}/api/v1/models?{urlencode([*params, ('page', str(page))])}"
            else:  # a short page (filtered rows): carry on by cursor
                metadata["nextCursor"] = str(next_offset)
                metadata["nextPage"] = f"{base}/api/v1/models?{urlencode([*params, ('cursor', str(next_offset))])}"
        else:
            metadata["nextCursor"] = str(next_offset)
            metadata["nextPage"] = f"{base}/api/v1/models?{urlencode([*params, ('cursor', str(next_offset))])}"
    if q.page_mode:
        metadata.update(currentPage=q.offset // q.limit + 1, pageSize=q.limit)
    return _json({"items": items, "metadata": metadata})


@router.api_route("/api/download/models/{version_id}", methods=["GET", "HEAD"], summary="Civitai: download a version's file")
async def download(version_id: str, request: Request) -> Response:
    vid = parse_id(version_id, "model version id")
    raw_file = request.query_params.get("fileId")
    file_id = parse_id(raw_file, "fileId") if raw_file not in (None, "") else None
    st = state_of(request)
    sha, size, name, repo_pk = await run_read(lambda: st.civitai.download(_ident(request), vid, file_id), st)
    headers = {
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
        "ETag": f'"{sha}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=0, must-revalidate",
    }
    if size == 0:
        return Response(b"", headers=headers, media_type="application/octet-stream")
    background = None
    if request.method == "GET" and "range" not in request.headers:
        background = BackgroundTask(run_in_threadpool, st.repos.count_download, repo_pk)
    return await blob_response(st.store, sha, size, request.method, headers=headers,
                               media_type="application/octet-stream", background=background, what=name)
