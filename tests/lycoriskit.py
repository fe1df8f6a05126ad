"""LyCORIS files for SD 1.5, written at test time by the ``lycoris-lora`` package's own code.

The core suite's stand-ins for real LyCORIS files (the real LoKr files beside the project are extra
checks). What kohya-ss/sd-scripts' ``train_network.py`` does with ``--network_module lycoris.kohya``,
minus the training: ``lycoris.kohya.create_network(multiplier, dim, alpha, vae, text_encoder, unet,
algo=..., conv_dim=..., conv_alpha=...)`` on the models, then the network's ``save_weights`` (which
writes the state dict with ``safetensors`` and LyCORIS 4's ``0x`` ``sshs_model_hash``).

The models are a skeleton of SD 1.5's: torch modules with the class names lycoris looks for
(``Transformer2DModel`` in the UNet, ``CLIPAttention``/``CLIPMLP`` in the text encoder), diffusers' and
transformers' attribute paths and SD 1.5's real widths, but only a few blocks (UNet
``down_blocks.{0,1}.attentions.0`` at 320/640 channels with cross-attention 768 and 1x1-convolution
``proj_in``/``proj_out``; text encoder ``text_model.encoder.layers.{0,1}`` of CLIP ViT-L, 768 wide, MLP
3072). Names come out as in real files (``lora_unet_down_blocks_0_attentions_0_proj_in``,
``lora_te_text_model_encoder_layers_0_mlp_fc1``): lycoris names every module ``prefix + "." + path``
with dots replaced by ``_``.

``kohya_hashes=True`` records the hashes as sd-scripts did when these files were made (2023; LyCORIS
then called sd-scripts' ``train_util.precalculate_safetensors_hashes``): ``sshs_model_hash`` = SHA-256
of the bytes after the header, ``sshs_legacy_hash`` = the old A1111 hash (SHA-256 of bytes
``[0x100000, 0x110000)``, first 8 hex digits). The header is rewritten with plain JSON; the tensor
bytes stay exactly as safetensors wrote them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

#: the LyCORIS algorithms :func:`write_lycoris` takes (``algo`` of ``create_network``)
ALGOS = ("lokr", "loha", "ia3", "dylora", "glora", "diag-oft", "locon", "full")
CROSS = 768
#: caption tags and their counts (``ss_tag_frequency`` beside the trigger word)
TAGS = {"1girl": 18, "solo": 17, "looking at viewer": 12, "smile": 11, "long hair": 9, "outdoors": 6,
        "hair ornament": 5, "holding microphone": 4, "upper body": 4, "open mouth": 3}


def sd15_skeleton() -> tuple[Any, Any]:
    """(text_encoder, unet): SD 1.5's module tree in part, with real names and widths."""
    from torch import nn

    def cls(name: str) -> type:
        return type(name, (nn.Module,), {})

    transformer_cls, attention_cls, mlp_cls = cls("Transformer2DModel"), cls("CLIPAttention"), cls("CLIPMLP")

    def attention(c: int, kv: int) -> nn.Module:
        a = nn.Module()
        a.to_q, a.to_k, a.to_v = nn.Linear(c, c, bias=False), nn.Linear(kv, c, bias=False), nn.Linear(kv, c, bias=False)
        a.to_out = nn.ModuleList([nn.Linear(c, c), nn.Dropout()])
        return a

    def transformer(c: int) -> nn.Module:
        t = transformer_cls()
        t.norm = nn.GroupNorm(32, c)
        t.proj_in = nn.Conv2d(c, c, 1)
        block = nn.Module()
        block.attn1, block.attn2 = attention(c, c), attention(c, CROSS)
        geglu = nn.Module()
        geglu.proj = nn.Linear(c, 8 * c)
        block.ff = nn.Module()
        block.ff.net = nn.ModuleList([geglu, nn.Dropout(), nn.Linear(4 * c, c)])
        t.transformer_blocks = nn.ModuleList([block])
        t.proj_out = nn.Conv2d(c, c, 1)
        return t

    unet = nn.Module()
    downs = []
    for c in (320, 640):
        down = nn.Module()
        down.attentions = nn.ModuleList([transformer(c)])
        downs.append(down)
    unet.down_blocks = nn.ModuleList(downs)

    layers = []
    for _ in range(2):
        layer = nn.Module()
        layer.self_attn = attention_cls()
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            setattr(layer.self_attn, name, nn.Linear(768, 768))
        layer.mlp = mlp_cls()
        layer.mlp.fc1, layer.mlp.fc2 = nn.Linear(768, 3072), nn.Linear(3072, 768)
        layers.append(layer)
    text_encoder = nn.Module()
    text_encoder.text_model = nn.Module()
    text_encoder.text_model.encoder = nn.Module()
    text_encoder.text_model.encoder.layers = nn.ModuleList(layers)
    return text_encoder, unet


