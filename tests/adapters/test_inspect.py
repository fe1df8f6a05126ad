"""inspect_file on real files from other tools and on synthetic files of every format."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from lycoriskit import tensor_region_sha256

from lorahub.adapters.formats import split_key
from lorahub.adapters.inspect import inspect_file
from lorahub.adapters.kohya import decode_value, trigger_words
from lorahub.adapters.writer import write_numpy, write_safetensors_zeros
from lorahub.errors import AdapterFileError, PickleRefusedError


def test_sd15_kohya_manifest(sd15_kohya_manifest_file: Path) -> None:
    r = inspect_file(sd15_kohya_manifest_file)
    assert r.format == "kohya-lora"
    assert r.base_family == "sd1"
    assert r.cross_attention_dim == 768
    assert r.rank == 128 and r.ranks == [128]
    assert r.coverage.unet > 0 and r.coverage.text_encoder > 0 and r.coverage.text_encoder_2 == 0
    assert r.conv_modules > 0  # proj_in/proj_out are 1x1 convolutions on SD1
    assert r.dtype == "float16"
    assert r.diffusers_loadable


def test_sdxl_kohya_manifest(sdxl_kohya_manifest_file: Path) -> None:
    r = inspect_file(sdxl_kohya_manifest_file)
    assert r.format == "kohya-lora"
    assert r.base_family == "sdxl"
    assert r.cross_attention_dim == 2048
    assert r.coverage.text_encoder_2 > 0 and r.coverage.text_encoder > 0
    assert r.rank == 32
    assert r.dtype == "bfloat16"


def test_lycoris_lokr(lokr_file: Path) -> None:
    r = inspect_file(lokr_file)
    assert r.format == "lycoris-lokr"
    assert not r.diffusers_loadable
    assert r.base_family == "sd1" and r.declared_base_family == "sd1"
    assert r.rank == 4 and r.alpha == 4.0
    assert r.coverage.unet > 0 and r.coverage.text_encoder > 0 and r.coverage.text_encoder_2 == 0
    assert r.modules == r.coverage.unet + r.coverage.text_encoder == len(split_modules(lokr_file))
    assert r.training["network_module"] == "lycoris.kohya"
    assert r.training["resolution"] == [512, 512]
    assert r.training["network_args"] == {"conv_rank": "4", "conv_alpha": "4", "algo": "lokr"}
    assert r.title == "falcon_lokr"
    assert r.trigger_words[0] == "lhfalcon" and r.trigger_source == "ss_tag_frequency"
    assert r.embedded_hashes["sshs_model_hash"] == tensor_region_sha256(lokr_file)
    assert r.metadata["ss_seed"] == "42"
    assert any("LoKr" in w for w in r.warnings)


def test_real_lycoris_lokr_file(real_lokr_file: Path) -> None:
    r = inspect_file(real_lokr_file)
    assert r.format == "lycoris-lokr"
    assert not r.diffusers_loadable
    assert r.base_family == "sd1" and r.declared_base_family == "sd1"
    assert r.rank == 4 and r.alpha == 4.0
    assert r.coverage.unet > 0 and r.coverage.text_encoder > 0
    assert r.training["network_module"] == "lycoris.kohya"
    assert r.training["resolution"] == [768, 768]
    assert r.training["gradient_checkpointing"] is True
    assert r.training["clip_skip"] is None
    assert r.training["network_args"] == {"conv_rank": "4", "conv_alpha": "4", "algo": "lokr"}
    assert r.title == "smart_falcon_lokr_3.0e-4"
    assert "smf girl" in r.trigger_words
    assert any("smart falcon" in w for w in r.trigger_words)
    assert r.trigger_source == "ss_tag_frequency"
    assert r.embedded_hashes["sshs_model_hash"].startswith("150ef207")
    assert r.metadata["ss_seed"] == "42"
    assert any("LoKr" in w for w in r.warnings)


def test_lokr_writer_names_modules_like_the_real_file(lokr_file: Path, real_lokr_file: Path) -> None:
    """The generated LoKr's modules exist in the real one, with the same tensors and the same Kronecker
    product's shape (checks tests/lycoriskit.py; which factor is the larger differs between LyCORIS versions)."""
    generated, real = split_modules(lokr_file), split_modules(real_lokr_file)
    assert set(generated) <= set(real)

    def kron_shape(t: dict[str, tuple]) -> tuple[int, int]:
        return (t["lokr_w1_a"][0] * t["lokr_w2_a"][0], t["lokr_w1_b"][1] * t["lokr_w2_b"][1])

    for name, tensors in generated.items():
        assert set(tensors) == set(real[name]), name
        assert kron_shape(tensors) == kron_shape(real[name]), name


