"""Starting the server: data folder, database migrations, socket, uvicorn.

:func:`serve` binds the socket itself (so ``--port 0`` picks a free port) and prints one line
``lorahub serve: listening on http://HOST:PORT`` on stderr once the socket accepts connections;
tests and scripts wait for that line.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorahub.errors import UsageError

from .settings import ServerSettings, server_database_url

log = logging.getLogger("lorahub.server")

READY_PREFIX = "lorahub serve: listening on "
#: Settings handed to worker processes (``--workers N``), as JSON.
ENV_SETTINGS = "LORAHUB_SERVE_SETTINGS"


def setup_logging(level: str = "info", access_log: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("lorahub.server")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    logging.getLogger("lorahub.server.access").setLevel(logging.INFO if access_log else logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(level.upper())
        lg.propagate = False
    # uvicorn's access log prints query strings (upload URL signatures): never enabled.
    logging.getLogger("uvicorn.access").disabled = True


def prepare(data_dir: str | Path | None, database: str | None, *, pooled: bool = True) -> tuple[Path, str, Any]:
    """Create the data folder, migrate the database unless it is current; ``(data_dir, url, registry)``.
    ``pooled=False``: the registry of one command (see :class:`lorahub.registry.catalogue.Registry`)."""
    from lorahub.registry.catalogue import Registry

    from .settings import default_data_dir

    data = Path(data_dir).expanduser() if data_dir else default_data_dir()
    try:
        data.mkdir(parents=True, exist_ok=True)
        (data / "blobs").mkdir(exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot use the data folder {data}: {exc.strerror or exc}") from None
    url = server_database_url(data, database)
    registry = Registry(url, auto_migrate=True, pooled=pooled)
    try:
        registry.ensure_schema()
    except BaseException:
        registry.close()
        raise
    return data, url, registry


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only when the
    # socket says it is TCP; without it responses written in two parts (headers, body) wait for
    # the client's delayed ACK (~40 ms per request on keep-alive connections).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: str | Path | None = None,
    database: str | None = None,
    max_upload_size: int | None = None,
    max_commit_bytes: int | None = None,
    public_url: str | None = None,
    allowed_hosts: list[str] | None = None,
    cors_origins: list[str] | None = None,
    log_level: str = "info",
    access_log: bool = True,
    index_adapters: bool = True,
    workers: int = 1,
    on_app: Callable[[Any], None] | None = None,
) -> None:
    """Run the server until interrupted. ``workers > 1`` runs that many processes on one socket.

    ``on_app``: called with the app before it serves (:func:`.app.create_app`); a process-local hook,
    so only with one worker (``lorahub serve --ui`` mounts the web UI this way)."""
    import uvicorn

    from lorahub.registry.database import display_url

    from .app import create_app

    if on_app is not None and workers > 1:
        raise UsageError("an app hook (on_app) needs one worker: worker processes build their own app")
    setup_logging(log_level, access_log)
    data, url, registry = prepare(data_dir, database)
    sock = bind(host, port)
    actual_port = sock.getsockname()[1]
    listen_url = f"http://{url_host(host)}:{actual_port}"
    settings = ServerSettings(data_dir=data, database_url=url, public_url=(public_url or listen_url).rstrip("/"))
    if max_upload_size:
        settings.max_upload_size = max_upload_size
    if max_commit_bytes:
        settings.max_commit_bytes = max_commit_bytes
    settings.index_adapters = index_adapters
    settings.allowed_hosts = list(allowed_hosts or [])
    settings.cors_origins = list(cors_origins or [])
    from lorahub.registry.hub.blobstore import LocalBlobStore, sweep_parts

    swept = LocalBlobStore(settings.blob_dir).sweep_tmp(older_than_s=3600)
    swept += sweep_parts(Path(settings.data_dir) / "xet" / "tmp", older_than_s=3600)
    if swept:
        log.info("removed %d unfinished upload(s) left by an earlier run", swept)
    common = dict(
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=30,
        limit_concurrency=1024,
    )
    log.info("data %s, database %s, %d worker(s)", data, display_url(url), workers)
    try:
        if workers <= 1:
            _warm_semantic(registry)
            app = _frozen(create_app(settings, registry, on_app=on_app))
            server = uvicorn.Server(uvicorn.Config(app, **common))
            print(READY_PREFIX + listen_url, file=sys.stderr, flush=True)
            server.run(sockets=[sock])
        else:
            from uvicorn.supervisors import Multiprocess

            registry.close()
            os.environ[ENV_SETTINGS] = json.dumps(
                {
                    "data_dir": str(settings.data_dir),
                    "database_url": settings.database_url,
                    "public_url": settings.public_url,
                    "max_upload_size": settings.max_upload_size,
                    "max_commit_bytes": settings.max_commit_bytes,
                    "index_adapters": settings.index_adapters,
                    "allowed_hosts": settings.allowed_hosts,
                    "cors_origins": settings.cors_origins,
                    "log_level": log_level,
                    "access_log": access_log,
                }
            )
            config = uvicorn.Config("lorahub.registry.server.run:app_from_env", factory=True, workers=workers, **common)
            print(READY_PREFIX + listen_url, file=sys.stderr, flush=True)
            Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
        registry.close()


def app_from_env():  # noqa: ANN201 - a FastAPI app
    """The app of one worker process (``--workers N``): settings from ``$LORAHUB_SERVE_SETTINGS``."""
    from lorahub.registry.catalogue import Registry

    from .app import create_app

    cfg = json.loads(os.environ[ENV_SETTINGS])
    setup_logging(cfg.pop("log_level"), cfg.pop("access_log"))
    settings = ServerSettings(
        data_dir=Path(cfg["data_dir"]),
        database_url=cfg["database_url"],
        public_url=cfg["public_url"],
        max_upload_size=cfg["max_upload_size"],
        max_commit_bytes=cfg["max_commit_bytes"],
        index_adapters=cfg["index_adapters"],
        allowed_hosts=cfg.get("allowed_hosts", []),
        cors_origins=cfg.get("cors_origins", []),
    )
    registry = Registry(settings.database_url, auto_migrate=False)
    _warm_semantic(registry)
    return _frozen(create_app(settings, registry))


def _warm_semantic(registry: Any) -> None:
    """Load the semantic search index (model, vectors and HNSW graph, registry/semantic.py: mapped from the
    cache file beside the database, or built and written) before serving, where the registry has embeddings:
    the first search would otherwise wait for it."""
    from lorahub.registry import semantic

    if not semantic.installed():
        return
    semantic.keep_loaded()  # this process searches an HNSW graph above 20k vectors, kept in step with the database
    try:
        with registry.reading() as raw:
            semantic.ready(raw)
    except Exception as exc:  # noqa: BLE001 - the database may not be ready yet: the first search says so
        log.debug("semantic index not loaded at start: %s", exc)


def _frozen(app):  # noqa: ANN001, ANN202
    """The app, with everything allocated so far (imports: FastAPI, and gradio for the UI) moved out
    of the garbage collector's sight: full collections no longer walk those objects on every
    request burst. The web UI cost the API about 8% of its search throughput without this."""
    import gc

    gc.collect()
    gc.freeze()
    return app
