"""A1111 prompt syntax and adapter name resolution (no torch)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lorahub.errors import NotFoundError, PickleRefusedError, UsageError
from lorahub.pipeline.prompt import LoraTag, format_tags, parse_prompt, parse_spec
from lorahub.pipeline.resolver import Resolved, Resolver, parse_hub_ref


def test_a1111_tags_are_parsed_and_stripped() -> None:
    text, tags = parse_prompt("masterpiece, <lora:style:0.8>, a cat <lora:detail:0.5:1.2> on a mat <lora:plain>")
    assert text == "masterpiece, a cat on a mat"
    assert [(t.name, t.te, t.unet) for t in tags] == [("style", 0.8, 0.8), ("detail", 0.5, 1.2), ("plain", 1.0, 1.0)]
    assert tags[0].text == "<lora:style:0.8>"


def test_named_weights_dyn_lyco_and_repeats() -> None:
    _, tags = parse_prompt("<lora:a:unet=0.3:te=0.7> <LYCO:b:1:0.5:8> <lora:a:0.1> x")
    assert [(t.name, t.te, t.unet, t.dyn) for t in tags] == [("b", 1.0, 0.5, 8), ("a", 0.1, 0.1, None)]
    _, tags = parse_prompt("<lora:c:te=0.2>")
    assert (tags[0].te, tags[0].unet) == (0.2, 0.2)  # as A1111: UNET defaults to TE, named or not


def test_names_may_contain_colons_and_slashes() -> None:
    tag = parse_spec("someone/repo:weights/v2.safetensors:0.4")
    assert tag == LoraTag("someone/repo:weights/v2.safetensors", 0.4, 0.4, None, "someone/repo:weights/v2.safetensors:0.4")
    assert parse_spec("/abs/path/x.safetensors").name == "/abs/path/x.safetensors"


@pytest.mark.parametrize("spec", ["", ":0.5", "a:0.5:x", "a:1:2:3:4", "a:te=abc", "a:inf"])
def test_bad_specs_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_spec(spec)


def test_text_without_tags_is_unchanged_and_tags_round_trip() -> None:
    assert parse_prompt("a <b> c") == ("a <b> c", [])
    _, tags = parse_prompt("<lora:x:0.5> <lora:y:0.25:1>")
    assert format_tags(tags) == "<lora:x:0.5> <lora:y:0.25:1>"


# ---------------------------------------------------------------------------------------------- resolver


@pytest.fixture
def lora_file(tmp_path: Path) -> Path:
    import numpy as np

    from lorahub.adapters.writer import write_numpy

    return write_numpy(tmp_path / "mystyle.safetensors", {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": np.ones((2, 32), "float32"),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": np.ones((32, 2), "float32"),
    }, {"modelspec.title": "mystyle"})


def test_paths_package_folders_and_lora_dirs(lora_file: Path, tmp_path: Path) -> None:
    r = Resolver(lora_dirs=[tmp_path])
    assert r.resolve(str(lora_file)) == Resolved(str(lora_file), lora_file.resolve(), "file", str(lora_file))
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    shutil.copy(lora_file, pkg / "pytorch_lora_weights.safetensors")
    (pkg / "other.safetensors").write_bytes(lora_file.read_bytes())
    assert r.resolve(str(pkg)).path == (pkg / "pytorch_lora_weights.safetensors").resolve()
    assert r.resolve("mystyle").kind == "dir"  # NAME.safetensors in a lora dir
    assert r.resolve("pkg").path.name == "pytorch_lora_weights.safetensors"
    two = tmp_path / "two"
    two.mkdir()
    for n in ("x", "y"):
        shutil.copy(lora_file, two / f"{n}.safetensors")
    with pytest.raises(NotFoundError, match="2 .safetensors files"):
        r.resolve(str(two))


def test_pickles_are_refused_and_unknown_names_explained(tmp_path: Path) -> None:
    ckpt = tmp_path / "old.ckpt"
    ckpt.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(PickleRefusedError):
        Resolver().resolve(str(ckpt))
    with pytest.raises(NotFoundError, match="adapter 'nothing-here' not found"):
        Resolver(steps=[]).resolve("nothing-here")


def test_custom_steps_plug_in(lora_file: Path) -> None:
    def mine(name: str, resolver: Resolver) -> Resolved | None:
        return Resolved(name, lora_file, "custom", "mine") if name.startswith("my:") else None

    r = Resolver()
    r.add_step(mine, first=True)
    assert r.resolve("my:thing").kind == "custom"


def test_hub_references_are_parsed() -> None:
    assert parse_hub_ref("someone/lora") == ("someone/lora", None, None)
    assert parse_hub_ref("someone/lora@v2") == ("someone/lora", "v2", None)
    assert parse_hub_ref("someone/lora/sub/file.safetensors") == ("someone/lora", None, "sub/file.safetensors")
    assert parse_hub_ref("someone/lora@abc:file.safetensors") == ("someone/lora", "abc", "file.safetensors")
    for not_hub in ("mystyle", "./a/b", "/abs/x", "a/b/c.bin", "a b/c"):
        assert parse_hub_ref(not_hub) is None


def test_hub_ids_download_from_hf_endpoint(lora_file: Path, tmp_path: Path, monkeypatch) -> None:
    """A Hub id resolves through huggingface_hub against a real `lorahub serve` on loopback (HF_ENDPOINT)."""
    pytest.importorskip("fastapi")
    import hubkit as srv

    server = srv.start_server(tmp_path / "serve", None, "sqlite")
    try:
        api = server.api("alice")
        api.create_repo("alice/mystyle")
        api.upload_file(path_or_fileobj=str(lora_file), path_in_repo="pytorch_lora_weights.safetensors",
                        repo_id="alice/mystyle")
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", server.tokens["alice"])
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        import huggingface_hub.constants as hc

        monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        hit = Resolver(steps=None).resolve("alice/mystyle")
        assert hit.kind == "hub" and hit.path.read_bytes() == lora_file.read_bytes()
        assert hit.source == "alice/mystyle/pytorch_lora_weights.safetensors"
    finally:
        srv.stop_server(server)


def test_registry_names_and_hashes_resolve(lora_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("sqlalchemy")
    from lorahub.adapters.fingerprint import fingerprint_file
    from lorahub.registry.catalogue import Registry
    from lorahub.registry.resolving import registry_resolver

    folder = tmp_path / "indexed"
    folder.mkdir()
    target = folder / "neon-nights.safetensors"
    shutil.copy(lora_file, target)
    with Registry() as reg:  # $LORAHUB_HOME/registry.sqlite of this test
        reg.index_paths([folder])
    hit = registry_resolver().resolve("neon-nights")  # the default registry, found without being named
    assert hit.kind == "registry" and hit.path == target.resolve()
    by_hash = registry_resolver().resolve(fingerprint_file(target).sha256[:12])
    assert by_hash.path == target.resolve()
    with pytest.raises(NotFoundError):  # the library's own resolver knows no registry
        Resolver().resolve("neon-nights")
