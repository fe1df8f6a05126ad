"""A stored blob as an HTTP answer (the Hub's resolve route and the Civitai download route): a blob file
through Starlette's FileResponse, a blob stored as Xet chunks rebuilt from them with the same answers
(Range, HEAD, If-Range: FileResponse's own handling)."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.responses import FileResponse


class BlobResponse(FileResponse):
    chunk_size = 1 << 20


class _AsyncReader:
    """The two calls FileResponse makes on its file, on a blob store reader (in the thread pool)."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh

    async def read(self, n: int) -> bytes:
        return await run_in_threadpool(self._fh.read, n)

    async def seek(self, pos: int) -> int:
        return await run_in_threadpool(self._fh.seek, pos)


#: FileResponse reads its file through ``_open_file`` (Starlette 1.x): a chunk-backed blob plugs in there.
_CHUNKED_RANGES = hasattr(FileResponse, "_open_file")


def _read_blocks(store: Any, sha256: str) -> Iterator[bytes]:
    with store.open(sha256) as fh:
        while block := fh.read(1 << 20):
            yield block


class _ChunkedBlobResponse(BlobResponse):
    """A blob stored as Xet chunks, answered like a blob file (Range, HEAD, If-Range: FileResponse's
    own handling) with its bytes read from the chunks."""

    def __init__(self, store: Any, sha256: str, size: int, **kw: Any) -> None:
        # content-addressed, never modified: a fixed modification time
        st = os.stat_result((stat.S_IFREG | 0o444, 0, 0, 1, 0, 0, size, 0, 0, 0))
        super().__init__(f"/{sha256}", stat_result=st, **kw)
        self._store, self._sha256 = store, sha256

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ext = {k: v for k, v in (scope.get("extensions") or {}).items() if k != "http.response.pathsend"}
        await super().__call__({**scope, "extensions": ext}, receive, send)

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[Any]:
        fh = await run_in_threadpool(self._store.open, self._sha256)
        try:
            yield _AsyncReader(fh)
        finally:
            fh.close()


async def blob_response(store: Any, sha256: str, size: int, method: str, *, headers: dict[str, str], media_type: str,
                        background: Any = None, what: str = "") -> Response:
    """The answer of a ``GET``/``HEAD`` of the blob ``sha256`` (``size`` bytes) of ``store``; 500 when the
    store has lost it."""
    local = await run_in_threadpool(store.local_path, sha256)
    if local is None:  # stored as Xet chunks: the same answers (Range included), rebuilt from them
        if not _CHUNKED_RANGES:  # a Starlette without FileResponse._open_file: the whole file (a Range may be ignored)
            headers["Content-Length"] = str(size)
            body = iterate_in_threadpool(_read_blocks(store, sha256)) if method == "GET" else iter(())
            return StreamingResponse(body, headers=headers, media_type=media_type, background=background)
        return _ChunkedBlobResponse(store, sha256, size, headers=headers, media_type=media_type, background=background)
    if not local.is_file():
        return JSONResponse({"error": f"blob {sha256} of {what or 'a file'} is missing from the server's storage"},
                            status_code=500)
    return BlobResponse(local, headers=headers, media_type=media_type, background=background)
