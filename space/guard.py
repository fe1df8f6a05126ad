"""What makes the web UI safe to put in front of strangers: one :class:`UiPolicy` per process.

Everything the page receives comes from an anonymous stranger. The policy holds:

* a private folder (mode 0700, removed at exit) for Gradio's upload cache (``uploads/``) and lorahub's
  work folders (``work/``); file inputs take only files inside ``uploads/`` (:meth:`UiPolicy.uploaded`),
  checked by :class:`UiGate` before Gradio sees a request and again in every handler;
* paths never read nor served: the data folder, ``$LORAHUB_HOME``, the database, the Hugging Face home
  (token file), ``/proc``, ``/etc``, ``/sys`` and ``/dev``;
* the push endpoints (an allow-list: the serving hub, the ones the operator names, the Hugging Face Hub);
* the upload size cap, and per-client rate limits of the heavy work (:class:`RateLimiter`);
* a sweeper that deletes uploads and work files older than :data:`FILES_TTL_S`.

Import this module only where Gradio is installed (the gate itself needs only Starlette's ASGI types).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lorahub.errors import LorahubError, UsageError

ENV_PUSH_ENDPOINTS = "LORAHUB_UI_PUSH_ENDPOINTS"
ENV_MAX_FILE_SIZE = "LORAHUB_UI_MAX_FILE_SIZE"
ENV_RATE_LIMITS = "LORAHUB_UI_RATE_LIMITS"
HF_HUB_URL = "https://huggingface.co"
#: Largest uploaded file (and upload request), unless the operator sets another.
DEFAULT_MAX_FILE_SIZE = 1 << 30
#: action -> (calls, per seconds), per client address.
DEFAULT_RATE_LIMITS: dict[str, tuple[int, float]] = {
    "render": (20, 60.0),
    "bake": (6, 60.0),
    "search": (4, 600.0),
    "train": (3, 3600.0),
    "push": (10, 600.0),
    "inspect": (60, 60.0),
    "upload": (120, 60.0),
}
#: Events waiting in Gradio's queue, all functions together; more are refused ("queue is full").
QUEUE_MAX_SIZE = 32
#: Uploads and work files (blends, trained packages) are deleted this long after they were last written.
FILES_TTL_S = 2 * 3600.0
SWEEP_EVERY_S = 600.0
#: Largest JSON body of a call (prompts and settings: files travel through the upload route).
MAX_JSON_BODY = 1 << 20
MAX_JSON_DEPTH = 64
ALWAYS_BLOCKED = ("/proc", "/etc", "/sys", "/dev")


class RateLimited(LorahubError):
    """A client asked for more of some work than its share."""


# --------------------------------------------------------------------------- rate limits


def parse_rate_limits(text: str) -> dict[str, tuple[int, float]]:
    """``"train=3/3600, render=20/60"`` -> ``{"train": (3, 3600.0), ...}`` (calls per seconds)."""
    out: dict[str, tuple[int, float]] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        try:
            name, value = part.split("=", 1)
            calls, per = value.split("/", 1)
            n, seconds = int(calls), float(per)
        except ValueError:
            raise UsageError(f"{ENV_RATE_LIMITS}: {part!r} is not ACTION=CALLS/SECONDS (e.g. train=3/3600)") from None
        if name.strip() not in DEFAULT_RATE_LIMITS or n < 1 or not seconds > 0:
            raise UsageError(f"{ENV_RATE_LIMITS}: {part!r}: actions are {', '.join(DEFAULT_RATE_LIMITS)}, "
                             "with at least one call per positive number of seconds")
        out[name.strip()] = (n, seconds)
    return out


class RateLimiter:
    """A sliding window per (action, client address); memory bounded by ``max_clients``."""

    def __init__(self, limits: Mapping[str, tuple[int, float]], max_clients: int = 10_000) -> None:
        self.limits = dict(limits)
        self.max_clients = max_clients
        self._hits: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, action: str, client: str | None) -> None:
        """Count one call; raise :class:`RateLimited` when ``client`` is over its share of ``action``."""
        limit = self.limits.get(action)
        if limit is None:
            return
        calls, per = limit
        now = time.monotonic()
        key = (action, client or "unknown")
        with self._lock:
            hits = self._hits.pop(key, None) or deque()
            while hits and hits[0] <= now - per:
                hits.popleft()
            self._hits[key] = hits
            while len(self._hits) > self.max_clients:
                self._hits.popitem(last=False)
            if len(hits) >= calls:
                wait = math.ceil(per - (now - hits[0]))
                raise RateLimited(f"too many {action} requests from your address (at most {calls} per "
                                  f"{_span(per)}): try again in {_span(wait)}")
            hits.append(now)


def _span(seconds: float) -> str:
    s = int(math.ceil(seconds))
    if s % 3600 == 0:
        return f"{s // 3600} h"
    if s % 60 == 0 and s >= 60:
        return f"{s // 60} min"
    return f"{s} s"


# --------------------------------------------------------------------------- endpoints


def canonical_endpoint(url: str) -> str:
    """``HTTPS://Hub.Example:443/`` -> ``https://hub.example``; anything but a plain http(s) base URL is refused."""
    text = (url or "").strip()
    try:
        u = urlsplit(text)
        port = u.port
    except ValueError:
        raise UsageError(f"not an endpoint URL: {text[:100]!r}") from None
    scheme = u.scheme.lower()
    if scheme not in ("http", "https") or not u.hostname or u.username or u.password or u.query or u.fragment:
        raise UsageError(f"not an endpoint URL: {text[:100]!r}", hint="e.g. https://huggingface.co")
    host = u.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[scheme]
    netloc = host if port in (None, default) else f"{host}:{port}"
    return f"{scheme}://{netloc}{u.path.rstrip('/')}"


