"""``lorahub validate PATH...``: check adapter files; exit 1 when any is invalid."""

from __future__ import annotations

import sys

import click

from lorahub.cli.output import emit_json, json_option


@click.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--deep", is_flag=True, help="Also read every tensor and check for NaN/Inf values.")
@click.option("-q", "--quiet", is_flag=True, help="Print only invalid files.")
@json_option
def validate_cmd(paths: tuple[str, ...], deep: bool, quiet: bool, as_json: bool) -> None:
    """Validate adapter files or folders (recursively).

    Errors (exit 1): not safetensors, truncated, broken header JSON, offsets out of
    range or overlapping, dtype/shape/length mismatch, non-string metadata,
    unpaired up/down tensors, inconsistent ranks, NaN/Inf (--deep), pickle files
    (refused by name, never loaded). Warnings (exit 0): missing alpha, base-family
    mismatch, stale embedded sshs_model_hash, unknown keys.
    """
    from lorahub.adapters.validate import validate_paths

    def show(report) -> None:  # noqa: ANN001
        if as_json:
            return
        if report.valid and quiet:
            return
        status = click.style("ok", fg="green") if report.valid else click.style("INVALID", fg="red", bold=True)
        click.echo(f"{status}  {report.path}")
        for e in report.errors:
            click.echo(f"    error: {e}")
        for w in report.warnings:
            click.echo(f"    warning: {w}")

    reports = validate_paths(paths, deep=deep, on_result=show)
    if as_json:
        emit_json(reports)
    bad = sum(1 for r in reports if not r.valid)
    if not as_json:
        click.echo(f"{len(reports)} file(s) checked, {bad} invalid", err=True)
    if not reports:
        click.echo("no adapter files found", err=True)
        sys.exit(1)
    sys.exit(1 if bad else 0)
