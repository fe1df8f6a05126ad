"""``lorahub preview``, ``lorahub blend``, ``lorahub fuse``: see adapters, alone and together.

No torch at module level: the library modules that need it import it when a
command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from lorahub.cli.output import emit, emit_json, info, json_option, warn

LORA_HELP = (
    "An adapter and its weight: NAME, NAME:W or NAME:TE:UNET (A1111 order: text encoder, then UNet; SDXL: "
    "add :te2=W to weigh the second text encoder apart). "
    "NAME is a .safetensors path, an adapter folder, a Hub id (namespace/name) or a registry name. Repeatable."
)


def _user_name(spec_name: str, taken: set[str]) -> str:
    """The name an adapter is called by in a session: a file's stem, else what was typed."""
    from lorahub.pipeline.live import unique_name

    p = Path(spec_name)
    name = unique_name(p.stem if (spec_name.lower().endswith(".safetensors") or p.exists()) else spec_name, taken)
    taken.add(name)
    return name


def _save_png(image: Any, path: Path, infotext: str | None = None) -> Path:
    from PIL import PngImagePlugin

    from lorahub._atomic import atomic_writer

    meta = PngImagePlugin.PngInfo()
    if infotext:
        meta.add_text("parameters", infotext)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as fh:
        image.save(fh, format="PNG", pnginfo=meta)
    return path


def _numbered(output: Path, i: int) -> Path:
    if output.suffix.lower() != ".png":
        return output / f"preview-{i:04d}.png"
    return output.with_name(f"{output.stem}-{i:04d}{output.suffix}")


def _weights(text: str) -> list[float]:
    from lorahub.errors import UsageError
    from lorahub.pipeline.grid import parse_weights

    try:
        return parse_weights(text)
    except UsageError as exc:
        raise click.BadParameter(exc.message.removeprefix("grid weights: "), param_hint="--grid-weights") from None