@pytest.mark.parametrize("rank", [8, 16])
def test_lycoris_ranks_generated(tmp_path: Path, rank: int) -> None:
    pytest.importorskip("lycoris")
    from lycoriskit import write_lycoris

    r = inspect_file(write_lycoris(tmp_path / f"lokr{rank}.safetensors", "lokr", rank=rank, alpha=rank))
    assert r.format == "lycoris-lokr" and r.rank == rank and r.alpha == rank


@pytest.mark.parametrize("rank_file", ["smart_falcon_8_lokr.safetensors", "smart_falcon_16_lokr.safetensors"])
def test_lycoris_ranks(shared_fixtures: Path, rank_file: str) -> None:
    r = inspect_file(shared_fixtures / "lycoris" / rank_file)
    assert r.rank == int(rank_file.split("_")[2])


@pytest.mark.parametrize(("algo", "fmt"), [
    ("lokr", "lycoris-lokr"), ("loha", "lycoris-loha"), ("ia3", "lycoris-ia3"), ("glora", "lycoris-glora"),
    ("diag-oft", "lycoris-oft"), ("dylora", "kohya-lora"), ("locon", "kohya-locon"),
])
def test_every_lycoris_algorithm_is_recognised(tmp_path: Path, algo: str, fmt: str) -> None:
    """Files lycoris-lora itself writes, one per algorithm: format, family and coverage from the keys."""
    pytest.importorskip("lycoris")
    from lycoriskit import write_lycoris

    path = write_lycoris(tmp_path / f"{algo}.safetensors", algo, rank=4, alpha=2)
    r = inspect_file(path)
    assert r.format == fmt
    assert r.base_family == "sd1"
    assert r.coverage.unet > 0 and r.coverage.text_encoder > 0
    assert r.diffusers_loadable == fmt.startswith("kohya-")
    assert r.embedded_hashes["sshs_model_hash"].startswith("0x")  # LyCORIS 4 hashes its own way


def _legacy_checks(files: list[Path]) -> None:
    assert files
    for f in files:
        r = inspect_file(f)
        assert r.format == "cloneofsimo"
        assert not r.diffusers_loadable
        assert any("neither diffusers nor ComfyUI" in w for w in r.warnings)
        assert r.base_family == "sd1"
        assert r.coverage.unet > 0


def test_legacy_cloneofsimo(legacy_files: list[Path]) -> None:
    _legacy_checks(legacy_files)
    r = inspect_file(legacy_files[0])
    assert r.coverage.unet == 144 and r.coverage.text_encoder == 48


def test_real_legacy_cloneofsimo(real_legacy_files: list[Path]) -> None:
    _legacy_checks(real_legacy_files)


def test_legacy_writer_has_the_real_files_layout(real_legacy_files: list[Path], tmp_path: Path) -> None:
    """tests/legacykit.py against real cloneofsimo files: the same tensors (names, shapes, dtypes) and the
    same metadata keys, for the same rank, dtype and embeddings."""
    from legacykit import write_cloneofsimo

    from lorahub.adapters.header import read_header

    for real in real_legacy_files:
        h = read_header(real)
        rank = h.tensors["unet:0:down"].shape[0]
        dtype = {"F16": "float16", "F32": "float32"}[h.tensors["unet:0:down"].dtype]
        embeddings = tuple(sorted(n for n in h.tensors if ":" not in n))
        ours = read_header(write_cloneofsimo(tmp_path / real.name, rank=rank, dtype=dtype, embeddings=embeddings))
        assert {n: (t.dtype, t.shape) for n, t in ours.tensors.items()} == {
            n: (t.dtype, t.shape) for n, t in h.tensors.items()}, real.name
        assert set(ours.metadata) == set(h.metadata), real.name


