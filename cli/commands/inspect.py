"""``lorahub inspect FILE``: what an adapter file is, from its header alone."""

from __future__ import annotations

import click

from lorahub.adapters.families import READABLE_FAMILIES, family_name
from lorahub.adapters.layouts import TOOL_NAMES
from lorahub.cli.output import emit, json_option

_TE_NAMES = {"text_encoder": "TE1 (text_encoder)", "text_encoder_2": "TE2 (text_encoder_2)",
             "text_encoder_3": "TE3 (text_encoder_3)"}


def _fmt_num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}"


def render(report, show_modules: bool = False) -> list[str]:  # noqa: ANN001
    r = report
    lines = [f"{r.path}"]
    cov = ", ".join(f"{k} {v}" for k, v in r.coverage.model_dump().items() if v)
    family = r.base_family
    if r.declared_base_family and r.declared_base_family != r.base_family:
        family += f" (metadata says {r.declared_base_family})"
    ranks = ", ".join(map(str, r.ranks)) if len(r.ranks) > 1 else _fmt_num(r.rank)
    alphas = ", ".join(_fmt_num(a) for a in r.alphas) if len(r.alphas) > 1 else _fmt_num(r.alpha)
    rows = [
        ("format", f"{r.format_name} [{r.format}]" + ("" if r.diffusers_loadable else "  (diffusers cannot load it as is)")),
        ("loads fully in", ", ".join(TOOL_NAMES[t] for t in r.loaders) if r.loaders else (
            "none of diffusers, A1111/Forge, ComfyUI, kohya (see lorahub convert)" if r.base_family in READABLE_FAMILIES
            else f"not checked (lorahub names {family_name(r.base_family)} adapters for the registry only)")),
        ("base family", family + (f" ({family_name(r.base_family)})" if r.base_family != "unknown" else "")
         + (f"  [{'; '.join(r.family_evidence)}]" if r.family_evidence else "")),
        ("rank", ranks),
        ("alpha", alphas + ("" if r.alphas else "  (absent: loaders use alpha = rank)") if r.modules else "-"),
        *([("hidden width", str(r.hidden_size))] if r.hidden_size else []),
        ("modules", f"{r.modules} ({cov or 'none'})" + (f", {r.conv_modules} conv" if r.conv_modules else "") + (", DoRA" if r.dora else "")),
        ("text encoders", " + ".join(_TE_NAMES[t] for t in r.text_encoders) if r.text_encoders else "none"),
        ("trained at", f"{r.training_resolution[0]}x{r.training_resolution[1]}" if r.training_resolution else "-"),
        ("dtype", r.dtype or "-"),
        ("size", f"{r.file_size:,} bytes, header {r.header_size:,} bytes, {r.tensors} tensors, {r.parameters:,} parameters"),
    ]
    if r.title:
        rows.append(("title", r.title))
    rows.append(("trigger words", ", ".join(r.trigger_words) + (f"  (from {r.trigger_source})" if r.trigger_source else "") if r.trigger_words else "-"))
    for key in ("base_model_version", "sd_model_name", "network_module", "network_dim", "network_alpha",
                "learning_rate", "max_train_steps", "steps", "epoch", "resolution", "num_train_images",
                "mixed_precision", "optimizer", "seed"):
        if key in r.training and r.training[key] is not None:
            rows.append((f"ss_{key}", str(r.training[key])))
    for key, value in r.modelspec.items():
        rows.append((key, value if len(value) < 100 else value[:97] + "..."))
    for key, value in r.embedded_hashes.items():
        rows.append((key, value))
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    if show_modules:
        lines.append("  modules:")
        for m in r.module_details:
            lines.append(
                f"    {m.name}  {m.kind}  rank {m.rank if m.rank is not None else '-'}  alpha {_fmt_num(m.alpha)}"
                f"  {m.out_features or '?'}x{m.in_features or '?'}{' conv' if m.conv else ''}"
            )
    if r.recipe is not None:
        rec = r.recipe
        params = ", ".join(f"{k} {v}" for k, v in (("rank", rec.rank), ("density", rec.params.density)) if v is not None)
        lines.append(f"  recipe: {rec.method} blend{' (' + params + ')' if params else ''}, {rec.format} layout, "
                     f"{rec.dtype}, lorahub {rec.lorahub_version}; rebuild with lorahub blend --recipe")
        for src in rec.sources:
            w = src.weight
            weight = f"{w:g}" if isinstance(w, float) else f"te {w.te:g}, unet {w.unet:g}" + (
                f", te2 {w.te2:g}" if w.te2 is not None else "")
            lines.append(f"    {src.reference()}  weight {weight}  AutoV3 {src.autov3}"
                         + (f"  licence {src.license}" if src.license else ""))
    for w in r.warnings:
        lines.append(click.style("  warning: ", fg="yellow") + w)
    return lines


@click.command("inspect")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option("--modules", "show_modules", is_flag=True, help="List every module with its rank and alpha.")
@json_option
def inspect_cmd(files: tuple[str, ...], show_modules: bool, as_json: bool) -> None:
    """Describe adapter FILES from their safetensors header (no tensor data is read).

    Reports the format (kohya, diffusers, peft, LyCORIS, DoRA, ComfyUI, XLabs,
    Flux Control, legacy), the tools that load it fully, the base family from key
    names and shapes (SD 1.x/2.x/XL, SD3, Flux.1, and for the registry Chroma,
    Qwen-Image, Wan, HunyuanVideo, HiDream, Lumina, PixArt, Kolors, AuraFlow,
    LTX-Video, Cosmos/Anima) and the one the metadata declares, rank and alpha per
    module, dtype, trigger words, kohya training parameters and the modelspec
    block. With --json: one object per file (a list for several files).
    """
    from lorahub.adapters.inspect import inspect_file

    reports = [inspect_file(f) for f in files]
    out = reports[0] if len(reports) == 1 else reports

    def human(_: object) -> list[str]:
        lines: list[str] = []
        for i, r in enumerate(reports):
            if i:
                lines.append("")
            lines += render(r, show_modules)
        return lines

    emit(out, as_json, human)
