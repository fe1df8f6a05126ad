"""The Xet CAS routes of ``lorahub serve`` (see :mod:`lorahub.registry.hub.cas` and
``docs/server.md``): what ``hf_xet`` calls at the ``X-Xet-Cas-Url`` the token routes hand out,
``<base>/api/lorahub/xet``.

* ``POST /v1/xorbs/default/<hash>``: a xorb (write token) -> ``{"was_inserted": bool}``. The body
  is written to ``xet/tmp/*.part`` as it arrives (cut off with a 413 past the xorb limit), then
  verified and stored chunk by chunk: a xorb is never whole in memory.
* ``POST /v1/shards``: a shard registering files (write token) -> ``{"result": 0|1}``. The client
  tries ``/v2/shards`` first and falls back to v1 on this server's 404.
* ``GET /v1/reconstructions/<file hash>`` (``Range: bytes=a-b``): V1 answer (a signed URL per
  term); ``GET /v2/reconstructions/<file hash>``: V2 answer (per xorb one signed URL for all the
  byte ranges the file needs), which hf_xet asks first.
* ``GET /v1/chunks/default-merkledb/<chunk hash>``: the global dedupe query -> a shard, or 404.
* ``GET /xorbs/<hash>?r=A-B[,C-D...]&exp=&sig=`` (``Range``: ranges within the signed ones): the
  xorb bytes a reconstruction points to; the URL is signed for those byte ranges only; several
  ranges in one request get a ``multipart/byteranges`` answer.
* ``POST /v1/telemetry``: accepted and dropped.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from lorahub.registry.hub import xet
from lorahub.registry.hub.blobstore import _storage_error
from lorahub.registry.hub.errors import BadRequest, HubApiError, PayloadTooLarge

from .app import base_url, read_body, state_of

router = APIRouter(include_in_schema=False)
log = logging.getLogger("lorahub.server.xet")
PREFIX = "/api/lorahub/xet"
SPOOL_BLOCK = 1 << 20
#: Most ranges one xorb fetch may ask for.
MAX_RANGES = 1000
_RANGES = re.compile(r"^bytes=((?:\d{1,19}-\d{1,19})(?:\s*,\s*\d{1,19}-\d{1,19}){0,999})$")
_RANGE = re.compile(r"^bytes=(\d{1,19})-(\d{0,19})$")


def cas_url(request: Request) -> str:
    return base_url(request) + PREFIX


def _range(request: Request) -> tuple[int, int | None] | None:
    value = request.headers.get("range")
    if value is None:
        return None
    m = _RANGE.match(value.strip())
    if m is None:
        raise BadRequest("Range must be bytes=START-END (one range)")
    return int(m.group(1)), int(m.group(2)) if m.group(2) else None


async def _logged(request: Request, fn, *args):  # noqa: ANN001, ANN202
    """Run a CAS operation in the thread pool; a refusal is logged with its reason (the client
    shows only the status)."""
    try:
        return await run_in_threadpool(fn, *args)
    except HubApiError as exc:
        log.info("xet: %s %s refused (%d): %s", request.method, request.url.path, exc.status, exc)
        raise


def _hash(value: str, what: str) -> str:
    if not xet.is_hex_hash(value):
        raise BadRequest(f"{what} must be 64 lower-case hex digits")
    return value


@router.post(PREFIX + "/v1/xorbs/{prefix}/{hash}")
async def upload_xorb(prefix: str, hash: str, request: Request) -> JSONResponse:
    st = state_of(request)
    if prefix != "default":
        raise BadRequest("the xorb prefix must be 'default'")
    _hash(hash, "the xorb hash")
    claims = await run_in_threadpool(st.xet.check_token, request.headers.get("authorization"), write=True)
    path = st.xet.spool_path()
    try:
        size = await _spool(request, path, xet.MAX_XORB_BYTES)
        inserted = await _logged(request, st.xet.put_xorb, claims, hash, path, size)
    finally:
        await run_in_threadpool(path.unlink, True)
    return JSONResponse({"was_inserted": inserted})


async def _spool(request: Request, path: Path, limit: int) -> int:
    """Write the request body to ``path`` (created here) and return its size; past ``limit`` bytes
    (announced or received) a 413, with the reading stopped there."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the server's limit of {limit} bytes")
    try:
        fh = await run_in_threadpool(open, path, "xb")
    except OSError as exc:
        raise _storage_error(exc, "cannot store the upload") from None
    n = 0
    buf = bytearray()
    try:
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit:
                log.info("xet: %s %s cut off past %d bytes (413)", request.method, request.url.path, limit)
                # "Connection: close": the server closes the connection after the answer instead of
                # reading (and dropping) the rest of the body
                raise PayloadTooLarge(f"request body exceeds the server's limit of {limit} bytes", headers={"Connection": "close"})
            buf += chunk
            if len(buf) >= SPOOL_BLOCK:
                await run_in_threadpool(fh.write, bytes(buf))
                buf.clear()
        if buf:
            await run_in_threadpool(fh.write, bytes(buf))
    except OSError as exc:
        raise _storage_error(exc, "cannot store the upload") from None
    finally:
        await run_in_threadpool(fh.close)
    return n


