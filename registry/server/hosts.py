"""Which ``Host`` the server answers, and which browser origins may read its answers (CORS).

DNS rebinding: a page on ``http://attacker.example:8000`` makes its name resolve to 127.0.0.1; the
browser then sends the page's requests to a server that listens on loopback only, and lets the
page read the answers (same origin). Those requests carry ``Host: attacker.example:8000``: a
server that answers only the names it is known by is out of reach. :class:`HostCheckMiddleware`
answers ``421 Misdirected Request`` to any other ``Host``. Accepted (case-insensitive, any port):

* the host of ``--public-url`` (default ``http://HOST:PORT`` of the listening socket);
* ``localhost`` and IP addresses (``127.0.0.1``, ``[::1]``, ``192.168.1.5``): a rebinding page
  always uses a name (its own), never an address;
* every ``--allowed-host NAME`` (``*`` switches the check off: only behind a proxy that checks it).

A request without ``Host`` (HTTP/1.0) comes from no browser and passes.

CORS: answers carry ``Access-Control-Allow-Origin`` only for an origin given with
``--cors-origin`` (none by default), never with credentials (the Hub API authenticates with an
``Authorization`` header the page sets itself, not with cookies). The middleware is Starlette's
``CORSMiddleware`` on the parent app: Gradio then adds none of its own to the mounted web UI (its
own would allow credentialed requests from any ``http://localhost:*`` origin, and from any origin
at all when the ``Host`` is not a loopback name).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})

#: Response headers a browser client (huggingface.js) needs to read, exposed to allowed origins.
EXPOSED_HEADERS = [
    "X-Repo-Commit", "X-Error-Code", "X-Error-Message", "X-Linked-Etag", "X-Linked-Size", "ETag", "Link",
    "Content-Range", "Accept-Ranges",
]


def host_name(host: str) -> str | None:
    """``"Example.COM.:8000"`` -> ``"example.com"``, ``"[::1]:80"`` -> ``"::1"``; None when unparsable."""
    host = host.strip()
    if not host:
        return None
    if host.startswith("["):
        end = host.find("]")
        if end == -1:
            return None
        name, rest = host[1:end], host[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        try:
            return str(ipaddress.IPv6Address(name.split("%", 1)[0]))
        except ValueError:
            return None
    name, _, port = host.partition(":")
    if port and not port.isdigit():
        return None
    name = name.rstrip(".").lower()
    if not name or any(not (ch.isalnum() or ch in "-._") for ch in name) or not name.isascii():
        return None
    return name


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_host_names(public_url: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names ``Host`` may carry (IP addresses are always accepted, see the module docstring)."""
    names = set(LOOPBACK_NAMES)
    public = urlsplit(public_url).hostname
    if public:
        names.add(public.rstrip(".").lower())
    for item in extra:
        item = item.strip()
        if item == "*":
            names.add("*")
        elif item:
            parsed = host_name(item) if "://" not in item else (urlsplit(item).hostname or "").rstrip(".").lower()
            if parsed:
                names.add(parsed)
    return frozenset(names)


def host_allowed(host: str | None, allowed: frozenset[str]) -> bool:
    if host is None or "*" in allowed:
        return True
    name = host_name(host)
    return name is not None and (name in allowed or is_ip(name))


class HostCheckMiddleware:
    """ASGI middleware: ``421`` with one JSON line for a ``Host`` the server is not known by."""

    def __init__(self, app: Any, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        hosts = [v for k, v in scope.get("headers") or () if k == b"host"]
        host = hosts[0].decode("latin-1") if len(hosts) == 1 else (None if not hosts else "")
        if host_allowed(host, self.allowed):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps(
            {"error": "this server does not answer to that Host name (DNS rebinding?); see lorahub serve --public-url and --allowed-host"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 421,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-error-code", b"MisdirectedRequest"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def add_host_and_cors(app: Any, *, public_url: str, allowed_hosts: Iterable[str], cors_origins: Iterable[str]) -> None:
    """Install both middlewares on ``app`` (FastAPI); the host check runs first."""
    from starlette.middleware.cors import CORSMiddleware

    origins = [o.strip().rstrip("/") for o in cors_origins if o.strip()]
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_credentials=False,
        allow_methods=["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )
    app.add_middleware(HostCheckMiddleware, allowed=allowed_host_names(public_url, allowed_hosts))


__all__ = ["EXPOSED_HEADERS", "HostCheckMiddleware", "add_host_and_cors", "allowed_host_names", "host_allowed", "host_name"]
