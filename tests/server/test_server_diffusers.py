"""diffusers loads a pipeline and a LoRA from ``lorahub serve`` by repo id, through ``HF_ENDPOINT``.

huggingface_hub reads ``HF_ENDPOINT`` when it is imported, so the diffusers side runs in a
subprocess with the environment set (the test process itself talks to the server through
``HfApi(endpoint=...)``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.torch, pytest.mark.slow]

SCRIPT = r"""
import json, sys
import torch
from diffusers import StableDiffusionPipeline

pipe = StableDiffusionPipeline.from_pretrained("alice/sd1-tiny", safety_checker=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)

def run():
    g = torch.Generator().manual_seed(0)
    return pipe("a tnystl painting", num_inference_steps=2, generator=g, output_type="np", height=64, width=64).images

before = run()
pipe.load_lora_weights("alice/tiny-lora")          # no weight_name: picked from model_info().siblings
after = run()
print("RESULT " + json.dumps({
    "pipeline": type(pipe).__name__,
    "adapters": pipe.get_list_adapters(),
    "diff": float(abs(after - before).max()),
}))
"""


def test_from_pretrained_and_load_lora_weights_by_repo_id(sqlite_server, embedded_base: Path, tmp_path: Path) -> None:
    from lorahub.base.synthetic import make_adapter

    srv = sqlite_server
    api = srv.api()
    api.create_repo("alice/sd1-tiny")
    api.upload_folder(folder_path=embedded_base, repo_id="alice/sd1-tiny", commit_message="embedded SD1 pipeline")
    files = set(api.list_repo_files("alice/sd1-tiny"))
    assert {"model_index.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json"} <= files

    lora = make_adapter(tmp_path / "pytorch_lora_weights.safetensors", base=embedded_base, rank=4, fmt="diffusers", trigger="tnystl")
    api.create_repo("alice/tiny-lora", private=True)  # loaded with alice's token (HF_TOKEN)
    api.upload_file(path_or_fileobj=lora, path_in_repo="pytorch_lora_weights.safetensors", repo_id="alice/tiny-lora")

    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=srv.env("alice"),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["pipeline"] == "StableDiffusionPipeline"
    assert result["adapters"]["unet"]  # the LoRA is attached to the UNet
    assert result["diff"] > 1e-4  # and changes the image
    log = srv.log_text()
    assert '"GET /alice/sd1-tiny/resolve/' in log and '"GET /alice/tiny-lora/resolve/' in log
    # Pipeline weights are accepted but not indexed; the LoRA is.
    hits = srv.request("GET", "/api/lorahub/search", params={"q": "tiny-lora"}).json()
    assert [h["name"] for h in hits] == ["tiny-lora"] and hits[0]["format"] in ("peft", "diffusers")
    names = {h["name"] for h in srv.request("GET", "/api/lorahub/search", params={"q": "sd1 tiny", "limit": 50}).json()}
    assert "sd1-tiny" not in names
