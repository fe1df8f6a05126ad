"""Helpers of the browser tests (headless Debian Chromium through Playwright); the ``page`` fixture is in
browser_fixtures.py. Chromium missing: skipped with the reason, except under CI=true, where it fails."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
from testkit import on_ci

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def need_browser() -> None:
    problems = []
    if not Path(CHROMIUM).is_file():
        problems.append(f"{CHROMIUM} is missing (apt-get install chromium, or run scripts/ensure-services)")
    if importlib.util.find_spec("playwright") is None:
        problems.append("the playwright package is not installed (pip install -e '.[dev]')")
    if importlib.util.find_spec("gradio") is None or importlib.util.find_spec("diffusers") is None:
        problems.append("gradio/diffusers are not installed (the space and ml extras)")
    if problems:
        msg = "browser tests need: " + "; ".join(problems)
        if on_ci():
            pytest.fail(msg)
        pytest.skip(msg)


def image_bytes(page, previous: str | None = None) -> tuple[str, bytes]:  # noqa: ANN001
    """The ``src`` and bytes of the Space's preview image once one (other than ``previous``) is shown."""
    img = page.locator("#preview-image img").first
    deadline = time.monotonic() + 90
    while True:
        src = img.get_attribute("src") if img.count() else None
        if src and src != previous:
            break
        status = page.locator("#preview-status").inner_text()
        assert "Error" not in status, status
        assert time.monotonic() < deadline, "no new image appeared"
        time.sleep(0.2)
    if src.startswith("data:"):
        import base64

        return src, base64.b64decode(src.split(",", 1)[1])
    return src, page.request.get(src).body()