def split_modules(path: Path) -> dict[str, dict[str, tuple]]:
    """module -> {tensor suffix: shape} of a kohya-named file."""
    from lorahub.adapters.header import read_header

    out: dict[str, dict[str, tuple]] = {}
    for name, t in read_header(path).tensors.items():
        module, _, suffix = name.partition(".")
        out.setdefault(module, {})[suffix] = tuple(t.shape)
    return out


def _lora_pair(rank: int, out: int, inp: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return (rng.standard_normal((rank, inp)).astype(np.float16), rng.standard_normal((out, rank)).astype(np.float16))


def test_diffusers_and_peft_formats(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    down, up = _lora_pair(4, 320, 768, rng)
    mod = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    write_numpy(tmp_path / "d.safetensors", {f"{mod}.lora.down.weight": down, f"{mod}.lora.up.weight": up})
    write_numpy(
        tmp_path / "p.safetensors",
        {f"{mod}.lora_A.weight": down, f"{mod}.lora_B.weight": up},
        metadata={"lora_adapter_metadata": json.dumps({"r": 4, "lora_alpha": 8})},
    )
    write_numpy(
        tmp_path / "dora.safetensors",
        {f"{mod}.lora_A.weight": down, f"{mod}.lora_B.weight": up,
         f"{mod}.lora_magnitude_vector": np.ones(320, np.float16)},
    )
    raw = mod.replace("unet.", "base_model.model.")
    write_numpy(tmp_path / "raw.safetensors", {f"{raw}.lora_A.weight": down, f"{raw}.lora_B.weight": up})
    d = inspect_file(tmp_path / "d.safetensors")
    assert (d.format, d.base_family, d.rank, d.alpha, d.diffusers_loadable) == ("diffusers", "sd1", 4, None, True)
    p = inspect_file(tmp_path / "p.safetensors")
    assert (p.format, p.rank, p.alpha) == ("peft", 4, 8.0)
    assert p.module_details[0].scale == 2.0
    dora = inspect_file(tmp_path / "dora.safetensors")
    assert dora.format == "peft-dora" and dora.dora
    raw_r = inspect_file(tmp_path / "raw.safetensors")
    assert raw_r.format == "peft-raw" and not raw_r.diffusers_loadable
    assert any("loads nothing" in w for w in raw_r.warnings)


def test_kohya_dora_locon_and_loha(tmp_path: Path) -> None:
    attn = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    write_safetensors_zeros(tmp_path / "dora.safetensors", {
        f"{attn}.lora_down.weight": ("F16", [8, 1024]), f"{attn}.lora_up.weight": ("F16", [320, 8]),
        f"{attn}.alpha": ("F16", []), f"{attn}.dora_scale": ("F16", [1, 1024]),
    })
    r = inspect_file(tmp_path / "dora.safetensors")
    assert r.format == "kohya-dora" and r.dora and r.base_family == "sd2"
    write_safetensors_zeros(tmp_path / "locon.safetensors", {
        f"{attn}.lora_down.weight": ("F16", [8, 768]), f"{attn}.lora_up.weight": ("F16", [320, 8]),
        f"{conv}.lora_down.weight": ("F16", [4, 320, 3, 3]), f"{conv}.lora_up.weight": ("F16", [320, 4, 1, 1]),
    })
    r = inspect_file(tmp_path / "locon.safetensors")
    assert r.format == "kohya-locon" and r.conv_modules == 1 and r.ranks == [4, 8]
    assert any("no alpha" in w for w in r.warnings)
    write_safetensors_zeros(tmp_path / "loha.safetensors", {
        f"{attn}.hada_w1_a": ("F16", [320, 4]), f"{attn}.hada_w1_b": ("F16", [4, 2048]),
        f"{attn}.hada_w2_a": ("F16", [320, 4]), f"{attn}.hada_w2_b": ("F16", [4, 2048]),
        f"{attn}.alpha": ("F16", []),
    }, metadata={"ss_base_model_version": "sd_v1"})
    r = inspect_file(tmp_path / "loha.safetensors")
    assert r.format == "lycoris-loha" and r.rank == 4 and r.base_family == "sdxl"
    assert r.declared_base_family == "sd1"
    assert any("declares sd1" in w and "sdxl" in w for w in r.warnings)


def test_alpha_values_are_read_from_scalars(tmp_path: Path) -> None:
    mod = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    write_numpy(tmp_path / "a.safetensors", {
        f"{mod}.lora_down.weight": np.zeros((16, 768), np.float16),
        f"{mod}.lora_up.weight": np.zeros((768, 16), np.float16),
        f"{mod}.alpha": np.array(8.0, dtype=np.float32),
    })
    r = inspect_file(tmp_path / "a.safetensors")
    assert r.alpha == 8.0 and r.rank == 16 and r.module_details[0].scale == 0.5
    assert r.base_family == "sd1"  # from the 768-wide text encoder


def test_declared_family_used_when_shapes_are_inconclusive(tmp_path: Path) -> None:
    mod = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    write_safetensors_zeros(tmp_path / "tiny.safetensors", {
        f"{mod}.lora_down.weight": ("F32", [4, 32]), f"{mod}.lora_up.weight": ("F32", [64, 4]),
    }, metadata={"modelspec.architecture": "stable-diffusion-v1/lora", "modelspec.trigger_phrase": "tinystyle"})
    r = inspect_file(tmp_path / "tiny.safetensors")
    assert r.base_family == "sd1" and r.cross_attention_dim == 32
    assert any("declare" in e for e in r.family_evidence)
    assert r.trigger_words == ["tinystyle"] and r.trigger_source == "modelspec.trigger_phrase"


def test_card_instance_prompt_is_a_trigger_source(tmp_path: Path) -> None:
    mod = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    pkg = tmp_path / "pkg"
    write_safetensors_zeros(pkg / "pytorch_lora_weights.safetensors", {
        f"{mod}.lora.down.weight": ("F16", [4, 320]), f"{mod}.lora.up.weight": ("F16", [320, 4]),
    })
    (pkg / "README.md").write_text("---\ninstance_prompt: a photo of sks dog\ntags: [lora]\n---\n# card\n")
    r = inspect_file(pkg / "pytorch_lora_weights.safetensors")
    assert r.trigger_words == ["a photo of sks dog"] and r.trigger_source == "model card instance_prompt"


def test_header_only_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64 MiB adapter is inspected by reading the header and the scalar alphas only."""
    mod = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k"
    path = write_safetensors_zeros(tmp_path / "big.safetensors", {
        f"{mod}.lora_down.weight": ("F32", [4096, 768]), f"{mod}.lora_up.weight": ("F32", [1280, 4096]),
        f"{mod}.alpha": ("F32", []),
    })
    import builtins
    import os

    read_bytes = []
    real_open, real_pread = builtins.open, os.pread

    class Counting:
        def __init__(self, fh):  # noqa: ANN001
            self.fh = fh

        def read(self, n: int = -1) -> bytes:
            data = self.fh.read(n)
            read_bytes.append(len(data))
            return data

        def __getattr__(self, name):  # noqa: ANN001, ANN204
            return getattr(self.fh, name)

        def __enter__(self):  # noqa: ANN204
            return self

        def __exit__(self, *a):  # noqa: ANN002, ANN204
            self.fh.close()

    def counting_open(file, mode="r", *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        fh = real_open(file, mode, *a, **k)
        return Counting(fh) if str(file) == str(path) and "b" in mode else fh

    def counting_pread(fd, n, off):  # noqa: ANN001, ANN202
        data = real_pread(fd, n, off)
        read_bytes.append(len(data))
        return data

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(os, "pread", counting_pread)
    r = inspect_file(path)
    assert r.rank == 4096
    assert sum(read_bytes) < 4096, read_bytes
    assert path.stat().st_size > 30 * 2**20


def test_not_safetensors_and_pickles(tmp_path: Path) -> None:
    (tmp_path / "a.safetensors").write_bytes(b"hello world, not a model")
    with pytest.raises(AdapterFileError, match="header length"):
        inspect_file(tmp_path / "a.safetensors")
    (tmp_path / "b.safetensors").write_bytes(struct.pack("<Q", 4) + b"[1] ")
    with pytest.raises(AdapterFileError, match="not an object"):
        inspect_file(tmp_path / "b.safetensors")
    import pickle

    (tmp_path / "c.ckpt").write_bytes(pickle.dumps({"state_dict": {}}))
    with pytest.raises(PickleRefusedError, match="never unpickles"):
        inspect_file(tmp_path / "c.ckpt")
    with pytest.raises(AdapterFileError, match="no such file"):
        inspect_file(tmp_path / "missing.safetensors")


def test_split_key_formats() -> None:
    assert split_key("lora_unet_x_to_q.lora_down.weight") == ("lora_unet_x_to_q", "down")
    assert split_key("unet.a.to_q.lora.up.weight") == ("unet.a.to_q", "up")
    assert split_key("text_encoder.a.q_proj.lora_linear_layer.down.weight") == ("text_encoder.a.q_proj", "down")
    assert split_key("unet.a.to_q.lora_B.weight") == ("unet.a.to_q", "up")
    assert split_key("unet:12:down") == ("unet:12", "down")
    assert split_key("lora_unet_x.lokr_w1") == ("lora_unet_x", "lokr_w1")
    assert split_key("unet.a.attn1.processor.to_q_lora.down.weight") == ("unet.a.attn1.processor.to_q_lora", "down")
    assert split_key("totally.unrelated") is None


def test_split_key_takes_the_longest_known_suffix_of_any_name() -> None:
    """The rule split_key implements (by dot segments, cached): the longest suffix of the table that the name
    ends with after a non-empty module name; checked on every suffix behind several module spellings, on
    suffixes alone and on cut and spliced names."""
    import random

    from lorahub.adapters.formats import _SUFFIXES

    def rule(name: str) -> tuple[str, str] | None:
        hits = [(sfx, part) for sfx, part in _SUFFIXES if name.endswith(sfx) and len(name) > len(sfx)]
        if not hits:
            return None
        sfx, part = max(hits, key=lambda h: len(h[0]))
        return name[: -len(sfx)], part

    names = [m + sfx for sfx, _ in _SUFFIXES for m in ("lora_unet_a_to_q", "unet.a.to_q", "x", ".", "a.lora", "a.up", "")]
    rng = random.Random(18)
    for _ in range(3000):
        a, b = rng.choice(names), rng.choice(names)
        names.append(a[: rng.randint(0, len(a))] + b[rng.randint(0, len(b)) :])
    for name in names:
        if ":" not in name and ".processor." not in name:  # the cloneofsimo and attention-processor forms aside
            assert split_key(name) == rule(name), name


def test_ss_values_are_decoded_without_eval() -> None:
    assert decode_value("ss_v2", "False") is False
    assert decode_value("ss_clip_skip", "None") is None
    assert decode_value("ss_learning_rate", "0.0001") == 0.0001
    assert decode_value("ss_resolution", "(512, 768)") == [512, 768]
    assert decode_value("ss_network_args", '{"conv_dim": "4"}') == {"conv_dim": "4"}
    assert decode_value("ss_optimizer", "__import__('os').system('x')") == "__import__('os').system('x')"
    assert decode_value("ss_resolution", "(__import__('os'),)") == "(__import__('os'),)"


def test_trigger_words_priority() -> None:
    md = {
        "ss_tag_frequency": json.dumps({"10_sks dog": {"sks dog": 10, "grass": 3}}),
        "modelspec.trigger_phrase": "sks, dog style",
    }
    assert trigger_words(md) == (["sks", "dog style"], "modelspec.trigger_phrase")
    del md["modelspec.trigger_phrase"]
    assert trigger_words(md) == (["sks dog"], "ss_tag_frequency")
    assert trigger_words({}) == ([], None)


def _xl_file(path: Path, metadata: dict[str, str] | None = None, *, te1: bool = True, te2: bool = True) -> Path:
    """A small kohya SDXL-layout LoRA: one UNet cross-attention key (2048 wide), optionally TE1/TE2 modules."""
    tensors = {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": ("F16", [4, 2048]),
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight": ("F16", [640, 4]),
    }
    for prefix, width, on in (("lora_te1_", 768, te1), ("lora_te2_", 1280, te2)):
        if on:
            tensors[f"{prefix}text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = ("F16", [4, width])
            tensors[f"{prefix}text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = ("F16", [width, 4])
    write_safetensors_zeros(path, tensors, metadata=metadata)
    return path


def test_text_encoder_coverage_and_training_resolution(tmp_path: Path) -> None:
    both = inspect_file(_xl_file(tmp_path / "both.safetensors", {"ss_resolution": "(1024, 1024)"}))
    assert both.base_family == "sdxl" and both.text_encoders == ["text_encoder", "text_encoder_2"]
    assert both.training_resolution == [1024, 1024] and not [w for w in both.warnings if "resolution" in w]
    te2 = inspect_file(_xl_file(tmp_path / "te2.safetensors", {"modelspec.resolution": "896x1152"}, te1=False))
    assert te2.text_encoders == ["text_encoder_2"] and te2.training_resolution == [896, 1152]
    unet_only = inspect_file(_xl_file(tmp_path / "unet.safetensors", te1=False, te2=False))
    assert unet_only.text_encoders == [] and unet_only.training_resolution is None
    # kohya's other spellings; ss_resolution wins over modelspec.resolution, and a disagreement is reported
    for raw, want in (("[768, 1344]", [768, 1344]), ("1024", [1024, 1024]), ("1024,768", [1024, 768])):
        r = inspect_file(_xl_file(tmp_path / "s.safetensors", {"ss_resolution": raw}))
        assert r.training_resolution == want, raw
    odd = inspect_file(_xl_file(tmp_path / "odd.safetensors",
                                {"ss_resolution": "(1024, 1024)", "modelspec.resolution": "512x512"}))
    assert odd.training_resolution == [1024, 1024]
    assert any("ss_resolution says 1024x1024 but modelspec.resolution says 512x512" in w for w in odd.warnings)
    junk = inspect_file(_xl_file(tmp_path / "junk.safetensors", {"ss_resolution": "big"}))
    assert junk.training_resolution is None and any("'big' is not a resolution" in w for w in junk.warnings)
    none = inspect_file(_xl_file(tmp_path / "none.safetensors", {"ss_resolution": "None"}))
    assert none.training_resolution is None and not [w for w in none.warnings if "resolution" in w]


def test_real_sdxl_file_covers_both_text_encoders(sdxl_kohya_file: Path) -> None:
    r = inspect_file(sdxl_kohya_file)
    assert r.text_encoders == ["text_encoder", "text_encoder_2"]


def test_human_inspect_shows_text_encoders_and_resolution(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lorahub.cli.main import cli

    path = _xl_file(tmp_path / "x.safetensors", {"ss_resolution": "(1024, 1024)"}, te1=False)
    res = CliRunner().invoke(cli, ["inspect", str(path)])
    assert res.exit_code == 0, res.output
    assert "TE2 (text_encoder_2)" in res.stdout and "TE1" not in res.stdout
    assert "1024x1024" in res.stdout


def test_module_details_are_the_models_validation_makes(tmp_path: Path, sd15_kohya_manifest_file: Path,
                                                        sdxl_kohya_manifest_file: Path, lokr_file: Path) -> None:
    """A report's module details are made without pydantic's per-field validation (lorahub/adapters/inspect.py
    ``_module_info``): each equals the model validating its dump makes, field for field and type for type (an
    alpha read as the integer 8 would print ``8`` where validation prints ``8.0``), its JSON the same, for kohya,
    LyCORIS and every family's layout the tests write; and the report validates as it is."""
    from family_shapes import FIXTURES, write_fixture

    from lorahub.schemas.adapters import InspectReport, ModuleInfo

    files = [sd15_kohya_manifest_file, sdxl_kohya_manifest_file, lokr_file]
    files += [write_fixture(name, tmp_path / name) for name in FIXTURES]
    seen = alphas = 0
    for f in files:
        r = inspect_file(f)
        for d in r.module_details:
            alphas += d.alpha is not None
            v = ModuleInfo.model_validate(d.model_dump())
            assert d == v and d.model_fields_set == v.model_fields_set
            assert {k: type(x) for k, x in d.__dict__.items()} == {k: type(x) for k, x in v.__dict__.items()}, d
            assert d.model_dump_json() == v.model_dump_json()
            seen += 1
        assert InspectReport.model_validate_json(r.model_dump_json()) == r
    assert seen > 1000 and alphas
