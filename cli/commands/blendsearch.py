"""``lorahub blend search``: find the weights of a blend from example images (lorahub.pipeline.blendsearch).

No torch at module level.
"""

from __future__ import annotations

from pathlib import Path

import click

from lorahub.cli.output import emit, info, json_option, warn

SEARCH_LORA_HELP = ("An adapter to weigh: a .safetensors path, an adapter folder, a Hub id or a registry name "
                    "(repeatable; NAME=SOURCE names it in the report).")


def _bounds(text: str) -> tuple[float, float]:
    import math

    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise click.BadParameter("two numbers, LOW,HIGH (e.g. 0,1.5)", param_hint="--bounds") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise click.BadParameter("two finite numbers with LOW < HIGH", param_hint="--bounds")
    return lo, hi


@click.command("search")
@click.option("--lora", "loras", multiple=True, required=True, help=SEARCH_LORA_HELP)
@click.option("--target", "target_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Folder of example images; captions in same-name .txt files (as kohya datasets) or metadata.jsonl.")
@click.option("--prompt", default=None, help="Caption of the target images that have none.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The recipe (YAML) to write; bake it with `lorahub blend --recipe`.")
@click.option("--budget", default=120, show_default=True, type=click.IntRange(4, 100_000),
              help="Objective evaluations (gradient: steps, each about 3 evaluations' time).")
@click.option("--l1", "l1", default=0.002, show_default=True, type=click.FloatRange(0, None),
              help="Weight of the L1 penalty on the weights: larger drops more adapters.")
@click.option("--optimizer", type=click.Choice(["cma", "gradient"]), default="cma", show_default=True,
              help="cma: CMA-ES, gradient-free; gradient: Adam on the weights (autograd through the LoRA deltas).")