# --------------------------------------------------------------------------- the policy


@dataclass
class UiPolicy:
    """The rules of one UI process (see the module's docstring)."""

    root: Path
    push_endpoints: tuple[str, ...]
    max_file_size: int
    blocked: tuple[Path, ...]
    limiter: RateLimiter
    files_ttl_s: float = FILES_TTL_S
    _sweeper: threading.Thread | None = field(default=None, repr=False)

    @property
    def upload_dir(self) -> Path:
        return self.root / "uploads"

    @property
    def work_dir(self) -> Path:
        return self.root / "work"

    # -- files ------------------------------------------------------------------------------

    def in_uploads(self, path: str | os.PathLike[str]) -> Path | None:
        """``path`` resolved, when it names a regular file inside the upload folder (and no blocked path)."""
        if not isinstance(path, (str, os.PathLike)):
            return None
        text = os.fspath(path)
        if not isinstance(text, str) or not text or "\x00" in text or "://" in text:
            return None
        try:
            p = Path(os.path.abspath(text)).resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            return None
        if not p.is_relative_to(self.upload_dir.resolve()) or any(p.is_relative_to(b) for b in self.blocked):
            return None
        try:
            return p if stat.S_ISREG(p.stat().st_mode) else None
        except OSError:
            return None

    def uploaded(self, path: str | os.PathLike[str]) -> Path:
        """The file the page uploaded at ``path``; anything else (a server path, a URL) is refused."""
        p = self.in_uploads(path)
        if p is None:
            raise UsageError("files must be uploaded through this page")
        return p

    def uploaded_many(self, paths: Iterable[str | os.PathLike[str]] | None) -> list[Path]:
        return [self.uploaded(p) for p in paths or []]

    def gradio_blocked_paths(self) -> list[str]:
        return [str(b) for b in self.blocked]

    # -- endpoints ----------------------------------------------------------------------------

    def endpoint(self, url: str | None) -> str:
        """``url`` when it is an allowed push endpoint (canonical form); refused otherwise, before any request."""
        try:
            ep = canonical_endpoint(url or "")
        except UsageError:
            ep = None
        if ep is None or ep not in self.push_endpoints:
            raise UsageError("pushes go only to " + ", ".join(self.push_endpoints),
                             hint="the server's operator sets the list (--push-endpoint, " + ENV_PUSH_ENDPOINTS + ")")
        return ep

    # -- cleaning -----------------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> int:
        """Delete uploads and work folders untouched for :attr:`files_ttl_s`; returns the files removed."""
        cutoff = (time.time() if now is None else now) - self.files_ttl_s
        removed = 0
        if self.upload_dir.is_dir():
            removed += _remove_old_files(self.upload_dir, cutoff)
        if self.work_dir.is_dir():
            for kind in self.work_dir.iterdir():
                for job in (kind.iterdir() if kind.is_dir() else ()):
                    if _newest_mtime(job) < cutoff:
                        removed += sum(1 for f in job.rglob("*") if f.is_file()) if job.is_dir() else 1
                        _rmtree(job)
        return removed

    def start_sweeper(self, every_s: float = SWEEP_EVERY_S) -> None:
        if self._sweeper is not None:
            return

        def loop() -> None:
            while True:
                time.sleep(every_s)
                try:
                    self.sweep()
                except OSError:
                    pass

        self._sweeper = threading.Thread(target=loop, name="lorahub-ui-sweeper", daemon=True)
        self._sweeper.start()


