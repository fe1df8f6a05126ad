"""lorahub.space.gpu: the page's rendering and training under the `spaces` package's ZeroGPU decorator on
zero-gpu hardware, with the real `spaces` package installed (outside ZeroGPU it falls back to running the
function here, on the CPU), and without the package (the function as it is)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from lorahub.space import callbacks as cb
from lorahub.space import gpu

pytest.importorskip("diffusers", reason="the Space needs the ml extra (torch, diffusers)")


@pytest.fixture
def state(embedded_home: Path, tmp_path: Path):  # noqa: ANN201
    cb.reset_state()
    st = cb.get_state(workdir=tmp_path / "work")
    yield st
    cb.reset_state()


def test_hardware_comes_from_the_setting_or_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(gpu.ENV_HARDWARE, raising=False)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert gpu.hardware() == "cpu"
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")  # what the Hub sets on a ZeroGPU Space
    assert gpu.hardware() == "zero-gpu"
    monkeypatch.setenv(gpu.ENV_HARDWARE, "gpu")
    assert gpu.hardware() == "gpu"
    monkeypatch.setenv(gpu.ENV_HARDWARE, "nonsense")
    assert gpu.hardware() == "zero-gpu"


def test_zero_gpu_with_spaces_installed_decorates_and_renders_on_the_cpu(
        state: cb.SpaceState, monkeypatch: pytest.MonkeyPatch) -> None:
    import spaces  # the real package (the dev extra installs it)

    from lorahub.space.ui import render_job

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.setenv(gpu.ENV_HARDWARE, "zero-gpu")
    assert gpu.gpu_decorator() is spaces.GPU
    calls = []
    real = spaces.GPU

    def counting(*args, **kw):  # noqa: ANN002, ANN003, ANN202 - spaces.GPU's own signature
        calls.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(spaces, "GPU", counting)
    render = gpu.on_gpu(render_job, duration=30)
    assert calls == [{"duration": 30}]
    out = render([], [], "a photo", "", 0, 2)  # outside ZeroGPU spaces.GPU runs it here: on the CPU
    assert out.image.size[0] > 0 and out.seconds
    # the page wires its heavy work through the decorator
    monkeypatch.setattr(spaces, "GPU", counting)
    cb.reset_state()
    from lorahub.space.ui import create_blocks

    create_blocks()
    assert [c["duration"] for c in calls[1:]] == [120, 120, 600]


def test_zero_gpu_without_spaces_runs_the_function_as_it_is(
        state: cb.SpaceState, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from lorahub.space.ui import render_job

    monkeypatch.setenv(gpu.ENV_HARDWARE, "zero-gpu")
    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` raises ImportError
    with caplog.at_level(logging.WARNING, logger="lorahub.space"):
        assert gpu.on_gpu(render_job) is render_job
    assert "`spaces` package is not installed" in caplog.text
    out = render_job([], [], "a photo", "", 0, 2)
    assert out.image.size[0] > 0


def test_other_hardware_never_decorates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    for hw in ("cpu", "gpu"):
        monkeypatch.setenv(gpu.ENV_HARDWARE, hw)
        assert gpu.gpu_decorator() is None
        assert gpu.on_gpu(len) is len


def test_zero_gpu_takes_the_space_base(monkeypatch: pytest.MonkeyPatch) -> None:
    """On ZeroGPU there is no CUDA outside a decorated call: the configured base is used all the same."""
    from lorahub.base.drawing import DRAWING_ID as EMBEDDED_ID

    monkeypatch.setenv(cb.ENV_BASE, "some/hub-model")
    monkeypatch.setenv(gpu.ENV_HARDWARE, "cpu")
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert cb.space_base() == EMBEDDED_ID
    monkeypatch.setenv(gpu.ENV_HARDWARE, "zero-gpu")
    assert cb.space_base() == "some/hub-model"
