"""Fixtures of the server tests' folder only (the shared ones: tests/hub_fixtures.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _xet_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process huggingface_hub clients of these tests upload with LFS (lorahub's hf_api does it too)."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