def _newest_mtime(path: Path) -> float:
    try:
        newest = path.lstat().st_mtime
    except OSError:
        return 0.0
    if path.is_dir() and not path.is_symlink():
        for f in path.rglob("*"):
            try:
                newest = max(newest, f.lstat().st_mtime)
            except OSError:
                pass
    return newest


def _remove_old_files(folder: Path, cutoff: float) -> int:
    removed = 0
    for dirpath, _dirnames, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            f = Path(dirpath) / name
            try:
                if f.lstat().st_mtime < cutoff:
                    f.unlink()
                    removed += 1
            except OSError:
                pass
        if Path(dirpath) != folder:
            try:
                os.rmdir(dirpath)  # only when empty
            except OSError:
                pass
    return removed


def _rmtree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


_ROOT: Path | None = None
_ROOT_LOCK = threading.Lock()


def private_root() -> Path:
    """This process's private UI folder (created once, mode 0700, removed at exit). Folders of earlier
    UI processes that are gone without removing theirs (killed) are removed first."""
    global _ROOT
    with _ROOT_LOCK:
        if _ROOT is None or not _ROOT.is_dir():
            _remove_orphans(Path(tempfile.gettempdir()))
            root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX)).resolve()
            for sub in ("uploads", "work", "examples"):
                (root / sub).mkdir(mode=0o700)
            (root / "pid").write_text(str(os.getpid()))
            atexit.register(shutil.rmtree, root, True)
            _exit_on_sigterm()
            _ROOT = root
        return _ROOT


ROOT_PREFIX = "lorahub-ui-"


