"""Base-model specs: embedded, folders, single files, Hub ids, and the refusals."""

from __future__ import annotations

import http.server
import json
import pickle
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lorahub.base.embedded import EMBEDDED_ID, MARKER, embedded_path
from lorahub.base.resolve import BaseRef, looks_like_hub_id, resolve_base
from lorahub.errors import BaseModelError, LorahubError, PickleRefusedError

# ---------------------------------------------------------------------------------------------
# embedded


@pytest.mark.parametrize("spec", [None, "", "embedded", EMBEDDED_ID])
def test_embedded_spellings(spec: str | None, embedded_home: Path) -> None:
    ref = resolve_base(spec)
    assert ref.kind == "embedded"
    assert Path(ref.location) == embedded_home
    assert ref.family == "sd1"
    assert ref.name == EMBEDDED_ID
    assert ref.seed == 0
    assert ref.pipeline_class == "StableDiffusionPipeline"


def test_embedded_without_building(lorahub_home: Path) -> None:
    ref = resolve_base(None, build=False)
    assert ref.kind == "embedded"
    assert Path(ref.location) == embedded_path(lorahub_home)
    assert not Path(ref.location).exists()
    assert ref.seed is None


# ---------------------------------------------------------------------------------------------
# folders


def test_local_folder(embedded_base: Path, tmp_path: Path) -> None:
    copy = tmp_path / "my-base"
    shutil.copytree(embedded_base, copy)
    ref = resolve_base(str(copy))
    assert ref == BaseRef(
        kind="folder", location=str(copy), family="sd1", spec=str(copy),
        pipeline_class="StableDiffusionPipeline", seed=0,
    )
    # Without the lorahub marker the family comes from the UNet config (conv projections: SD 1.x).
    (copy / MARKER).unlink()
    ref = resolve_base(copy)
    assert ref.kind == "folder" and ref.family == "sd1" and ref.seed is None
    cfg = json.loads((copy / "unet" / "config.json").read_text())
    cfg["cross_attention_dim"] = 1024
    (copy / "unet" / "config.json").write_text(json.dumps(cfg))
    assert resolve_base(copy).family == "sd2"


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="no such file or folder"):
        resolve_base(str(tmp_path / "nope"))
    with pytest.raises(BaseModelError, match="no such file or folder"):
        resolve_base("./relative/missing/folder")
    with pytest.raises(BaseModelError, match="no such file or folder"):
        resolve_base(str(tmp_path / "model.safetensors"))


def test_folder_without_model_index(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaseModelError, match="no model_index.json"):
        resolve_base(str(tmp_path / "empty"))
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    with pytest.raises(BaseModelError, match="single model or an adapter"):
        resolve_base(str(tmp_path / "unet"))


