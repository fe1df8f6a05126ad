"""A Flux.1 adapter package's whole life through the command line: inspect -> validate -> push to a real
``lorahub serve`` (huggingface_hub over HTTP) -> pull -> preview -> blend -> fuse into the embedded tiny Flux.1 base.

The package holds what a trainer writes: the diffusers-layout weights and the kohya/ComfyUI file (fused qkv),
made by ``tests/mmditkit.py`` at the embedded base's widths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorahub.cli.main import cli

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_thread")]
pytest.importorskip("diffusers")

DEV_LICENSE = ("other", "flux-1-dev-non-commercial-license",
               "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md")


def _run(*args: str):  # noqa: ANN202
    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout) if "--json" in args else res


def test_flux_inspect_validate_push_pull_preview_blend_fuse(sqlite_server, embedded_flux_base: Path,  # noqa: ANN001
                                                    tmp_path: Path) -> None:
    import mmditkit as K

    pkg = tmp_path / "fluxpush"
    pkg.mkdir()
    src = K.write_original(tmp_path / "src.safetensors", "flux", "kohya", rank=4, t5=False, seed=11)
    kohya_file = Path(_run("convert", str(src.path), "-o", str(pkg / "fluxpush_kohya.safetensors"), "--dtype",
                           "float32", "--json")["path"])
    diffusers_file = Path(_run("convert", str(src.path), "-o", str(pkg / "pytorch_lora_weights.safetensors"),
                               "--format", "diffusers", "--dtype", "float32", "--json")["path"])

    # inspect and validate both layouts
    for f, fmt in ((diffusers_file, "peft"), (kohya_file, "kohya-lora")):
        rep = _run("inspect", str(f), "--json")
        assert (rep["base_family"], rep["format"]) == ("flux", fmt)
        assert rep["coverage"]["transformer"] and rep["coverage"]["text_encoder"]
        (val,) = _run("validate", str(f), "--json")
        assert val["valid"] and not val["errors"], val
    assert "comfyui" in _run("inspect", str(kohya_file), "--json")["loaders"]

    # push: the card names FLUX.1-dev, its licence, FluxPipeline and the kohya file for ComfyUI
    token = sqlite_server.tokens["alice"]
    pushed = _run("push", str(pkg), "--repo", "alice/fluxpush", "--endpoint", sqlite_server.url, "--token", token,
                  "--json")
    assert pushed["changed"] and pushed["registered"]
    from huggingface_hub import ModelCard

    api = sqlite_server.api("alice")
    info = api.model_info("alice/fluxpush")
    assert {"pytorch_lora_weights.safetensors", kohya_file.name, "README.md"} <= {s.rfilename for s in info.siblings}
    card = ModelCard.load(api.hf_hub_download("alice/fluxpush", "README.md"))
    meta = card.data
    assert meta.base_model == "black-forest-labs/FLUX.1-dev"
    assert (meta.license, meta.license_name, meta.license_link) == DEV_LICENSE
    assert "flux" in meta.tags and "base:flux" in meta.tags
    assert 'FluxPipeline.from_pretrained("black-forest-labs/FLUX.1-dev", torch_dtype=torch.bfloat16)' in card.text
    assert f"Download `{kohya_file.name}` into `ComfyUI/models/loras/`" in card.text
    assert info.card_data is not None and info.card_data.get("license_name") == DEV_LICENSE[1]
    assert "base_model:adapter:black-forest-labs/FLUX.1-dev" in info.tags

    # pull it back: the same bytes
    copy = tmp_path / "pulled"
    pulled = _run("pull", "alice/fluxpush", "--endpoint", sqlite_server.url, "--to", str(copy), "--token", token,
                  "--json")
    assert pulled["registered"]
    for f in (diffusers_file, kohya_file):
        assert (copy / f.name).read_bytes() == f.read_bytes()

    # preview the pulled files on the embedded Flux.1 base: both layouts, one base load
    out = tmp_path / "preview.png"
    shown = _run("preview", "--base", str(embedded_flux_base), "--lora", f"{copy / diffusers_file.name}:0.5",
                 "--lora", f"{copy / kohya_file.name}:0.3", "--prompt", "a lighthouse", "--steps", "1",
                 "--size", "64x64", "-o", str(out), "--json")
    assert out.is_file() and shown["stats"]["base_loads"] == 1

    # blend the two pulled layouts (cat: exact; the same update twice, 0.6 + 0.4)
    blended = tmp_path / "fluxblend.safetensors"
    res = _run("blend", f"{copy / diffusers_file.name}:0.6", f"{copy / kohya_file.name}:0.4", "-o", str(blended),
               "--method", "cat", "--dtype", "float32", "--json")
    assert res["relative_error"] == 0.0
    from lorahub.pipeline.canonical import load_adapter_file

    K.assert_same(K.deltas(load_adapter_file(blended)), src.expected)
    assert _run("inspect", str(blended), "--json")["base_family"] == "flux"

    # fuse the blend into the embedded Flux.1 base: a FluxPipeline folder, W + dW in every adapted weight
    merged = tmp_path / "merged"
    fused = _run("fuse", "--base", str(embedded_flux_base), "--lora", f"{blended}:1", "-o", str(merged), "--json")
    assert fused["path"] == str(merged)
    from lorahub.base.resolve import load_pipeline

    pipe, base = load_pipeline(merged), load_pipeline(embedded_flux_base)
    assert type(pipe).__name__ == "FluxPipeline" and not pipe.get_list_adapters()
    key = "transformer_blocks.0.attn.to_k"
    got = (pipe.transformer.get_submodule(key).weight - base.transformer.get_submodule(key).weight).detach()
    assert float((got - K.full(src.expected[f"transformer.{key}"])).abs().max()) < 1e-6
    assert json.loads((merged / "lorahub_fused.json").read_text())["family"] == "flux"
