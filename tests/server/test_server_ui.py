"""`lorahub serve` serves the web UI (the Space) at `/` while the API keeps its routes."""

from __future__ import annotations

import httpx
import pytest

from lorahub.cli.main import cli  # noqa: F401 - the CLI is what starts the server

pytest.importorskip("gradio")


def test_ui_at_root_and_api_still_answers(tmp_path) -> None:  # noqa: ANN001
    from testkit import server_fixtures

    srv = server_fixtures()
    server = srv.start_server(tmp_path / "serve", None, "sqlite", extra_args=["--ui"])
    try:
        page = httpx.get(server.url + "/", timeout=60, follow_redirects=True)
        assert page.status_code == 200 and "gradio" in page.text.lower()
        config = httpx.get(server.url + "/config", timeout=60)
        assert config.status_code == 200 and "components" in config.json()
        who = server.request("GET", "/api/whoami-v2")
        assert who.status_code == 200 and who.json()["name"] == "alice"
        search = server.request("GET", "/api/lorahub/search", params={"q": "anything"})
        assert search.status_code == 200
        assert server.request("GET", "/docs").status_code == 200
    finally:
        srv.stop_server(server)
