"""Fixtures shared by the whole suite.

Fixtures used in more than one folder live in plugin modules beside this file, declared once here
(``pytest_plugins``): a test asks for a fixture by its parameter name and never imports one. Plain
helpers are imported by name from the ``*kit.py`` modules.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# torch on one thread for the whole session, in this process and in every process a test starts (the
# `lorahub` CLI, `lorahub serve`, the Space): every model of the suite is tiny, and two OpenMP threads on a
# 2-core machine spin against the rest (a server, Chromium, another job): measured on the blend-search
# objective, 10 evaluations took 6 s on one thread and 74-138 s on two (12x the CPU time). A CI that sets
# OMP_NUM_THREADS keeps its own value.
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # a plugin imported it before this file: the variable came too late for it
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# A $LORAHUB_HOME of the session's own until each test sets its own (``lorahub_home`` below): module- and
# session-scoped fixtures are set up before that function-scoped one, and whatever they built by default
# (the embedded base, the database) landed in the user's real home.
os.environ["LORAHUB_HOME"] = tempfile.mkdtemp(prefix="lorahub-test-home-")
atexit.register(shutil.rmtree, os.environ["LORAHUB_HOME"], True)

pytest_plugins = ["adapter_fixtures", "browser_fixtures", "hub_fixtures", "registry_fixtures"]


@pytest.fixture(autouse=True)
def lorahub_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty $LORAHUB_HOME (the embedded base model is shared, see below)."""
    home = tmp_path_factory.mktemp("lorahub-home")
    monkeypatch.setenv("LORAHUB_HOME", str(home))
    monkeypatch.delenv("LORAHUB_DEBUG", raising=False)
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    return home


# --- the embedded base model (lorahub.base.embedded), built once per test session ---------------


@pytest.fixture(scope="session")
def embedded_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the embedded SD 1.x pipeline (the default: the pretrained drawing weights), installed once
    per session (needs torch)."""
    pytest.importorskip("diffusers", reason="the embedded base model needs the ml extra (torch, diffusers)")
    from lorahub.base.embedded import EMBEDDED_NAME, ensure_embedded

    return ensure_embedded(path=tmp_path_factory.mktemp("embedded-base") / EMBEDDED_NAME)


@pytest.fixture(scope="session")
def random_sd1_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded SD 1.x build with random weights (``lorahub base build --seed 0``: the narrower random
    architecture), built once per session, for tests whose argument needs a base that draws nothing."""
    pytest.importorskip("diffusers", reason="the embedded base model needs the ml extra (torch, diffusers)")
    from lorahub.base.embedded import EMBEDDED_NAME, ensure_embedded

    return ensure_embedded(seed=0, path=tmp_path_factory.mktemp("random-sd1-base") / EMBEDDED_NAME)


@pytest.fixture
def embedded_home(embedded_base: Path, lorahub_home: Path) -> Path:
    """This test's $LORAHUB_HOME with the session's embedded model in place (a symlink, no rebuild).

    Returns the path ``resolve_base(None)`` / ``ensure_embedded()`` give in this test. Treat it as
    read-only: it is shared by the whole session.
    """
    from lorahub.base.embedded import embedded_path

    target = embedded_path(lorahub_home)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(embedded_base, target_is_directory=True)
    return target


@pytest.fixture(scope="session")
def embedded_xl_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the embedded tiny SDXL pipeline (seed 0), built once per session (needs torch)."""
    pytest.importorskip("diffusers", reason="the embedded base model needs the ml extra (torch, diffusers)")
    from lorahub.base.embedded import SDXL_NAME, ensure_embedded

    return ensure_embedded(seed=0, path=tmp_path_factory.mktemp("embedded-xl-base") / SDXL_NAME, family="sdxl")


@pytest.fixture
def embedded_xl_home(embedded_xl_base: Path, lorahub_home: Path) -> Path:
    """This test's $LORAHUB_HOME with the session's embedded SDXL model in place (a symlink; read-only)."""
    from lorahub.base.embedded import embedded_path

    target = embedded_path(lorahub_home, family="sdxl")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(embedded_xl_base, target_is_directory=True)
    return target


@pytest.fixture(scope="session")
def embedded_flux_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the embedded tiny Flux.1-dev pipeline (seed 0), built once per session (needs torch)."""
    pytest.importorskip("diffusers", reason="the embedded base model needs the ml extra (torch, diffusers)")
    from lorahub.base.embedded import ensure_embedded
    from lorahub.base.embedded_mmdit import FLUX_NAME

    return ensure_embedded(seed=0, path=tmp_path_factory.mktemp("embedded-flux-base") / FLUX_NAME, family="flux")


@pytest.fixture(scope="session")
def embedded_sd3_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the embedded tiny SD 3.5 pipeline (seed 0), built once per session (needs torch)."""
    pytest.importorskip("diffusers", reason="the embedded base model needs the ml extra (torch, diffusers)")
    from lorahub.base.embedded import ensure_embedded
    from lorahub.base.embedded_mmdit import SD3_NAME

    return ensure_embedded(seed=0, path=tmp_path_factory.mktemp("embedded-sd3-base") / SD3_NAME, family="sd3")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch on one thread for the test module: the models are tiny, and on a shared 2-core machine two
    OpenMP threads spin against other processes and run 5-10x slower."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
