"""Committed adapters are validated and indexed server-side: search and by-hash over HTTP see them at once."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.errors import HfHubHTTPError

from lorahub.adapters.fingerprint import fingerprint_file

CARD = """---
license: creativeml-openrail-m
tags:
- anime
- watercolor
base_model: runwayml/stable-diffusion-v1-5
base_model_relation: adapter
instance_prompt: tnystl
library_name: diffusers
pipeline_tag: text-to-image
---
# Tiny style

A watercolour anime style for tests.
"""


def search(srv, user: str | None = None, **params) -> list[dict]:  # noqa: ANN003
    r = srv.request("GET", "/api/lorahub/search", user=user, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_pushed_adapter_is_searchable_at_once(hub_server, kohya_lora) -> None:
    srv = hub_server
    api = srv.api()
    lora = kohya_lora("tinystyle.safetensors", rank=8, title="tinystyle")
    fp = fingerprint_file(lora, use_cache=False)
    api.create_repo("alice/tiny-style")
    ci = api.create_commit(
        "alice/tiny-style",
        [CommitOperationAdd("tinystyle.safetensors", lora), CommitOperationAdd("README.md", CARD.encode())],
        commit_message="tiny style",
    )
    info = api.model_info("alice/tiny-style")
    assert "lora" in info.tags and "base_model:adapter:runwayml/stable-diffusion-v1-5" in info.tags

    hits = search(srv, q="anime watercolor")
    assert hits and hits[0]["source_kind"] == "hub"
    top = hits[0]
    assert top["name"] == "tiny-style"
    assert top["source"].startswith(f"alice/tiny-style@{ci.oid[:12]}")
    assert top["sha256"] == fp.sha256 and top["autov3"] == fp.autov3.upper()
    assert top["format"] == "kohya-lora" and top["base_family"] == "sd1" and top["rank"] == 8
    assert top["license"] == "creativeml-openrail-m" and top["author"] == "alice"
    assert "tnystl" in top["trigger_words"] and "anime" in top["tags"]
    assert top["url"] == f"{srv.url}/alice/tiny-style"
    assert [h["name"] for h in search(srv, q="tiny", base="sd1", format="kohya-lora", tag="anime")] == ["tiny-style"]
    assert search(srv, q="tiny", base="sdxl") == []
    assert [h["name"] for h in search(srv, author="alice", min_rank=8, max_rank=8)] == ["tiny-style"]
    # By meaning too: the commit wrote the record's sentence embedding; the API's modes are the registry's.
    for mode in ("semantic", "hybrid", "auto"):
        assert [h["name"] for h in search(srv, q="pictures painted with water colours", mode=mode)] == ["tiny-style"], mode
    assert search(srv, q="pictures painted with water colours", mode="keyword") == []
    assert search(srv, q="pictures painted with water colours", mode="semantic", base="sdxl") == []

    for h in (fp.sha256, fp.autov2, fp.autov3, fp.blake3, fp.crc32, fp.sha256[:8].upper()):
        r = srv.request("GET", f"/api/lorahub/by-hash/{h}", user=None)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"] == h and [m["name"] for m in body["matches"]] == ["tiny-style"], h
    assert srv.request("GET", "/api/lorahub/by-hash/" + "0" * 64).json()["matches"] == []
    assert srv.request("GET", "/api/lorahub/by-hash/xyz12345").status_code in (400, 422)
    assert srv.request("GET", "/api/lorahub/by-hash/abc").status_code == 422

    # A new commit replaces the indexed version; deleting the adapter removes it from the registry.
    lora2 = kohya_lora("tinystyle2.safetensors", rank=4, seed=1)
    ci2 = api.create_commit(
        "alice/tiny-style",
        [CommitOperationDelete("tinystyle.safetensors"), CommitOperationAdd("tinystyle.safetensors", lora2)],
        commit_message="retrain",
    )
    top = search(srv, q="tiny-style")[0]
    assert top["source"].startswith(f"alice/tiny-style@{ci2.oid[:12]}") and top["rank"] == 4
    assert srv.request("GET", f"/api/lorahub/by-hash/{fp.sha256}").json()["matches"] == []
    api.delete_file("tinystyle.safetensors", "alice/tiny-style")
    assert search(srv, q="tiny-style") == []


def test_private_adapters_only_for_their_owner(hub_server, kohya_lora) -> None:
    srv = hub_server
    api = srv.api()
    api.create_repo("alice/hidden-style", private=True)
    lora = kohya_lora("hidden.safetensors", seed=7, title="hiddenstyle")
    api.upload_file(path_or_fileobj=lora, path_in_repo="hidden.safetensors", repo_id="alice/hidden-style")
    sha = hashlib.sha256(lora.read_bytes()).hexdigest()
    assert search(srv, q="hidden-style") == []
    assert search(srv, user="bob", q="hidden-style") == []
    assert [h["name"] for h in search(srv, user="alice", q="hidden-style")] == ["hidden-style"]
    for mode in ("semantic", "hybrid"):  # by meaning: the same rule
        assert "hidden-style" not in [h["name"] for h in search(srv, user="bob", q="hidden style", mode=mode)]
        assert "hidden-style" in [h["name"] for h in search(srv, user="alice", q="hidden style", mode=mode)]
    assert srv.request("GET", f"/api/lorahub/by-hash/{sha}", user=None).json()["matches"] == []
    assert len(srv.request("GET", f"/api/lorahub/by-hash/{sha}", user="alice").json()["matches"]) == 1
    # Made public: everyone finds it.
    api.update_repo_settings("alice/hidden-style", private=False)
    assert [h["name"] for h in search(srv, q="hidden-style")] == ["hidden-style"]
    api.delete_repo("alice/hidden-style")
    assert search(srv, user="alice", q="hidden-style") == []


def test_invalid_adapters_and_pickles_are_refused(hub_server, kohya_lora, tmp_path: Path) -> None:
    srv = hub_server
    api = srv.api()
    api.create_repo("alice/refusals")
    head = api.model_info("alice/refusals").sha
    bad = kohya_lora("broken.safetensors", rank=4, up_rank=8)
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_file(path_or_fileobj=bad, path_in_repo="broken.safetensors", repo_id="alice/refusals")
    assert err.value.response.status_code == 422
    assert "broken.safetensors: invalid adapter" in str(err.value) and "inconsistent rank" in str(err.value)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + bytes(100))
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_file(path_or_fileobj=garbage, path_in_repo="garbage.safetensors", repo_id="alice/refusals")
    assert err.value.response.status_code == 422 and "JSON" in str(err.value)

    pkl = pickle.dumps({"state_dict": [1, 2, 3]}, protocol=4)
    for name in ("model.ckpt", "weights.pt", "sneaky.bin", "renamed.safetensors", "data.dat"):
        with pytest.raises(HfHubHTTPError) as err:
            api.upload_file(path_or_fileobj=pkl + bytes(64), path_in_repo=name, repo_id="alice/refusals")
        assert err.value.response.status_code == 422, name
        assert "pickle" in str(err.value), name
    assert api.model_info("alice/refusals").sha == head  # nothing landed
    assert [h for h in search(srv, author="alice") if h["name"] == "refusals"] == []


def test_lycoris_and_pipeline_weights(hub_server, lokr_file: Path, tmp_path: Path) -> None:
    """A LyCORIS LoKr file (written by lycoris-lora) is indexed; a model folder's weights (config.json beside) are only layout-checked."""
    srv = hub_server
    api = srv.api("bob")
    api.create_repo("bob/falcon")
    api.upload_file(path_or_fileobj=lokr_file, path_in_repo="smart_falcon.safetensors", repo_id="bob/falcon")
    hits = search(srv, q="falcon")
    assert [h["format"] for h in hits] == ["lycoris-lokr"]

    import numpy as np

    from lorahub.adapters.writer import write_numpy

    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    write_numpy(model / "unet" / "diffusion_pytorch_model.safetensors", {"conv_in.weight": np.zeros((4, 4, 3, 3), np.float32)})
    api.create_repo("bob/tiny-unet")
    api.upload_folder(folder_path=model, repo_id="bob/tiny-unet")
    assert "unet/diffusion_pytorch_model.safetensors" in api.list_repo_files("bob/tiny-unet")
    assert search(srv, q="tiny-unet") == []  # weights, not an adapter: not indexed
    # ... but a lone non-adapter .safetensors in an adapter repo is refused like in `lorahub validate`.
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_file(path_or_fileobj=model / "unet" / "diffusion_pytorch_model.safetensors", path_in_repo="lone.safetensors", repo_id="bob/falcon")
    assert err.value.response.status_code == 422 and "no LoRA" in str(err.value)


def test_openapi_documents_the_search_api(hub_server) -> None:
    spec = httpx.get(f"{hub_server.url}/openapi.json").json()
    assert {"/api/lorahub/search", "/api/lorahub/by-hash/{hash}", "/api/lorahub/health"} <= set(spec["paths"])
    assert not any(p.startswith("/api/models") for p in spec["paths"])  # the Hub routes follow the Hub's protocol
    assert "SearchResult" in spec["components"]["schemas"] and "HashLookup" in spec["components"]["schemas"]
    assert httpx.get(f"{hub_server.url}/docs").status_code == 200
    health = httpx.get(f"{hub_server.url}/api/lorahub/health").json()
    assert health["status"] == "ok" and health["database"] == ("sqlite" if hub_server.backend == "sqlite" else "postgresql")
    bad = httpx.get(f"{hub_server.url}/api/lorahub/search", params={"limit": 0})
    assert bad.status_code == 422 and "error" in bad.json()
    for params in ({"q": "x", "mode": "fuzzy"}, {"q": "x", "mode": "semantic", "sort": "newest"}):
        bad = httpx.get(f"{hub_server.url}/api/lorahub/search", params=params)
        assert bad.status_code == 422 and "mode" in bad.json()["error"], params
