"""Under torch.compile (eager backend), swaps and weight changes do not recompile (torch's own counters).

The embedded UNet has 16 transformer blocks and takes about a minute to trace on a
busy CPU, so this test uses a micro UNet (two blocks) with the embedded text
encoder, VAE and tokenizer. The full recompilation benchmark (10 swaps, ranks up
to the target rank, optional inductor) is benchmarks/bench_pipeline.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.torch, pytest.mark.slow]


def with_micro_unet(base: Path, out: Path, **unet: Any) -> Path:
    """``base`` saved to ``out`` with its UNet replaced by a micro one (two levels of 32 and 64 channels, one
    resnet each, 8x8 latents; ``unet`` gives the rest of its config), initialised from seed 0."""
    import diffusers
    import torch

    from lorahub.base.resolve import load_pipeline
    from lorahub.pipeline.live import quiet

    pipe = load_pipeline(base)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pipe.unet = diffusers.UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                                                   **unet)
    with quiet():
        pipe.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def micro_base(embedded_base: Path, tmp_path_factory, one_thread) -> Path:
    return with_micro_unet(
        embedded_base, tmp_path_factory.mktemp("micro") / "micro-sd",
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=4, norm_num_groups=32,  # the base's text encoder: 64 wide
    )


def test_swaps_and_weight_changes_do_not_recompile(micro_base: Path, tmp_path: Path) -> None:
    from torch._dynamo.utils import counters

    from lorahub.base.synthetic import make_adapter
    from lorahub.pipeline.live import LivePipeline

    files = [
        make_adapter(tmp_path / f"m{i}.safetensors", base=micro_base, rank=r, alpha=a, seed=30 + i, text_encoder=te)
        for i, (r, a, te) in enumerate([(4, 2, True), (8, 16, False), (2, 2, True), (8, 4, False)])
    ]
    live = LivePipeline(micro_base, target_rank=8, compile="eager")
    live.add("a", files[0])
    live.add("b", files[1], weight=0.5)
    first = live.render("a cat", steps=1, output_type="np").image  # compiles
    frames = int(counters["frames"]["total"])
    assert live.recompilations() == 0
    for i, path in enumerate(files[2:] + files[:2]):
        live.swap("a" if i % 2 == 0 else "b", path)
        live.set_weight("b", 0.25 + 0.1 * i)
        live.render("a cat", steps=1, output_type="np")
    live.disable("a")  # under compile: weight 0, same active set
    last = live.render("a cat", steps=1, output_type="np").image
    assert int(counters["frames"]["total"]) == frames
    assert live.recompilations() == 0
    assert live.stats["hotswaps"] == 4 and live.stats["reloads"] == 0
    assert float(abs(last - first).max()) > 1e-3  # the swaps did change the output
    live.close()


@pytest.fixture(scope="module")
def micro_xl_base(embedded_xl_base: Path, tmp_path_factory, one_thread) -> Path:
    """The embedded SDXL pipeline (both text encoders, VAE, tokenizers) with a micro SDXL UNet: one level without
    and one with attention, one resnet per level (SGM numbering from layers_per_block=1), SDXL's added
    conditioning (text embeds + time ids) and linear projections."""
    from lorahub.base.embedded import SDXL_TIME_EMBED_DIM, SDXL_UNET_CONFIG

    return with_micro_unet(
        embedded_xl_base, tmp_path_factory.mktemp("micro-xl") / "micro-sdxl",
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=SDXL_UNET_CONFIG["cross_attention_dim"], attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=SDXL_UNET_CONFIG["projection_class_embeddings_input_dim"],
    )


def test_sdxl_swaps_and_weight_changes_do_not_recompile(micro_xl_base: Path, tmp_path: Path) -> None:
    """The same on SDXL: adapters with UNet, TE1 and TE2 parts (diffusers layout, and kohya's SDXL names for this
    UNet's layout), swapped and re-weighted per component, never recompile the UNet."""
    from torch._dynamo.utils import counters

    from lorahub.base.synthetic import make_adapter
    from lorahub.pipeline.live import LivePipeline

    files = [
        make_adapter(tmp_path / f"x{i}.safetensors", base=micro_xl_base, rank=r, alpha=a, seed=50 + i,
                     text_encoder=te, fmt=fmt)
        for i, (r, a, te, fmt) in enumerate([(4, 2, True, "diffusers"), (8, 16, False, "kohya"),
                                             (2, 2, True, "kohya"), (8, 4, False, "diffusers")])
    ]
    live = LivePipeline(micro_xl_base, target_rank=8, compile="eager")
    assert live.base.family == "sdxl"
    live.add("a", files[0])
    live.add("b", files[1], weight=0.5)
    first = live.render("a cat", steps=1, output_type="np").image  # compiles
    frames = int(counters["frames"]["total"])
    for i, path in enumerate(files[2:] + files[:2]):
        live.swap("a" if i % 2 == 0 else "b", path)
        live.set_weight("b", 0.25 + 0.1 * i)
        live.set_weight("a", te=0.5, unet=0.9, te2=0.1 * i)
        live.render("a cat", steps=1, output_type="np")
    live.disable("a")
    last = live.render("a cat", steps=1, output_type="np").image
    assert int(counters["frames"]["total"]) == frames
    assert live.recompilations() == 0
    assert live.stats["hotswaps"] == 4 and live.stats["reloads"] == 0
    assert float(abs(last - first).max()) > 1e-3
    live.close()
