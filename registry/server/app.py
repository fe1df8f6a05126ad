"""The FastAPI application of ``lorahub serve``.

:func:`create_app` wires the Hub's operations (:mod:`lorahub.registry.hub`), the registry
(:class:`lorahub.registry.catalogue.Registry`), the routes and the error handlers. It does not run
migrations: :func:`lorahub.registry.server.run.serve` does that before building the app.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from lorahub import __version__
from lorahub.errors import LorahubError, RegistryError, UsageError
from lorahub.registry.database import Sessions
from lorahub.registry.hub.auth import Authenticator, Identity
from lorahub.registry.hub.blobstore import LocalBlobStore
from lorahub.registry.hub.cas import XetCas
from lorahub.registry.hub.catalogue_sync import CatalogueSync
from lorahub.registry.hub.civitai import CivitaiApi
from lorahub.registry.hub.commits import Commits
from lorahub.registry.hub.config import HubConfig
from lorahub.registry.hub.errors import BadRequest, HubApiError, PayloadTooLarge, UnsupportedMediaType
from lorahub.registry.hub.lfs import Lfs
from lorahub.registry.hub.orgs import Orgs
from lorahub.registry.hub.repos import Repos

from .accesslog import AccessLogMiddleware
from .hosts import add_host_and_cors, host_name
from .settings import ServerSettings

log = logging.getLogger("lorahub.server")

DESCRIPTION = """\
A self-hosted, Hugging Face Hub compatible hub for Stable Diffusion LoRA adapters.

* **lorahub API** (below): search the registry by words and filters, or look an adapter up by any
  fingerprint (SHA-256, AutoV2, AutoV3, BLAKE3, CRC32 or a prefix of at least 8 hex digits).
* **Hub API** (not listed here): the subset of the Hugging Face Hub HTTP API that `huggingface_hub`,
  the `hf` CLI and diffusers use, including the Xet protocol of `hf_xet` (classic LFS too). Point
  them at this server with `HF_ENDPOINT=<this URL>`. See `docs/server.md`.

Authentication: `Authorization: Bearer <token>` with a token from `lorahub token create --user NAME`.
"""


class ServerState:
    """What the routes use: the registry (the catalogue), the blob store and the Hub's operations
    (:mod:`lorahub.registry.hub`), which own their database sessions: the routes open none."""

    def __init__(self, settings: ServerSettings, registry: Any) -> None:
        self.settings = settings
        self.registry = registry
        self.store = LocalBlobStore(settings.blob_dir)
        config = HubConfig(
            max_upload_size=settings.max_upload_size,
            max_commit_bytes=settings.max_commit_bytes,
            public_url=settings.public_url.rstrip("/"),
            index_adapters=settings.index_adapters,
        )
        sessions = Sessions(registry.engine)
        sync = CatalogueSync(self.store, config)
        self.repos = Repos(sessions, self.store, sync)
        self.orgs = Orgs(sessions)
        self.lfs = Lfs(sessions, self.store, config)
        self.commits = Commits(sessions, self.store, config, sync)
        self.auth = Authenticator(sessions)
        self.civitai = CivitaiApi(sessions, registry, sync.source_key)
        self.xet = XetCas(sessions, self.store, self.lfs, config, Path(settings.data_dir) / "xet", lambda: self.auth.upload_signer)
        self.store.attach_chunks(self.xet)  # files uploaded through Xet are served from their chunks
        public = settings.public_url.rstrip("/")
        public_host = urlsplit(public).hostname
        #: (host name, base URL) of ``--public-url``, see :func:`base_url`.
        self.public_base = (public_host.rstrip(".").lower(), public) if public_host else None

    def identify(self, authorization: str | None) -> Identity | None:
        return self.auth.identify(authorization)


def state_of(request: Request) -> ServerState:
    return request.app.state.lorahub


def base_url(request: Request) -> str:
    """The URL the client reached the server at: ``--public-url`` when the request's ``Host`` is the
    public URL's (behind a TLS proxy the request itself says ``http://``), else the request's own."""
    public = state_of(request).public_base
    host = request.headers.get("host")
    if public is not None and host is not None and host_name(host) == public[0]:
        return public[1]
    return str(request.base_url).rstrip("/")


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the server's limit of {limit} bytes")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise PayloadTooLarge(f"request body exceeds the server's limit of {limit} bytes")
    return bytes(buf)


def is_json_type(content_type: str | None) -> bool:
    """``application/json`` or an ``application/...+json`` type (git-lfs sends ``application/vnd.git-lfs+json``)."""
    base = (content_type or "").split(";")[0].strip().lower()
    return base == "application/json" or (base.startswith("application/") and base.endswith("+json"))


async def read_json(request: Request, limit: int) -> Any:
    """The JSON body (``{}`` when empty); another declared Content-Type is a 415, before the body is read."""
    ctype = request.headers.get("content-type")
    if ctype is not None and not is_json_type(ctype):
        raise UnsupportedMediaType(f"send a JSON body (Content-Type: application/json), not {ctype[:60]!r}")
    raw = await read_body(request, limit)
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("request body is not valid JSON") from None


async def identify(request: Request) -> Identity | None:
    st = state_of(request)
    header = request.headers.get("authorization")
    if not header:
        return None
    return await run_in_threadpool(st.identify, header)


def error_response(exc: HubApiError) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.message}
    for k, v in exc.extra.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            body[k] = v
    headers = dict(exc.headers)
    if exc.code:
        headers.setdefault("X-Error-Code", exc.code)
    return JSONResponse(body, status_code=exc.status, headers=headers)


#: Seconds a client is asked to wait (``Retry-After``) when the database is unreachable; huggingface_hub
#: retries such a 503 five times, waiting this plus one second each time.
DB_RETRY_AFTER_S = 2
DB_UNAVAILABLE = "the server's database is unavailable; try again shortly"


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return (text.splitlines()[0] if text else type(orig).__name__)[:300]


def db_unavailable(request: Request, exc: BaseException) -> JSONResponse:
    """``503`` with ``Retry-After`` for a database that cannot be reached; the details go to the log only
    (they name the database host)."""
    log.error("database unavailable on %s %s: %s", request.method, request.url.path, _first_line(exc))
    return JSONResponse(
        {"error": DB_UNAVAILABLE}, status_code=503, headers={"Retry-After": str(DB_RETRY_AFTER_S), "X-Error-Code": "DatabaseUnavailable"}
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """At shutdown, the event loop's PostgreSQL connections (registry/server/pgloop.py) are closed."""
    yield
    from . import pgloop

    await pgloop.close()