@click.command("preview")
@click.option("--base", default=None, help="Base model: a diffusers folder, a .safetensors checkpoint, a Hub id (default: the embedded model).")
@click.option("--base-config", default=None, type=click.Path(file_okay=False), help="Diffusers folder describing a single-file --base.")
@click.option("--lora", "loras", multiple=True, help=LORA_HELP)
@click.option("--lora-dir", "lora_dirs", multiple=True, type=click.Path(file_okay=False), help="Folder where bare adapter names are looked up (repeatable; the current folder is always searched last).")
@click.option("--prompt", default=None, help="The prompt; <lora:NAME:W> tags load and weigh adapters (A1111 syntax).")
@click.option("--negative", default=None, help="Negative prompt.")
@click.option("--seed", "seeds", multiple=True, type=int, help="Seed (repeatable: a grid gets one row per seed). Default 0.")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(1, 1000), help="Denoising steps.")
@click.option("--size", default=None, help="WIDTHxHEIGHT (multiples of 8; default: the base's native size).")
@click.option("--guidance", default=7.5, show_default=True, type=float, help="Classifier-free guidance scale.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="Output PNG (numbered files for sessions; a folder also works).")
@click.option("--grid", is_flag=True, help="A labelled grid: first adapter's weights across, second's (or the seeds) down.")
@click.option("--grid-weights", default="0,0.5,1", show_default=True, help="Comma-separated weights for --grid.")
@click.option("--interactive", is_flag=True, help="Read prompts and :commands from stdin (':weight A 0.5', ':swap A file', ':quit').")
@click.option("--script", "script", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None, help="Run a JSON or line script against one loaded pipeline.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, mps or auto.")
@click.option("--dtype", default=None, help="float32, float16 or bfloat16 (default: as saved).")
@click.option("--target-rank", type=click.IntRange(1, 4096), default=None, help="Hot-swap slot rank (default: max(32, largest adapter rank)).")
@click.option("--compile", "compile_backend", type=click.Choice(["eager", "inductor"]), default=None, help="torch.compile the UNet (swaps and weight changes do not recompile).")
@json_option
def preview_cmd(base, base_config, loras, lora_dirs, prompt, negative, seeds, steps, size, guidance, output, grid,
                grid_weights, interactive, script, device, dtype, target_rank, compile_backend, as_json) -> None:  # noqa: ANN001
    """Render previews with adapters on one loaded base model.

    \b
    One image:   lorahub preview --lora A:0.8 --lora B:0.4 --prompt "a cat" -o out.png
    A grid:      lorahub preview --lora A --lora B --prompt "a cat" --grid --grid-weights 0,0.5,1 -o grid.png
    A session:   lorahub preview --lora A --interactive      (or --script steps.json)

    The base model is loaded once; weight changes and swaps reuse it (the
    summary reports the base load count and the time per image).
    """
    from lorahub.errors import UsageError
    from lorahub.pipeline.prompt import parse_spec
    from lorahub.pipeline.script import Settings, parse_size

    modes = [m for m, on in (("--grid", grid), ("--interactive", interactive), ("--script", script)) if on]
    if len(modes) > 1:
        raise UsageError(f"choose one of {', '.join(modes)}")
    if not modes and not prompt:
        raise UsageError("--prompt is required (or use --interactive / --script)")
    if grid and not prompt:
        raise UsageError("--grid needs --prompt")
    if grid and not loras:
        raise UsageError("--grid needs at least one --lora")
    weights = _weights(grid_weights) if grid else []
    specs = [parse_spec(s, what="--lora") for s in loras]
    width_height = parse_size(size) if size else None

    from lorahub.adapters.inspect import inspect_file
    from lorahub.pipeline.live import DEFAULT_TARGET_RANK, LivePipeline
    from lorahub.registry.resolving import registry_resolver

    resolver = registry_resolver([*lora_dirs, "."])
    resolved = [resolver.resolve(s.name) for s in specs]
    if target_rank is None:
        ranks = [max(inspect_file(r.path).ranks or [1]) for r in resolved]
        target_rank = max([DEFAULT_TARGET_RANK, *ranks])
    info("loading the base model ...")
    live = LivePipeline(base, base_config=base_config, device=device, dtype=dtype, target_rank=target_rank,
                        compile=compile_backend, resolver=resolver)
    info(f"base {live.base.name} ({live.base.pipeline_class}) loaded in {live.base_load_seconds:.1f} s")
    taken: set[str] = set()
    names = []
    for spec, res in zip(specs, resolved, strict=True):
        name = _user_name(spec.name, taken)
        ad = live.add(name, str(res.path), te=spec.te, unet=spec.unet, te2=spec.te2)
        names.append(name)
        info(f"adapter {name}: {ad.format}, rank {ad.rank}, {'+'.join(ad.components)}, {ad.load_seconds * 1000:.0f} ms")
        for w in ad.warnings:
            warn(f"{name}: {w}")
    width, height = width_height or live.native_size()
    settings = Settings(seed=seeds[0] if seeds else 0, steps=steps, width=width, height=height, guidance=guidance,
                        negative=negative)

    if grid:
        _run_grid(live, names, weights, list(seeds) or [0], prompt, settings, output or Path("grid.png"), as_json)
    elif interactive or script:
        _run_session(live, settings, output or Path("preview.png"), script, as_json)
    else:
        r = live.render(prompt, negative=negative, seed=settings.seed, steps=steps, width=width, height=height,
                        guidance=guidance)
        out = _save_png(r.image, output or Path("preview.png"), r.infotext())
        result = {"output": str(out), **r.to_dict(), "stats": live.summary()["stats"]}
        emit(result, as_json, lambda d: f"{d['output']}  ({d['seconds']:.2f} s, seed {d['seed']}, "
                                         f"{', '.join(a['name'] + ' ' + format(a['unet_weight'], 'g') for a in d['adapters']) or 'no adapters'})")


def _run_grid(live, names, weights, seeds, prompt, settings, output, as_json) -> None:  # noqa: ANN001
    from lorahub.pipeline.grid import Cell, render_grid

    a = names[0]
    b = names[1] if len(names) > 1 else None
    rows_spec = [(wb, seed) for wb in (weights if b else [None]) for seed in seeds]
    cells = [[Cell({a: wa, **({b: wb} if b is not None else {})}, seed) for wa in weights] for wb, seed in rows_spec]
    row_labels = []
    for wb, seed in rows_spec:
        label = []
        if b is not None:
            label.append(f"{b} {wb:g}")
        if len(seeds) > 1 or b is None:
            label.append(f"seed {seed}")
        row_labels.append(", ".join(label))

    def said(r: int, c: int, out: Any) -> None:
        wb, seed = rows_spec[r]
        info(f"  {a} {weights[c]:g}" + (f", {b} {wb:g}" if b else "") + f", seed {seed}: {out.seconds:.2f} s")

    grid = render_grid(live, prompt, cells, col_labels=[f"{a} {w:g}" for w in weights], row_labels=row_labels,
                       title=prompt[:120], on_image=said, negative=settings.negative, steps=settings.steps,
                       width=settings.width, height=settings.height, guidance=settings.guidance)
    out = _save_png(grid.image, output, f"{prompt}\nGrid: {a} x {b or 'seed'}, weights {','.join(format(w, 'g') for w in weights)}")
    result = {
        "output": str(out),
        "columns": [f"{a} {w:g}" for w in weights],
        "rows": row_labels,
        "images": len(grid.seconds),
        "seconds_per_image": round(grid.seconds_per_image, 4),
        "stats": live.summary()["stats"],
    }
    emit(result, as_json, lambda d: f"{d['output']}  ({d['images']} images, {d['seconds_per_image']:.2f} s each, "
                                     f"base loaded {d['stats']['base_loads']} time(s))")


def _run_session(live, settings, output, script, as_json) -> None:  # noqa: ANN001
    from lorahub.pipeline.script import Event, Session, load_script

    counter = {"n": 0}

    def on_event(e: Event) -> None:
        if e.kind == "render":
            counter["n"] += 1
            target = Path(e.out) if e.out else _numbered(output, counter["n"])
            if e.out and not target.is_absolute():
                target = (output.parent if output.suffix.lower() == ".png" else output) / target
            _save_png(e.render.image, target, e.render.infotext())
            e.out = str(target)
            msg = f"image {counter['n']}: {target}  {e.seconds:.2f} s  {e.message}"
        elif e.kind == "error":
            msg = click.style("error: ", fg="red") + e.message
        else:
            msg = f"{e.kind}: {e.message}" + (f"  ({e.seconds * 1000:.0f} ms)" if e.seconds else "")
        if as_json:
            info(msg)
        else:
            click.echo(msg)

    session = Session(live, settings, on_event=on_event)
    if script is not None:
        kind, data = load_script(script)
        if kind == "json":
            session.run_json(data)
        else:
            session.run_lines(data, stop_on_error=True)
    else:
        tty = sys.stdin.isatty()
        if tty:
            info("prompts make images; :weight NAME W, :swap NAME FILE, :add NAME FILE, :list, :stats, :quit")

        def lines():  # noqa: ANN202
            while True:
                if tty:
                    click.echo("> ", nl=False, err=True)
                line = sys.stdin.readline()
                if not line:
                    return
                yield line

        session.run_lines(lines())
    summary = session.summary()
    summary["events"] = [e.to_dict() for e in session.events]
    if as_json:
        emit_json(summary)
    else:
        per = summary["seconds_per_image"]
        click.echo(
            f"{summary['images']} image(s), {per if per is not None else '-'} s per image; base model loaded "
            f"{summary['base_loads']} time(s); {summary['stats']['hotswaps']} hot-swap(s), "
            f"{summary['stats']['reloads']} reload(s), {summary['errors']} error(s)"
        )


# ---------------------------------------------------------------------------------------------- blend

FORMAT_HELP = ("Key layout of the file: kohya (lora_unet_*/lora_te_*, .alpha; SDXL: the SGM UNet's names and "
               "lora_te1_/lora_te2_, as kohya writes them) loads fully in AUTOMATIC1111/Forge, "
               "ComfyUI, kohya and diffusers; diffusers (unet./text_encoder. with lora_A/lora_B) loads in diffusers, "
               "but ComfyUI skips its UNet attention modules. Flux.1/SD3: kohya writes the original model's modules "
               "(fused qkv, ComfyUI and kohya load it), diffusers the split ones (diffusers and ComfyUI load it; "
               "T5 modules only go to kohya). Both apply the same strength (docs/formats.md).")


#: The options a recipe sets (given with --recipe: a usage error).
_RECIPE_SETS = ("method", "rank", "density", "seed", "dtype", "title", "fmt")


class CommandWithSubcommands(click.Group):
    """A command that also has subcommands: ``lorahub blend A B -o out`` runs the command itself (its own
    arguments and options), ``lorahub blend search ...`` the subcommand named by the first argument."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("invoke_without_command", True)
        super().__init__(*args, **kwargs)
        self.allow_interspersed_args = True  # a command's options may follow its arguments (groups forbid it)

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        if args and args[0] in self.commands:
            ctx = click.Context(self, info_name=info_name, parent=parent, **extra)  # the command's own: unparsed
            name = args[0]
            return self.commands[name].make_context(name, list(args[1:]), parent=ctx)
        return super().make_context(info_name, args, parent=parent, **extra)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return click.Command.parse_args(self, ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return click.Command.collect_usage_pieces(self, ctx)

    def invoke(self, ctx: click.Context) -> Any:
        if ctx.command is not self:  # main() of this command with a subcommand's context
            return ctx.command.invoke(ctx)
        return click.Command.invoke(self, ctx)


class _OwnArgument(click.Argument):
    """An argument of a :class:`CommandWithSubcommands` shown in its own usage line, not in its subcommands'
    (``lorahub blend search [OPTIONS]``, not ``lorahub blend [INPUTS]... search``)."""

    def get_usage_pieces(self, ctx: click.Context) -> list[str]:
        return super().get_usage_pieces(ctx) if isinstance(ctx.command, CommandWithSubcommands) else []


@click.command("blend", cls=CommandWithSubcommands)
@click.argument("inputs", nargs=-1, cls=_OwnArgument)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The .safetensors file to write.")
@click.option("--method", type=click.Choice(["linear", "cat", "svd", "ties", "dare"]), default="linear", show_default=True,
              help="cat: exact (rank = sum); linear: exact sum re-factored; svd/ties/dare: re-factored at --rank.")
@click.option("--rank", type=click.IntRange(1, 4096), default=None, help="Target rank (default: the largest input rank; linear: exact).")
@click.option("--density", type=float, default=None, help="Fraction of each delta kept by ties/dare (0-1].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of dare's random drops.")
@click.option("--dtype", type=click.Choice(["float16", "float32", "bfloat16"]), default="float16", show_default=True)
@click.option("--title", default=None, help="modelspec.title of the blend (default: the file name).")
@click.option("--format", "fmt", type=click.Choice(["kohya", "diffusers"]), default="kohya", show_default=True,
              help=FORMAT_HELP)
@click.option("--lora-dir", "lora_dirs", multiple=True, type=click.Path(file_okay=False), help="Folder where bare names are looked up.")
@click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Bake this recipe (YAML: sources by Hub repo@revision and file, registry name or path, with their "
              "SHA-256 and AutoV3; weights; method): every source is checked by hash before use.")
@click.option("--save-recipe", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the blend's recipe (YAML) to this file.")
@json_option
@click.pass_context
def blend_cmd(ctx, inputs, output, method, rank, density, seed, dtype, title, fmt, lora_dirs, recipe_file,  # noqa: ANN001
              save_recipe, as_json) -> None:  # noqa: ANN001
    """Blend adapters into one LoRA file: INPUT is FILE, FILE:W or FILE:TE:UNET (SDXL: add :te2=W).

    \b
    lorahub blend A.safetensors:0.6 B.safetensors:0.4 -o blend.safetensors --method cat
    lorahub blend A:0.6 B:0.4 -o blend.safetensors --save-recipe blend.yaml
    lorahub blend --recipe blend.yaml -o blend.safetensors
    lorahub blend search --lora A --lora B --target examples/ -o found.yaml

    Blends full weight deltas (never A and B factors separately), handles
    different ranks, alphas, formats and modules present in only some inputs,
    and writes a LoRA with provenance metadata (source fingerprints, weights,
    method) and the merged trigger words. The default kohya layout is the one
    AUTOMATIC1111/Forge, ComfyUI, kohya and diffusers all load fully, at the
    same strength (docs/formats.md).

    Every blend carries its recipe in its metadata (lorahub.recipe; `lorahub
    inspect` shows it): the sources by stable reference (a Hub
    namespace/name@commit and file, a registry name, or the absolute path)
    with their fingerprints. --recipe bakes one anywhere to the same tensors
    (the same AutoV3); a source that is not the file the recipe names stops
    it before anything is written.

    `lorahub blend search` finds the weights from example images instead
    (see `lorahub blend search --help`).
    """
    from click.core import ParameterSource

    from lorahub.pipeline.blend import blend, blend_inputs
    from lorahub.pipeline.prompt import parse_spec
    from lorahub.pipeline.recipe import bake, hub_card_licence, load_recipe, reference_of
    from lorahub.pipeline.recipe import save_recipe as write_recipe
    from lorahub.registry.resolving import registry_resolver

    resolver = registry_resolver([*lora_dirs, "."])
    if recipe_file is not None:
        given = [f"--{'format' if n == 'fmt' else n}" for n in _RECIPE_SETS
                 if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE]
        if inputs or given:
            raise click.UsageError(f"--recipe sets the sources and the method: drop {', '.join([*inputs, *given])}")
        result = bake(load_recipe(recipe_file), output, resolver=resolver, base_dir=recipe_file.parent)
    else:
        if not inputs:
            raise click.UsageError("give the adapters to blend (INPUT...), or --recipe FILE")
        items = []
        for text in inputs:
            tag = parse_spec(text, what="input")
            hit = resolver.resolve(tag.name)
            item = blend_inputs([(str(hit.path), tag.weights)])[0]
            item.ref = reference_of(hit)
            if "hub" in item.ref:
                lic = hub_card_licence(item.ref["hub"])
                if lic:
                    item.ref["license"] = lic
            items.append(item)
        result = blend(items, method=method, rank=rank, density=density, out=output, seed=seed, dtype=dtype,
                       title=title, format=fmt)
    for w in result.warnings:
        warn(w)
    report = result.to_dict()
    if save_recipe is not None:
        report["recipe_file"] = str(write_recipe(result.recipe, save_recipe))

    def human(r: dict) -> str:
        names = ", ".join(f"{Path(i['path']).name} ({i['unet_weight']:g})" for i in r["inputs"])
        line = (f"{r['path']}: {r['method']} blend of {names}; rank {r['rank']}, {r['modules']} modules, "
                f"relative error {r['relative_error']:.2%}, {r['seconds']:.1f} s")
        return line + (f"\nrecipe: {r['recipe_file']}" if r.get("recipe_file") else "")

    emit(report, as_json, human)


def _add_blend_search() -> None:
    from lorahub.cli.commands.blendsearch import blend_search_cmd

    blend_cmd.add_command(blend_search_cmd)


_add_blend_search()


# ---------------------------------------------------------------------------------------------- convert


@click.command("convert")
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The .safetensors file to write.")
@click.option("--format", "fmt", type=click.Choice(["kohya", "diffusers"]), default="kohya", show_default=True,
              help=FORMAT_HELP)
@click.option("--rank", type=click.IntRange(1, 4096), default=None,
              help="Rank LyCORIS (LoHa/LoKr/full) modules are re-factored to [32, or their exact rank when smaller]; "
              "LoRA modules keep theirs.")
@click.option("--dtype", type=click.Choice(["float16", "float32", "bfloat16"]), default="float16", show_default=True)
@click.option("--title", default=None, help="ss_output_name / modelspec.title (default: the source's, else the file name).")
@click.option("--lora-dir", "lora_dirs", multiple=True, type=click.Path(file_okay=False), help="Folder where bare names are looked up.")
@json_option
def convert_cmd(source, output, fmt, rank, dtype, title, lora_dirs, as_json) -> None:  # noqa: ANN001
    """Rewrite an adapter (kohya, diffusers, peft, LyCORIS LoHa/LoKr; Flux.1 and SD3 in any layout: kohya,
    ComfyUI/ai-toolkit, XLabs, OneTrainer, diffusers) as a plain LoRA in another layout.

    \b
    lorahub convert style_loha.safetensors -o style.safetensors            # kohya layout
    lorahub convert style_kohya.safetensors -o style_diffusers.safetensors --format diffusers

    LoRA modules keep their factors; LyCORIS modules become LoRA factors (SVD at
    --rank, the error is reported). Alpha is folded in, conv modules keep their
    4-D shapes, Flux.1/SD3 fused q/k/v are split and fused exactly, and the
    training metadata is kept (docs/formats.md).
    """
    from lorahub.pipeline.convert import convert
    from lorahub.registry.resolving import registry_resolver

    path = registry_resolver([*lora_dirs, "."]).resolve(source).path
    result = convert(path, output, format=fmt, rank=rank, dtype=dtype, title=title)
    for w in result.warnings:
        warn(w)

    def human(r: dict) -> str:
        return (f"{r['path']}: {r['modules']} modules of {Path(r['source']).name} ({r['source_format']}) "
                f"in the {r['format']} layout, rank up to {r['rank']}")

    emit(result.to_dict(), as_json, human)


# ---------------------------------------------------------------------------------------------- fuse


@click.command("fuse")
@click.option("--base", default=None, help="Base model (default: the embedded model).")
@click.option("--base-config", default=None, type=click.Path(file_okay=False), help="Diffusers folder describing a single-file --base.")
@click.option("--lora", "loras", multiple=True, required=True, help=LORA_HELP)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the fused pipeline.")
@click.option("--dtype", default=None, help="float32, float16 or bfloat16 (default: as saved).")
@click.option("--overwrite", is_flag=True, help="Replace an existing, non-empty output folder.")
@click.option("--lora-dir", "lora_dirs", multiple=True, type=click.Path(file_okay=False), help="Folder where bare names are looked up.")
@json_option
def fuse_cmd(base, base_config, loras, output, dtype, overwrite, lora_dirs, as_json) -> None:  # noqa: ANN001
    """Write a base model with adapters fused in (diffusers format), for runtimes without LoRA support.

    \b
    lorahub fuse --lora A.safetensors:0.8 -o merged/
    lorahub fuse --base lorahub/embedded-flux-tiny --lora flux_style.safetensors:1 -o merged-flux/

    On Flux.1 and SD3 bases each adapted weight becomes W + sum of w x dW, from any layout (kohya's fused
    qkv too) and for the T5 encoder as well; --lora's te weight applies to the text encoders, unet to the
    transformer.
    """
    from lorahub.pipeline.fuse import fuse
    from lorahub.registry.resolving import registry_resolver

    info("loading the base model ...")
    result = fuse(base, list(loras), output, base_config=base_config, dtype=dtype, overwrite=overwrite,
                  resolver=registry_resolver([*lora_dirs, "."]))
    for w in result.warnings:
        warn(w)

    def human(r: dict) -> str:
        names = ", ".join(f"{a['name']} ({a['unet_weight']:g})" for a in r["adapters"])
        return f"{r['path']}: {r['base']} with {names} fused in ({r['seconds']:.1f} s)"

    emit(result.to_dict(), as_json, human)
