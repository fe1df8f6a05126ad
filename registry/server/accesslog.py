"""An access log that cannot leak secrets.

uvicorn's own access log prints the request line with its query string, which would print the
signature of pre-signed LFS upload URLs (``?sig=...``); it is switched off and replaced by this
ASGI middleware, which logs the method, the *path only* (no query string, control characters
escaped), the status, the bytes sent and the time. Headers (``Authorization``) are never logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("lorahub.server.access")


def safe_path(path: str, limit: int = 300) -> str:
    out = []
    for ch in path:
        code = ord(ch)
        if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or ch in "\u2028\u2029\u202e":
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class AccessLogMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = {"status": 0, "bytes": 0}

        async def _send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            client = scope.get("client") or ("-", 0)
            log.info(
                '%s "%s %s" %d %d %.1fms',
                client[0],
                scope.get("method", "-"),
                safe_path(scope.get("path", "")),
                state["status"] or 500,
                state["bytes"],
                (time.perf_counter() - started) * 1000,
            )