def create_app(settings: ServerSettings, registry: Any = None, *,
               on_app: Callable[[FastAPI], None] | None = None) -> FastAPI:
    """The application. ``registry`` defaults to a :class:`Registry` on ``settings.database_url``.

    ``on_app``: called with the finished app, last (so the API's routes keep precedence over what it
    mounts): how ``lorahub serve --ui`` adds the web UI; the server itself knows no face."""
    if registry is None:
        from lorahub.registry.catalogue import Registry

        registry = Registry(settings.database_url, auto_migrate=False)
    extra: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        # FastAPI's built-in OpenTelemetry hooks check their providers on every request: off.
        extra["telemetry"] = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(
        title="lorahub",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=_lifespan,
        **extra,
    )
    app.state.lorahub = ServerState(settings, registry)

    @app.exception_handler(HubApiError)
    async def _hub_error(request: Request, exc: HubApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(UsageError)
    async def _usage_error(request: Request, exc: UsageError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(LorahubError)
    async def _lorahub_error(request: Request, exc: LorahubError) -> JSONResponse:
        if isinstance(exc, RegistryError):  # the registry could not reach (or use) its database
            return db_unavailable(request, exc)
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
        msg = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in errors]
        return JSONResponse({"error": msg, "detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeoutError)
    async def _db_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return db_unavailable(request, exc)

    @app.exception_handler(DBAPIError)
    async def _db_error(request: Request, exc: Exception) -> JSONResponse:
        # Not a lost connection (those are OperationalError/InterfaceError): a query the database refused.
        log.error("database error on %s %s: %s", request.method, request.url.path, _first_line(exc))
        return JSONResponse({"error": "internal server error (database error)"}, status_code=500)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal server error ({type(exc).__name__})"}, status_code=500)

    from . import civitai_api, hub_api, search_api, xet_api

    app.include_router(search_api.router)
    app.include_router(civitai_api.router)
    app.include_router(xet_api.router)
    app.include_router(hub_api.router)
    # Outermost last: the access log sees every request, the Host check runs before CORS and routing.
    add_host_and_cors(
        app, public_url=settings.public_url, allowed_hosts=settings.allowed_hosts, cors_origins=settings.cors_origins
    )
    app.add_middleware(AccessLogMiddleware)
    if on_app is not None:
        on_app(app)  # last: the API routes above keep precedence over what it mounts
    return app