def test_folder_that_is_not_a_pipeline(tmp_path: Path, embedded_base: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model_index.json").write_text("{not json")
    with pytest.raises(BaseModelError, match="not readable JSON"):
        resolve_base(str(bad))
    (bad / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(BaseModelError, match="not a pipeline index"):
        resolve_base(str(bad))
    (bad / "model_index.json").write_text(json.dumps({"_class_name": "PixArtAlphaPipeline"}))
    with pytest.raises(BaseModelError, match="PixArtAlphaPipeline, not a Stable Diffusion pipeline"):
        resolve_base(str(bad))
    (bad / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(BaseModelError, match="lacks transformer, vae, text_encoder, text_encoder_2"):
        resolve_base(str(bad))
    (bad / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(BaseModelError, match="not a complete pipeline"):
        resolve_base(str(bad))
    # A component folder is missing
    copy = tmp_path / "copy"
    shutil.copytree(embedded_base, copy)
    shutil.rmtree(copy / "vae")
    with pytest.raises(BaseModelError, match="no vae/ folder"):
        resolve_base(str(copy))


def test_folder_with_pickle_weights_only(tmp_path: Path, embedded_base: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(embedded_base, copy)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(PickleRefusedError, match="only pickle weights"):
        resolve_base(str(copy))


# ---------------------------------------------------------------------------------------------
# pickles


def test_pickle_checkpoints_are_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(pickle.dumps({"state_dict": {}}, protocol=4))  # never loaded
    with pytest.raises(PickleRefusedError, match="never unpickles"):
        resolve_base(str(ckpt))
    pt = tmp_path / "model.pt"
    with zipfile.ZipFile(pt, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(PickleRefusedError, match="pickle"):
        resolve_base(str(pt))
    # by name alone, even when the file is absent
    with pytest.raises(PickleRefusedError, match="pickle checkpoint"):
        resolve_base(str(tmp_path / "absent.bin"))
    # a safetensors file named .ckpt is still refused (diffusers would torch.load it)
    from lorahub.adapters.writer import write_safetensors_zeros

    disguised = write_safetensors_zeros(tmp_path / "real.safetensors", {"a": ("F32", [2])}).rename(
        tmp_path / "real.ckpt"
    )
    with pytest.raises(PickleRefusedError, match="rename"):
        resolve_base(str(disguised))


# ---------------------------------------------------------------------------------------------
# single files (header level; loading is in test_single_file.py)


def test_single_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    from lorahub.adapters.writer import write_safetensors_zeros

    lora = write_safetensors_zeros(
        tmp_path / "lora.safetensors",
        {"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": ("F16", [4, 32])},
    )
    with pytest.raises(BaseModelError, match="adapter, not a base model"):
        resolve_base(str(lora))
    other = write_safetensors_zeros(tmp_path / "other.safetensors", {"encoder.weight": ("F32", [3, 3])})
    with pytest.raises(BaseModelError, match="not a Stable Diffusion checkpoint"):
        resolve_base(str(other))
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes((1000).to_bytes(8, "little") + b"{}")
    with pytest.raises(BaseModelError, match="truncated"):
        resolve_base(str(truncated))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(LorahubError):
        resolve_base(str(text))


def test_single_file_family_and_config(tmp_path: Path, embedded_base: Path, embedded_home: Path) -> None:
    from lorahub.adapters.writer import write_safetensors_zeros
    from lorahub.base.checkpoint import export_single_file

    tiny = export_single_file(embedded_base, tmp_path / "tiny.safetensors")
    ref = resolve_base(str(tiny))
    assert ref.kind == "single_file" and ref.family == "sd1"
    assert ref.config == str(embedded_home)  # the embedded architecture: its folder is the config
    ref = resolve_base(str(tiny), base_config=embedded_base)
    assert ref.config == str(embedded_base)
    with pytest.raises(BaseModelError, match="--base-config"):
        resolve_base(str(tiny), base_config=tmp_path / "missing")

    # SD 1.5-width checkpoint without a config: resolves, config left empty.
    sd15 = write_safetensors_zeros(
        tmp_path / "sd15.safetensors",
        {
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": ("F16", [320, 768]),
            "cond_stage_model.transformer.text_model.final_layer_norm.weight": ("F16", [768]),
        },
    )
    ref = resolve_base(str(sd15))
    assert (ref.kind, ref.family, ref.config) == ("single_file", "sd1", None)
    sdxl = write_safetensors_zeros(
        tmp_path / "sdxl.safetensors",
        {
            "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": ("F16", [640, 2048]),
            "conditioner.embedders.1.model.ln_final.weight": ("F16", [1280]),
        },
    )
    assert resolve_base(str(sdxl)).family == "sdxl"


# ---------------------------------------------------------------------------------------------
# Hub ids


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("runwayml/stable-diffusion-v1-5", True),
        ("ns/name@main", True),
        ("ns/name.v2", True),
        ("ns/name/extra", False),
        ("./ns/name", False),
        ("/abs/path", False),
        ("ns/name.safetensors", False),
        ("ns/model.ckpt", False),
        ("justname", False),
        ("~/models/x", False),
    ],
)
def test_hub_id_syntax(spec: str, expected: bool) -> None:
    assert looks_like_hub_id(spec) is expected


def test_hub_id_without_download() -> None:
    ref = resolve_base("someone/some-model@v1", download=False)
    assert (ref.kind, ref.repo_id, ref.revision, ref.path) == ("hub", "someone/some-model", "v1", None)
    assert ref.name == "someone/some-model@v1"


@pytest.fixture
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache and no token, so nothing is found locally."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    return tmp_path / "hf-cache"


class _HubStub(http.server.BaseHTTPRequestHandler):
    """Answers every request the way the Hub answers for a repository that does not exist."""

    status = 404

    def do_GET(self) -> None:  # noqa: N802
        body = b'{"error":"Repository not found"}'
        self.send_response(self.status)
        if self.status == 404:
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("X-Error-Message", "Repository not found")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


class _Hub500(_HubStub):
    status = 500


@pytest.fixture
def stub_hub(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = getattr(request, "param", _HubStub)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_hub_repo_not_found(hub_env: Path, stub_hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", stub_hub)
    with pytest.raises(BaseModelError, match=r"someone/missing on http://127\.0\.0\.1:\d+: no such model repository"):
        resolve_base("someone/missing")


@pytest.mark.parametrize("stub_hub", [_Hub500], indirect=True)
def test_hub_server_error(hub_env: Path, stub_hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", stub_hub)
    with pytest.raises(BaseModelError, match="answered HTTP 500"):
        resolve_base("someone/model")


def test_hub_unreachable(hub_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(BaseModelError, match="not in the local Hugging Face cache and .* cannot be reached"):
        resolve_base("someone/model")


def test_hub_offline_mode(hub_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaseModelError, match=r"offline mode is on \(HF_HUB_OFFLINE\)"):
        resolve_base("someone/model")


def test_resolve_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from lorahub.base import resolve, embedded, synthetic, checkpoint\n"
        "import lorahub.cli.commands.base\n"
        "resolve.resolve_base(None, build=False)\n"
        "resolve.resolve_base('a/b', download=False)\n"
        "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
