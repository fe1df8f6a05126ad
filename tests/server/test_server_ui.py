"""`lorahub serve` serves the web UI (the Space) at `/` only when asked (`--ui`), while the API keeps its
routes. The attacks on the UI itself (file inputs, ambient credentials, rate limits, fuzz) are in
tests/space/test_ui_security.py, for `lorahub serve --ui` and `lorahub space` alike."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from lorahub.cli.main import cli  # noqa: F401 - the CLI is what starts the server

pytest.importorskip("gradio")


def test_ui_at_root_and_api_still_answers(tmp_path) -> None:  # noqa: ANN001
    import hubkit as srv

    server = srv.start_server(tmp_path / "serve", None, "sqlite", extra_args=["--ui"])
    try:
        page = httpx.get(server.url + "/", timeout=60, follow_redirects=True)
        assert page.status_code == 200 and "gradio" in page.text.lower()
        config = httpx.get(server.url + "/config", timeout=60)
        assert config.status_code == 200 and "components" in config.json()
        assert config.json()["max_file_size"] == 1 << 30  # the default upload cap
        assert config.json()["run_history"] is False  # its bucket feature would use the host's own HF login
        who = server.request("GET", "/api/whoami-v2")
        assert who.status_code == 200 and who.json()["name"] == "alice"
        search = server.request("GET", "/api/lorahub/search", params={"q": "anything"})
        assert search.status_code == 200
        assert server.request("GET", "/docs").status_code == 200
    finally:
        srv.stop_server(server)


def test_ui_is_served_only_when_asked(tmp_path) -> None:  # noqa: ANN001
    import hubkit as srv

    server = srv.start_server(tmp_path / "serve", None, "sqlite")  # neither --ui nor --no-ui
    try:
        for path in ("/", "/config", "/gradio_api/info", "/gradio_api/upload"):
            r = httpx.get(server.url + path, timeout=60)
            assert r.status_code == 404, (path, r.status_code)
            assert "gradio" not in r.text.lower()
        assert server.request("GET", "/api/whoami-v2").status_code == 200
    finally:
        srv.stop_server(server)


def test_ui_with_several_workers_is_refused_in_one_line(tmp_path) -> None:  # noqa: ANN001
    import hubkit as srv

    out = subprocess.run([srv.LORAHUB, "serve", "--port", "0", "--data", str(tmp_path / "d"), "--ui", "--workers", "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--workers 1" in lines[0] and "Traceback" not in out.stderr, out.stderr
    assert "listening" not in out.stderr