@router.post(PREFIX + "/v1/shards")
async def upload_shard(request: Request) -> JSONResponse:
    st = state_of(request)
    claims = await run_in_threadpool(st.xet.check_token, request.headers.get("authorization"), write=True)
    body = await read_body(request, xet.MAX_SHARD_BYTES)
    n = await _logged(request, st.xet.put_shard, claims, body)
    return JSONResponse({"result": 1 if n else 0})


@router.get(PREFIX + "/v1/reconstructions/{file_id}")
async def reconstruction(file_id: str, request: Request) -> Response:
    return await _reconstruction(file_id, request, 1)


@router.get(PREFIX + "/v2/reconstructions/{file_id}")
async def reconstruction_v2(file_id: str, request: Request) -> Response:
    return await _reconstruction(file_id, request, 2)


async def _reconstruction(file_id: str, request: Request, version: int) -> Response:
    st = state_of(request)
    _hash(file_id, "the file hash")
    claims = await run_in_threadpool(st.xet.check_token, request.headers.get("authorization"), write=False)
    rng = _range(request)
    answer = await _logged(request, partial(st.xet.reconstruction, version=version), claims, file_id, rng, cas_url(request))
    if answer is None:
        return JSONResponse({"error": "range starts past the end of the file"}, status_code=416)
    return JSONResponse(answer)


@router.get(PREFIX + "/v1/chunks/{prefix}/{hash}")
async def dedupe_query(prefix: str, hash: str, request: Request) -> Response:
    st = state_of(request)
    if prefix not in ("default-merkledb", "default"):  # hf_xet 1.8.0 asks under "default"
        raise BadRequest("the dedupe prefix must be 'default-merkledb' or 'default'")
    _hash(hash, "the chunk hash")
    claims = await run_in_threadpool(st.xet.check_token, request.headers.get("authorization"), write=False)
    shard = await run_in_threadpool(st.xet.dedupe_shard, claims, hash)
    if shard is None:
        return JSONResponse({"error": "chunk not known"}, status_code=404)
    return Response(shard, media_type="application/octet-stream")


@router.get(PREFIX + "/xorbs/{hash}")
async def fetch_xorb(hash: str, request: Request) -> Response:
    st = state_of(request)
    q = request.query_params
    chunks, allowed = await run_in_threadpool(st.xet.check_fetch, hash, q.get("r", ""), q.get("exp", ""), q.get("sig", ""))
    total = sum(c[2] for c in chunks)
    value = request.headers.get("range")
    if value is None:
        wanted = allowed
    else:
        m = _RANGES.match(value.strip())
        if m is None:
            raise BadRequest("Range must be bytes=START-END[,START-END...]")
        wanted = [(int(a), int(b)) for a, b in (part.split("-") for part in m.group(1).split(","))]
        if len(wanted) > MAX_RANGES:
            raise BadRequest(f"at most {MAX_RANGES} ranges in one request")
    for start, end in wanted:
        if end < start or end >= total or not any(a <= start and end <= b for a, b in allowed):
            raise HubApiError("range outside what this URL allows", status=416)
    if len(wanted) == 1:
        start, end = wanted[0]
        headers = {"Content-Length": str(end - start + 1), "Accept-Ranges": "bytes", "Content-Range": f"bytes {start}-{end}/{total}"}
        status = 206 if (start, end) != (0, total - 1) else 200
        body = iterate_in_threadpool(st.xet.xorb_bytes(chunks, start, end))
        return StreamingResponse(body, status_code=status, headers=headers, media_type="application/octet-stream")
    # Several ranges (hf_xet with HF_XET_CLIENT_ENABLE_MULTIRANGE_FETCHING): multipart/byteranges (RFC 9110 14.6).
    boundary = secrets.token_hex(16)
    heads = [f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {a}-{b}/{total}\r\n\r\n".encode() for a, b in wanted]
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = sum(len(h) for h in heads) + sum(b - a + 1 for a, b in wanted) + len(tail)

    def parts() -> Iterator[bytes]:
        for head, (a, b) in zip(heads, wanted, strict=True):
            yield head
            yield from st.xet.xorb_bytes(chunks, a, b)
        yield tail

    return StreamingResponse(
        iterate_in_threadpool(parts()), status_code=206, headers={"Content-Length": str(length), "Accept-Ranges": "bytes"},
        media_type=f"multipart/byteranges; boundary={boundary}",
    )


@router.post(PREFIX + "/v1/telemetry")
async def telemetry(request: Request) -> Response:
    await read_body(request, 1 << 20)
    return Response(status_code=200)
