"""The browser of the browser tests (a pytest plugin, declared in conftest.py): ``page``, a fresh headless
Chromium page (see browserkit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from browserkit import CHROMIUM, CHROMIUM_ARGS, need_browser


@pytest.fixture
def page(tmp_path: Path):  # noqa: ANN201
    need_browser()
    from playwright.sync_api import expect, sync_playwright

    # expect() keeps its own 5 s default, which the context's default timeout does not change: a busy 2-core
    # machine takes longer than that to answer an upload, so assertions wait as long as actions do
    expect.set_options(timeout=60_000)

    profile = tmp_path / "chromium-profile"
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 1000},
        )
        ctx.set_default_timeout(60_000)
        try:
            yield ctx.new_page()
        finally:
            ctx.close()
