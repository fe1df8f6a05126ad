"""Helpers of the web-UI tests: a real ``lorahub serve --ui`` or ``lorahub space`` process, its Gradio HTTP
API (``/gradio_api/...``), loopback listeners that record what reaches them, and a scan for leaked copies.

Each UI process runs with its own ``TMPDIR`` (where Gradio keeps its upload cache and lorahub its work
folders), ``HF_TOKEN`` set and an ``hf auth login`` token file in ``HF_HOME``: the ambient credentials
the UI must never spend. An audit hook (``sys.addaudithook``, installed before lorahub starts) logs every
Python-level ``open`` of the database files and every ``sqlite3.connect`` to them.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LORAHUB = str(Path(sys.executable).with_name("lorahub"))
#: The operator's credentials in the UI process's environment and token file: never to be sent anywhere.
AMBIENT_ENV_TOKEN = "hf_ambientEnvTokenTheUiMustNeverSend0000"
AMBIENT_FILE_TOKEN = "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000"
FILEDATA_META = {"_type": "gradio.FileData"}

AUDIT_BOOT = r"""
import os, runpy, sys
_log = os.open(os.environ["LORAHUB_TEST_AUDIT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
_names = tuple(n for n in os.environ["LORAHUB_TEST_AUDIT_NAMES"].split(os.pathsep) if n)

def _hook(event, args):
    if event in ("open", "sqlite3.connect") and args:
        p = args[0]
        if isinstance(p, bytes):
            p = os.fsdecode(p)
        if isinstance(p, str) and p.endswith(_names):
            os.write(_log, f"{event}\t{p}\n".encode())

sys.addaudithook(_hook)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- listeners


class Listener:
    """A loopback HTTP server that records every request (method, path, headers) and answers 401."""

    def __init__(self) -> None:
        requests: list[dict[str, Any]] = []
        self.requests = requests

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(min(length, 1 << 20))
                requests.append({"method": self.command, "path": self.path,
                                 "headers": {k.lower(): v for k, v in self.headers.items()}})
                body = b'{"error": "Invalid credentials in Authorization header"}'
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_HEAD = _answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Dropper:
    """A loopback port that accepts connections and closes them at once (an open port that answers nothing)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


# --------------------------------------------------------------------------- the UI process


@dataclass
class CallResult:
    status: int
    event: str  # "refused" (the POST was answered 4xx), "complete", "error", or "none"
    data: Any
    text: str

    @property
    def refused(self) -> bool:
        """Refused by the server: a 4xx to the call, an error event, or an error line in the page's status box."""
        if self.status >= 400 or self.event == "error":
            return True
        return self.event == "complete" and "**Error:**" in json.dumps(self.data)

    def message(self) -> str:
        return self.text if self.event in ("refused", "error") else json.dumps(self.data)


@dataclass
class UiApp:
    kind: str  # "serve" or "space"
    url: str
    root: Path  # everything of this test app (the process's TMPDIR, LORAHUB_HOME, data) lives below
    tmp: Path  # the process's TMPDIR: Gradio's upload cache and lorahub's work folders
    log: Path
    audit_log: Path
    database: Path
    proc: subprocess.Popen
    #: name -> path of a file the UI must never read (for the attacks)
    targets: dict[str, str] = field(default_factory=dict)
    #: name -> bytes that must never appear in a file under ``tmp`` nor in an answer
    markers: dict[str, bytes] = field(default_factory=dict)
    allowed: Listener | None = None
    hub: Any = None  # the HubServer of kind "serve"

    # -- the Gradio API ---------------------------------------------------------------------

    def client(self, source: str = "127.0.0.1"):  # noqa: ANN201 - httpx.Client
        """An HTTP client whose connections come from ``source`` (any 127.x address: another client)."""
        import httpx

        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=self.url, transport=transport, timeout=120)

    def info(self) -> dict[str, Any]:
        with self.client() as c:
            r = c.get("/gradio_api/info")
        r.raise_for_status()
        return r.json()["named_endpoints"]

    def file_params(self) -> dict[str, list[tuple[int, bool]]]:
        """``api name -> [(position, multiple)]`` of every File-typed parameter of every named endpoint."""
        out: dict[str, list[tuple[int, bool]]] = {}
        for name, ep in self.info().items():
            for i, p in enumerate(ep["parameters"]):
                if p["component"] == "File":
                    multiple = "list" in str(p.get("python_type", {}).get("type", "")).lower()
                    out.setdefault(name.lstrip("/"), []).append((i, multiple))
        return out

    def defaults(self, name: str) -> list[Any]:
        """Plausible values for every parameter of endpoint ``name`` (files: none)."""
        values: list[Any] = []
        for p in self.info()["/" + name]["parameters"]:
            if p.get("parameter_has_default"):
                values.append(p.get("parameter_default"))
            else:
                values.append({"Textbox": "", "Number": 0, "Slider": 1.0, "Checkbox": False, "File": None}.get(p["component"]))
        return values

    def call(self, name: str, data: list[Any], *, source: str = "127.0.0.1", timeout: float = 120) -> CallResult:
        """``POST /gradio_api/call/<name>``, then read its result stream to the end."""
        with self.client(source) as c:
            r = c.post(f"/gradio_api/call/{name}", json={"data": data}, timeout=timeout)
            if r.status_code != 200:
                return CallResult(r.status_code, "refused", None, r.text)
            event_id = r.json()["event_id"]
            text = c.get(f"/gradio_api/call/{name}/{event_id}", timeout=timeout).text
        event, payload = "none", None
        current = None
        for line in text.splitlines():
            if line.startswith("event:"):
                current = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and current in ("complete", "error"):
                raw = line.split(":", 1)[1].strip()
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = raw
                event = current
        return CallResult(200, event, payload, text)

    def upload(self, name: str, content: bytes, *, source: str = "127.0.0.1") -> dict[str, Any]:
        """Upload through the page's own route; the FileData the page would send for it."""
        with self.client(source) as c:
            r = c.post("/gradio_api/upload", files={"files": (name, content)})
        assert r.status_code == 200, r.text
        (path,) = r.json()
        return {"path": path, "orig_name": name, "meta": dict(FILEDATA_META)}

    # -- what must not happen -----------------------------------------------------------------

    def leaks(self) -> list[str]:
        """Files under the process's TMPDIR that hold a marker: copies of what the UI must never read."""
        found = []
        for dirpath, _dirs, files in os.walk(self.tmp):
            for f in files:
                p = Path(dirpath) / f
                try:
                    if p.is_symlink() or p.stat().st_size > 64 << 20:
                        continue
                    data = p.read_bytes()
                except OSError:
                    continue
                found += [f"{p}: {name}" for name, m in self.markers.items() if m in data]
        return found

    def leaked_in(self, text: str | bytes) -> list[str]:
        data = text.encode() if isinstance(text, str) else text
        return [name for name, m in self.markers.items() if m in data]

    def audit(self) -> list[tuple[str, str]]:
        if not self.audit_log.exists():
            return []
        return [tuple(line.split("\t", 1)) for line in self.audit_log.read_text().splitlines() if "\t" in line]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _adapter(path: Path, marker: str) -> Path:
    """A small valid kohya LoRA whose metadata holds ``marker`` (to find copies of it)."""
    import numpy as np

    from lorahub.adapters.writer import write_numpy

    rng = np.random.default_rng(abs(hash(marker)) % (1 << 32))
    base = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    tensors = {
        f"{base}.lora_down.weight": rng.standard_normal((4, 768)).astype(np.float16),
        f"{base}.lora_up.weight": rng.standard_normal((320, 4)).astype(np.float16),
        f"{base}.alpha": np.array(4.0, dtype=np.float16),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_numpy(path, tensors, metadata={"ss_output_name": marker, "marker": marker})


def adapter_bytes(root: Path, marker: str) -> bytes:
    return _adapter(root / f"{marker}.safetensors", marker).read_bytes()


def _env(root: Path, extra: dict[str, str]) -> dict[str, str]:
    tmp = root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    hf_home = root / "hf-home"
    hf_home.mkdir(parents=True, exist_ok=True)
    (hf_home / "token").write_text(AMBIENT_FILE_TOKEN)
    env = {
        "TMPDIR": str(tmp),
        "HF_TOKEN": AMBIENT_ENV_TOKEN,
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "LORAHUB_TEST_AUDIT_LOG": str(root / "audit.log"),
    }
    env.update(extra)
    return env


def _markers(root: Path) -> dict[str, bytes]:
    passwd = Path("/etc/passwd").read_bytes().splitlines()[0]
    return {
        "/etc/passwd": passwd,
        "HF_TOKEN": AMBIENT_ENV_TOKEN.encode(),
        "HF token file": AMBIENT_FILE_TOKEN.encode(),
        "a SQLite database": b"SQLite format 3\x00",
    }


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the UI exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(url + "/", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the UI did not answer in {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def start_serve_ui(root: Path, env: dict[str, str], args: list[str] | None = None) -> UiApp:
    """``lorahub serve --ui`` on SQLite; a private repo of alice holds an adapter (its blob: a target)."""
    import hubkit as srv

    from lorahub.registry.server.settings import SQLITE_NAME

    data = root / "serve"
    database = data / SQLITE_NAME
    full_env = _env(root, {"LORAHUB_TEST_AUDIT_NAMES": os.pathsep.join(database.name + s for s in ("", "-wal", "-shm", "-journal")), **env})
    wrap = [sys.executable, "-c", AUDIT_BOOT]
    hub = srv.start_server(data, None, "sqlite", extra_args=["--ui", *(args or [])], env=full_env, wrap=wrap)
    try:
        marker = "privateblob" + secrets.token_hex(8)
        content = adapter_bytes(root / "src", marker)
        api = hub.api("alice")
        api.create_repo("alice/secret", private=True)
        api.upload_file(path_or_fileobj=content, path_in_repo="secret.safetensors", repo_id="alice/secret")
        blob = next(p for p in (data / "blobs").rglob("*") if p.is_file() and p.read_bytes() == content)
    except BaseException:
        srv.stop_server(hub)
        raise
    _wait_http(hub.url, hub.proc, hub.log)
    app = UiApp("serve", hub.url, root, Path(full_env["TMPDIR"]), hub.log, root / "audit.log", database, hub.proc, hub=hub)
    app.targets = {"/etc/passwd": "/etc/passwd", "/proc/self/environ": "/proc/self/environ",
                   "the hub database": str(database), "a private blob": str(blob),
                   "the token file": str(Path(full_env["HF_HOME"]) / "token")}
    app.markers = {**_markers(root), "a private blob": marker.encode()}
    return app


def start_space_ui(root: Path, env: dict[str, str], args: list[str] | None = None) -> UiApp:
    """``lorahub space`` over a registry in its $LORAHUB_HOME that indexes a private adapter file (a target)."""
    from lorahub.registry.catalogue import Registry

    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    database = home / "space-registry.sqlite"
    marker = "privatefile" + secrets.token_hex(8)
    private = _adapter(home / "adapters" / "private.safetensors", marker)
    url = f"sqlite:///{database}"
    with Registry(url) as reg:
        reg.index_paths([private])
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "LORAHUB_DATABASE", "LORAHUB_SPACE", "LORAHUB_UI"))}
    full_env.update(_env(root, {"LORAHUB_HOME": str(home),
                                "LORAHUB_TEST_AUDIT_NAMES": os.pathsep.join(database.name + s for s in ("", "-wal", "-shm", "-journal")),
                                **env}))
    port = free_port()
    log = root / "space.log"
    cmd = [sys.executable, "-c", AUDIT_BOOT, LORAHUB, "space", "--host", "127.0.0.1", "--port", str(port), "--database", url, *(args or [])]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=full_env, cwd=str(root))
    app = UiApp("space", f"http://127.0.0.1:{port}", root, Path(full_env["TMPDIR"]), log, root / "audit.log", database, proc)
    try:
        _wait_http(app.url, proc, log)
    except BaseException:
        stop(app)
        raise
    app.targets = {"/etc/passwd": "/etc/passwd", "/proc/self/environ": "/proc/self/environ",
                   "the registry database": str(database), "a private adapter file": str(private),
                   "the token file": str(Path(full_env["HF_HOME"]) / "token")}
    app.markers = {**_markers(root), "a private adapter file": marker.encode()}
    return app


def stop(app: UiApp) -> None:
    if app.hub is not None:
        from hubkit import stop_server

        stop_server(app.hub)
        return
    if app.proc.poll() is None:
        app.proc.terminate()
        try:
            app.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            app.proc.kill()
            app.proc.wait(timeout=15)