def _remove_orphans(parent: Path) -> None:
    """Remove ``lorahub-ui-*`` folders of this user whose process no longer runs."""
    try:
        candidates = list(parent.glob(ROOT_PREFIX + "*"))
    except OSError:
        return
    for d in candidates:
        try:
            if d.is_symlink() or not d.is_dir() or d.stat().st_uid != os.getuid():
                continue
            pid = int((d / "pid").read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass  # alive, or not ours to ask about


def _exit_on_sigterm() -> None:
    """Make SIGTERM exit through the interpreter (so that the private folder is removed): uvicorn re-raises
    the signal after a graceful shutdown, and its default action would end the process on the spot."""
    import signal

    try:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    except (ValueError, OSError):  # not the main thread: leave it
        pass


def _hf_home() -> list[Path]:
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - installed with gradio
        return []
    return [Path(constants.HF_HOME), Path(constants.HF_TOKEN_PATH)]


def make_policy(
    *,
    serving_url: str | None = None,
    push_endpoints: Sequence[str] = (),
    max_file_size: int | None = None,
    blocked: Sequence[str | os.PathLike[str]] = (),
    rate_limits: Mapping[str, tuple[int, float]] | None = None,
) -> UiPolicy:
    """The policy of this process: the arguments, then ``$LORAHUB_UI_*``, then the defaults.

    Push endpoints: ``serving_url`` (the hub serving the page), ``push_endpoints``,
    ``$LORAHUB_UI_PUSH_ENDPOINTS`` (comma separated), and the Hugging Face Hub. Blocked: ``blocked`` (what
    the host names: the data folder, the files of the registry's database), ``$LORAHUB_HOME``, the Hugging
    Face home, ``/proc``, ``/etc``, ``/sys`` and ``/dev``. The page knows no database of its own: the host
    that opens one names its files here (``lorahub.cli.spacehost``).
    """
    from lorahub.config import home

    env_eps = [e for e in os.environ.get(ENV_PUSH_ENDPOINTS, "").split(",") if e.strip()]
    endpoints: list[str] = []
    for raw in [*([serving_url] if serving_url else []), *push_endpoints, *env_eps, HF_HUB_URL]:
        ep = canonical_endpoint(raw)
        if ep not in endpoints:
            endpoints.append(ep)
    if max_file_size is None:
        env_size = os.environ.get(ENV_MAX_FILE_SIZE, "").strip()
        if env_size:
            from lorahub.units import parse_bytes

            try:
                max_file_size = parse_bytes(env_size)
            except ValueError as exc:
                raise UsageError(f"{ENV_MAX_FILE_SIZE}: {exc}") from None
        else:
            max_file_size = DEFAULT_MAX_FILE_SIZE
    limits = dict(DEFAULT_RATE_LIMITS)
    limits.update(parse_rate_limits(os.environ.get(ENV_RATE_LIMITS, "")))
    limits.update(rate_limits or {})
    deny: list[Path] = []
    for b in [*blocked, home(), *_hf_home(), *ALWAYS_BLOCKED]:
        p = Path(os.path.abspath(os.fspath(b)))
        for q in (p, p.resolve()):
            if q not in deny:
                deny.append(q)
    root = private_root()
    for b in deny:
        if root.is_relative_to(b):
            raise UsageError(f"the web UI's upload folder {root} lies inside {b}, which the UI must never serve",
                             hint="point TMPDIR elsewhere")
    return UiPolicy(root=root, push_endpoints=tuple(endpoints), max_file_size=int(max_file_size),
                    blocked=tuple(deny), limiter=RateLimiter(limits))


def install(policy: UiPolicy) -> None:
    """Point Gradio's upload cache into the private folder (before any Blocks is built) and start sweeping."""
    os.environ["GRADIO_TEMP_DIR"] = str(policy.upload_dir)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(policy.root / "examples")
    policy.start_sweeper()


# --------------------------------------------------------------------------- the gate (ASGI)


class UiGate:
    """ASGI middleware in front of the mounted Gradio app: refuses, before Gradio reads anything,

    * ``/gradio_api/file=...`` of anything but a file in the upload folder (URLs included: no fetching);
    * a call whose JSON names a file (``{"path": ...}``) outside the upload folder, or is not JSON, too big
      or too deep, or names a function (index or API name) that does not exist;
    * uploads without a ``Content-Length``, larger than the cap, or more than a client's share.

    * a result stream (``queue/data``, ``call/<name>/<event id>``) of a session or event the queue does not
      hold (Gradio would start the stream, then fail it).

    * a keyword call (``call/v2/<name>``) whose body is not an object of that function's parameters, each
      given once (Gradio turns an unknown or missing parameter into a 500).

    ``fn_indices`` and ``api_names`` give the page's functions (Gradio answers 500 for unknown ones);
    ``api_params(name)`` the parameters of a named function (Gradio's API info: ``parameter_name``,
    ``parameter_has_default``), None for a name that has none;
    ``stream_exists(session_hash, event_id)`` says whether the queue holds messages for either.
    """

    def __init__(self, app: Any, policy: UiPolicy, fn_indices: Callable[[], Collection[int]] | None = None,
                 api_names: Callable[[], Collection[str]] | None = None,
                 stream_exists: Callable[[str | None, str | None], bool] | None = None,
                 api_params: Callable[[str], Sequence[Mapping[str, Any]] | None] | None = None) -> None:
        self.app = app
        self.api_params = api_params
        self.policy = policy
        self.fn_indices = fn_indices
        self.api_names = api_names
        self.stream_exists = stream_exists

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        method = scope["method"]
        if path.startswith(("/gradio_api/file=", "/gradio_api/file/")):
            target = path[len("/gradio_api/file="):]
            if self.policy.in_uploads(target) is None:
                await _answer(send, 403, "File not allowed.")
                return
        elif path.startswith("/gradio_api/proxy=") or path.rstrip("/") in _UNUSED:
            await _answer(send, 403, "Not allowed.")
            return
        elif self.stream_exists is not None and method in ("GET", "HEAD"):
            stream = _API_RESULT.match(path)
            session = event = None
            if stream:
                event = stream.group(1)
            elif path.rstrip("/") == "/gradio_api/queue/data":
                session = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash", [""])[0]
            if (stream or session is not None) and not self.stream_exists(session, event):
                await _answer(send, 404, "no such session or event")
                return
        if method not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        named = _API_CALL.match(path)
        if named and self.api_names is not None and named.group(1) not in self.api_names():
            await _answer(send, 404, "no such function")
            return
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", []):  # the first of repeated headers, as Starlette reads them
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        length = headers.get("content-length")
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype.startswith("multipart/"):
            if length is None or not length.isdigit():
                await _answer(send, 411, "send a Content-Length")
                return
            if int(length) > self.policy.max_file_size + 64 * 1024:
                await _answer(send, 413, f"larger than the upload limit of {self.policy.max_file_size} bytes")
                return
            if path.rstrip("/") == "/gradio_api/upload":
                client = (scope.get("client") or ("unknown", 0))[0]
                try:
                    self.policy.limiter.check("upload", client)
                except RateLimited as exc:
                    await _answer(send, 429, str(exc))
                    return
            await self.app(scope, receive, send)
            return
        if length is not None and (not length.isdigit() or int(length) > MAX_JSON_BODY):
            await _answer(send, 413, "request body too large")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_JSON_BODY:
                await _answer(send, 413, "request body too large")
                return
        problem = self._screen(bytes(body), ctype)
        if problem is None and named and path.startswith("/gradio_api/call/v2/"):
            problem = self._keywords(named.group(1), bytes(body))
        if problem:
            await _answer(send, 400, problem)
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _screen(self, body: bytes, ctype: str) -> str | None:
        if not body.strip():
            return None
        if ctype not in ("", "application/json", "text/plain") and not ctype.endswith("+json"):
            return None if ctype == "application/x-www-form-urlencoded" else "send a JSON body"
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return "the request body is not valid JSON"
        stack: list[tuple[Any, int]] = [(data, 0)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_JSON_DEPTH:
                return "the request body is nested too deep"
            if isinstance(node, dict):
                p = node.get("path")
                if isinstance(p, str) and self.policy.in_uploads(p) is None:
                    return "files must be uploaded through this page"
                stack.extend((v, depth + 1) for v in node.values())
            elif isinstance(node, list):
                stack.extend((v, depth + 1) for v in node)
        if isinstance(data, dict) and data.get("fn_index") is not None and self.fn_indices is not None:
            index = data["fn_index"]
            if not isinstance(index, int) or isinstance(index, bool) or index not in self.fn_indices():
                return "no such function"
        return None


    def _keywords(self, name: str, body: bytes) -> str | None:
        """What Gradio's ``call/v2`` route would fail on with a 500: a body that is not an object of the
        function's parameters, an unknown one, or a required one missing (as ``construct_args`` checks)."""
        if self.api_params is None:
            return None
        try:
            data = json.loads(body) if body.strip() else None
        except ValueError:  # pragma: no cover - _screen refused it already
            return "the request body is not valid JSON"
        if not isinstance(data, dict):
            return "send the function's parameters as a JSON object"
        params = self.api_params(name)
        if params is None:
            return "no such function"
        names = {p.get("parameter_name") for p in params}
        unknown = sorted(k for k in data if k not in names and k != "oauth_token")
        if unknown:
            return f"unknown parameter: {unknown[0][:40]}"
        missing = [p.get("parameter_name") or f"argument {i}" for i, p in enumerate(params)
                   if not p.get("parameter_has_default") and p.get("parameter_name") not in data]
        if missing:
            return f"missing parameter: {missing[0]}"
        return None


_API_CALL = re.compile(r"^/gradio_api/(?:call/v2|call|run|api)/([^/]*)/?$")
_API_RESULT = re.compile(r"^/gradio_api/call/(?:v2/)?[^/]+/([^/]*)/?$")
#: Gradio routes the page never uses (server functions of components it has none of, screen recording,
#: vibe editing): refused, so that they cannot be attacked either.
_UNUSED = {"/gradio_api/component_server", "/gradio_api/process_recording", "/gradio_api/vibe-edit",
           "/gradio_api/undo-vibe-edit", "/gradio_api/vibe-code", "/gradio_api/vibe-starter-queries"}


def _route_path(scope: dict) -> str:
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


async def _answer(send: Callable, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


__all__ = ["DEFAULT_MAX_FILE_SIZE", "DEFAULT_RATE_LIMITS", "ENV_MAX_FILE_SIZE", "ENV_PUSH_ENDPOINTS", "ENV_RATE_LIMITS",
           "HF_HUB_URL", "QUEUE_MAX_SIZE", "RateLimited", "RateLimiter", "UiGate", "UiPolicy", "canonical_endpoint",
           "install", "make_policy", "parse_rate_limits", "private_root"]
