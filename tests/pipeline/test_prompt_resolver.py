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
    """A real HTTP server on loopback speaking the two Hub endpoints hf_hub_download needs."""
    import hashlib
    import http.server
    import json
    import threading

    data = lora_file.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    commit = "0" * 40

    class Hub(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # noqa: ANN002
            pass

        def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/api/models/someone/mystyle/tree/main"):
                listing = [{"type": "file", "path": "pytorch_lora_weights.safetensors", "size": len(data), "oid": sha}]
                self._send(200, json.dumps(listing).encode(), {"Content-Type": "application/json"})
            elif self.path == "/someone/mystyle/resolve/main/pytorch_lora_weights.safetensors":
                self._send(200, data, {"X-Repo-Commit": commit, "ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"',
                                       "X-Linked-Size": str(len(data))})
            else:
                self._send(404, b'{"error":"Repository not found"}',
                           {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound"})

        do_HEAD = do_GET

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        import huggingface_hub.constants as hc

        monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        hit = Resolver(steps=None).resolve("someone/mystyle")
        assert hit.kind == "hub" and hit.path.read_bytes() == data
        assert hit.source == "someone/mystyle/pytorch_lora_weights.safetensors"
    finally:
        server.shutdown()


def test_registry_names_and_hashes_resolve(lora_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("sqlalchemy")
    from lorahub.adapters.fingerprint import fingerprint_file
    from lorahub.registry.service import Registry

    folder = tmp_path / "indexed"
    folder.mkdir()
    target = folder / "neon-nights.safetensors"
    shutil.copy(lora_file, target)
    with Registry() as reg:  # $LORAHUB_HOME/registry.sqlite of this test
        reg.index_paths([folder])
    hit = Resolver().resolve("neon-nights")
    assert hit.kind == "registry" and hit.path == target.resolve()
    by_hash = Resolver().resolve(fingerprint_file(target).sha256[:12])
    assert by_hash.path == target.resolve()
