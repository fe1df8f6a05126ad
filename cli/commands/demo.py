"""``lorahub demo``: run every capability once on the embedded default base model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from lorahub.cli.output import emit_json, info, json_option


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the demo's files (default: a new folder under $LORAHUB_HOME/demo).")
@click.option("--only", multiple=True, help="Run only these steps (repeatable).")
@click.option("--skip", multiple=True, help="Skip these steps (repeatable).")
@click.option("--list", "list_steps", is_flag=True, help="List the steps and exit.")
@json_option
def demo_cmd(workdir: Path | None, only: tuple[str, ...], skip: tuple[str, ...], list_steps: bool, as_json: bool) -> None:
    """Show what lorahub does, offline, on the embedded default base model.

    Builds the tiny base pipeline, writes an adapter for it, inspects, validates
    and fingerprints it; each capability of lorahub adds its step here.
    """
    from lorahub.cli import demo
    from lorahub.config import home

    if list_steps:
        for name, title, _ in demo.STEPS:
            click.echo(f"{name:<12} {title}")
        return
    known = {name for name, _, _ in demo.STEPS}
    unknown = sorted((set(only) | set(skip)) - known)
    if unknown:
        raise click.UsageError(f"unknown step(s): {', '.join(unknown)} (see lorahub demo --list)")
    if workdir is None:
        base = home() / "demo"
        base.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="run-", dir=base))

    def on_step(res: demo.StepResult) -> None:
        msg = f"    {res.summary}  [{res.seconds:.1f} s]"
        if as_json:
            info(msg)
        else:
            click.echo(msg)

    log = info if as_json else (lambda m: click.echo(click.style(m, bold=True)))
    results = demo.run_demo(workdir, only=list(only) or None, skip=list(skip) or None, log=log, on_step=on_step)
    if as_json:
        emit_json({"workdir": str(workdir), "steps": [
            {"name": r.name, "summary": r.summary, "seconds": round(r.seconds, 3), "details": r.details} for r in results
        ]})
    else:
        click.echo(f"Done: {len(results)} steps in {sum(r.seconds for r in results):.1f} s; files in {workdir}")