@click.option("--per-component", is_flag=True, help="Search the text-encoder and UNet weights of each adapter apart.")
@click.option("--bounds", "bounds_text", default="0,1.5", show_default=True, help="Range of each weight, LOW,HIGH.")
@click.option("--samples", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Noise draws (timestep or sigma, and noise, fixed for the whole search) per target image.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the noise draws, the optimiser and the grid.")
@click.option("--size", default=None, help="WIDTHxHEIGHT the targets are compared at (default: the base's native "
              "size, on a UNet at least 128x128).")
@click.option("--grid", "grid_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The grid of the result against the targets (PNG; default: the recipe's name with .png).")
@click.option("--no-grid", is_flag=True, help="Do not render the grid.")
@click.option("--grid-steps", default=20, show_default=True, type=click.IntRange(1, 150), help="Denoising steps of the grid's images.")
@click.option("--base", default=None, help="Base model (default: the embedded model).")
@click.option("--base-config", default=None, type=click.Path(file_okay=False), help="Diffusers folder describing a single-file --base.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, mps or auto.")
@click.option("--dtype", default=None, help="float32, float16 or bfloat16 (default: as saved).")
@click.option("--lora-dir", "lora_dirs", multiple=True, type=click.Path(file_okay=False), help="Folder where bare names are looked up.")
@json_option
def blend_search_cmd(loras, target_dir, prompt, output, budget, l1, optimizer, per_component, bounds_text, samples,  # noqa: ANN001
                     seed, size, grid_path, no_grid, grid_steps, base, base_config, device, dtype, lora_dirs, as_json) -> None:
    """Find the weights at which adapters reproduce example images best; write them as a recipe.

    \b
    lorahub blend search --lora A.safetensors --lora B.safetensors --lora C.safetensors \\
        --target examples/ -o found.yaml
    lorahub blend --recipe found.yaml -o found.safetensors

    Minimises the base model's denoising loss on the target images with the
    adapters stacked at candidate weights, plus --l1 times the sum of the
    weights (LoraHub, Huang et al. 2023, for Stable Diffusion). On Flux.1 and
    SD3 bases the loss is their flow-matching training loss (the prediction
    against noise - x0, at sigmas shifted as the base's scheduler samples).
    The noise and timesteps are drawn once (--samples per image), so every
    candidate is judged on the same draws. Weights change on the loaded pipeline without
    reloading anything. Weights under 0.05 are set to 0 and their adapters
    left out of the recipe. The recipe records the search (optimiser, budget,
    losses); the grid shows the targets, the found blend and the base alone
    for each caption. `lorahub blend A B -o out` still blends by hand: an
    adapter whose name is "search" is given as ./search.
    """
    from tqdm import tqdm

    from lorahub.errors import UsageError
    from lorahub.pipeline.blend import BlendInput
    from lorahub.pipeline.blendsearch import read_targets, run_search, search_size
    from lorahub.pipeline.live import DEFAULT_TARGET_RANK, LivePipeline, unique_name
    from lorahub.pipeline.recipe import hub_card_licence, reference_of
    from lorahub.pipeline.recipe import save_recipe as write_recipe
    from lorahub.pipeline.script import parse_size
    from lorahub.registry.resolving import registry_resolver

    bounds = _bounds(bounds_text)
    if output.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise UsageError(f"{output}: the recipe is written as YAML: name it .yaml")
    width_height = parse_size(size) if size else None
    resolver = registry_resolver([*lora_dirs, "."])
    sources, taken = [], set()
    for spec in loras:
        label, sep, ref = spec.partition("=")
        if not sep:
            label, ref = "", spec
        hit = resolver.resolve(ref)
        name = unique_name(label.strip() or (Path(ref).stem if Path(ref).suffix else ref.replace("/", "_")), taken)
        taken.add(name)
        item = BlendInput(str(hit.path), 1.0, 1.0, name=name, ref=reference_of(hit))
        if "hub" in item.ref:
            lic = hub_card_licence(item.ref["hub"])
            if lic:
                item.ref["license"] = lic
        sources.append(item)
    from lorahub.adapters.inspect import inspect_file

    target_rank = max([DEFAULT_TARGET_RANK, *(max(inspect_file(s.path).ranks or [1]) for s in sources)])
    info("loading the base model ...")
    live = LivePipeline(base, base_config=base_config, device=device, dtype=dtype, target_rank=target_rank,
                        resolver=resolver)
    dims = width_height or search_size(live)
    targets, warnings = read_targets(target_dir, size=dims, prompt=prompt)
    for w in warnings:
        warn(w)
    info(f"{len(targets)} target image(s) at {dims[0]}x{dims[1]}, {len(sources)} adapter(s), {optimizer}, "
         f"budget {budget}")
    bar = tqdm(total=budget, desc="searching", unit="eval", file=__import__("sys").stderr, leave=False,
               disable=None)

    def progress(p) -> None:  # noqa: ANN001
        bar.n = min(p.evaluation, budget)
        bar.set_postfix_str(f"best {p.best:.5f}", refresh=False)
        bar.refresh()

    try:
        run = run_search(live, sources, targets, size=dims, optimizer=optimizer, budget=budget, l1=l1, seed=seed,
                         samples=samples, per_component=per_component, bounds=bounds, grid=not no_grid, grid_steps=grid_steps,
                         title=output.stem, on_progress=progress)
    finally:
        bar.close()
    res = run.result
    if run.recipe is None:
        raise UsageError("the search kept no adapter (every weight is 0): the base alone reproduces the targets best; "
                         "try a smaller --l1")
    recipe_file = write_recipe(run.recipe, output)
    report = {"recipe_file": str(recipe_file), **res.to_dict(), "size": list(dims)}
    if run.grid is not None:
        from lorahub.cli.commands.preview import _save_png

        gpath = grid_path or output.with_suffix(".png")
        report["grid"] = str(_save_png(run.grid, gpath, f"lorahub blend search: {res.weights}"))

    def human(r: dict) -> str:
        ws = ", ".join(f"{n} {r['weights'][n]:.3f}" if not isinstance(r["weights"][n], dict)
                       else f"{n} te {r['weights'][n]['te']:.3f} unet {r['weights'][n]['unet']:.3f}" for n in r["kept"])
        lines = [f"{r['recipe_file']}: {ws}" + (f"; dropped {', '.join(r['dropped'])}" if r["dropped"] else ""),
                 f"denoising loss {r['loss']:.5f} (base alone {r['base_loss']:.5f}), {r['evaluations']} evaluations "
                 f"in {r['seconds']:.1f} s ({r['optimizer']})"]
        if r.get("grid"):
            lines.append(f"grid: {r['grid']}")
        return "\n".join(lines)

    emit(report, as_json, human)