def kohya_metadata(algo: str, rank: int, alpha: float, title: str, trigger: str) -> dict[str, str]:
    """The ``ss_*`` keys sd-scripts writes that the tests read (kohya-ss/sd-scripts ``train_network.py``)."""
    return {
        "ss_network_module": "lycoris.kohya",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(float(alpha)),
        "ss_network_args": json.dumps({"conv_rank": str(rank), "conv_alpha": str(int(alpha)), "algo": algo}),
        "ss_output_name": title,
        "ss_tag_frequency": json.dumps({f"10_{trigger}": {trigger: 20, **TAGS}}),
        "ss_dataset_dirs": json.dumps({f"10_{trigger}": {"n_repeats": 10, "img_count": 20}}),
        "ss_bucket_info": json.dumps({"buckets": {"0": {"resolution": [512, 512], "count": 200}},
                                      "mean_img_ar_error": 0.0}),
        "ss_resolution": "(512, 512)",
        "ss_v2": "False",
        "ss_base_model_version": "sd_v1",
        "ss_seed": "42",
    }


def write_lycoris(path: Path, algo: str = "lokr", *, rank: int = 4, alpha: float = 4, seed: int = 0,
                  dtype: str = "float16", kohya_hashes: bool = False, title: str | None = None,
                  trigger: str = "lhfalcon", **network_args: Any) -> Path:
    """Write a LyCORIS file for the SD 1.5 skeleton with lycoris' ``create_network`` and ``save_weights``.

    The factors are random (lycoris starts one side at zero, which would make every update 0).
    ``network_args`` go to ``create_network`` (LoKr defaults: both Kronecker factors low-rank, as in the
    real files: ``lokr_w1_a/_b``, ``lokr_w2_a/_b``)."""
    import torch
    from lycoris.kohya import create_network

    if algo == "lokr":
        network_args = {"decompose_both": True, "factor": -1, **network_args}
    text_encoder, unet = sd15_skeleton()
    torch.manual_seed(seed)
    level = logging.root.manager.disable
    logging.disable(logging.WARNING)  # lycoris logs every module it creates
    try:
        net = create_network(1.0, rank, alpha, None, text_encoder, unet, algo=algo, preset="full",
                             conv_dim=rank, conv_alpha=alpha, **network_args)
        net.apply_to(text_encoder, unet, apply_text_encoder=True, apply_unet=True)  # registers the modules
    finally:
        logging.disable(level)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = kohya_metadata(algo, rank, alpha, title or path.stem, trigger)
    net.save_weights(str(path), getattr(torch, dtype), metadata)
    if kohya_hashes:
        rewrite_metadata(path, {"sshs_model_hash": tensor_region_sha256(path), "sshs_legacy_hash": a1111_old_hash(path)})
    return path


def tensor_region_sha256(path: Path) -> str:
    """SHA-256 of the bytes after the header (sd-scripts' ``addnet_hash_safetensors``)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + n:]).hexdigest()


def a1111_old_hash(path: Path) -> str:
    """sd-scripts' ``addnet_hash_legacy`` / A1111's old model hash: bytes ``[0x100000, 0x110000)``."""
    with open(path, "rb") as fh:
        fh.seek(0x100000)
        return hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]


def rewrite_metadata(path: Path, updates: dict[str, str]) -> None:
    """Set ``__metadata__`` keys; the header is re-dumped and space-padded to 8 bytes, the tensors kept."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["__metadata__"] = {**header.get("__metadata__", {}), **updates}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])
