"""``lorahub space``: the Gradio page (search, preview/blend, inspect, train, push) on a local port;
``lorahub space export``: the same page as a Hugging Face Space folder."""

from __future__ import annotations

import click

from lorahub.cli.commands.serve import size_value
from lorahub.cli.output import emit, info, json_option


@click.group("space", invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(1, 65535), help="Port.")
@click.option("--base", default=None, metavar="SPEC",
              help="Base model (embedded id, diffusers folder, .safetensors checkpoint, Hub id). "
                   "Default: $LORAHUB_SPACE_BASE on a GPU, else the shipped drawing base (lorahub/drawing-sd1-tiny).")
@click.option("--database", default=None, metavar="URL", help="Registry searched by the Search tab (default: $LORAHUB_DATABASE_URL, else SQLite in $LORAHUB_HOME).")
@click.option("--demo-adapters", is_flag=True,
              help="Add the SD 1.x base's demo adapters to the registry first (what an exported Space does; on the "
                   "drawing base its trained heart, checkered and sunset LoRAs).")
@click.option("--index-hub", "index_hub", default=None, metavar="FILTERS",
              help="Index these Hub repos into the registry first (headers only), e.g. "
                   "'endpoint=http://127.0.0.1:8000, author=alice, tag=lora' (default $LORAHUB_SPACE_INDEX).")
@click.option("--push-endpoint", "push_endpoints", multiple=True, metavar="URL",
              help="A Hub endpoint the Push tab may push to (repeatable; also $LORAHUB_UI_PUSH_ENDPOINTS). "
                   "Besides these, only https://huggingface.co.")
@click.option("--max-file-size", default=None, callback=size_value, metavar="SIZE",
              help="Largest file the page accepts, e.g. 500M (default $LORAHUB_UI_MAX_FILE_SIZE, else 1G).")
@click.pass_context
def space_cmd(ctx: click.Context, host: str, port: int, base: str | None, database: str | None, demo_adapters: bool,
              index_hub: str | None, push_endpoints: tuple[str, ...], max_file_size: int | None) -> None:
    """Serve the lorahub page in the browser (the same app a Hugging Face Space runs).

    Anyone who reaches the port can use the page: files are taken only from uploads, pushes need the
    visitor's own token (never the one of this machine), training and rendering are rate-limited per
    client. See `lorahub serve --help` to serve it inside a hub, and `lorahub space export --help` to
    publish it as a Hugging Face Space.
    """
    if ctx.invoked_subcommand is not None:
        return
    from lorahub.cli import spacehost

    blocks = spacehost.space_blocks(base=base, database=database, demo_adapters=demo_adapters, index=index_hub,
                                    push_endpoints=push_endpoints, max_file_size=max_file_size, say=info)
    spacehost.serve(blocks, host, port, say=info)


@space_cmd.command("export")
@click.argument("dest", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--base", default=None, metavar="SPEC",
              help="Base model of a GPU Space ($LORAHUB_SPACE_BASE's default in app.py): a Hub id. "
                   "On a CPU Space the shipped drawing base (SD 1.x) and the embedded tiny models are used whatever "
                   "this says.")
@click.option("--index-hub", "index_hub", default=None, metavar="FILTERS",
              help="Hub repos the Space indexes when it starts ($LORAHUB_SPACE_INDEX's default), e.g. "
                   "'author=alice, tag=lora' or 'endpoint=https://hub.example, repo=alice/inkwash'.")
@click.option("--hardware", type=click.Choice(["cpu", "zero-gpu", "gpu"]), default="cpu", show_default=True,
              help="What the Space runs on: sets the suggested hardware in README.md, and on zero-gpu "
                   "renders and trains under the `spaces` package's GPU decorator.")
@click.option("--space-id", default=None, metavar="OWNER/NAME",
              help="The Space the folder will be uploaded to: requirements.txt then installs lorahub's wheel from "
                   "that Space's files (the Hub builds a Space from requirements.txt alone). Without it, the "
                   "wheel is named by its path in the folder (pip install -r requirements.txt run inside it).")
@click.option("--endpoint", default=None, metavar="URL",
              help="With --space-id: the Hub the Space lives on (default $HF_ENDPOINT or https://huggingface.co).")
@click.option("--title", default="lorahub", show_default=True, help="The Space's title (README.md).")
@click.option("--force", is_flag=True, help="Replace DIR if it exists (it is replaced whole, at once).")
@json_option
def export_cmd(dest: str, base: str | None, index_hub: str | None, hardware: str, space_id: str | None,
               endpoint: str | None, title: str, force: bool, as_json: bool) -> None:
    """Write a Hugging Face Space folder for the lorahub page into DIR.

    DIR gets app.py (opens the registry, fills it, serves the page), README.md (the Space's settings:
    sdk gradio at the installed version, licence, hardware), requirements.txt (lorahub from the wheel in
    wheels/, built here from this tree, and its extras pinned to the installed versions) and the wheel.
    Nothing is downloaded. Deploy it, exported with --space-id OWNER/NAME (the Hub
    installs requirements.txt before the folder's files, so the wheel is named by
    its URL in the Space), with:

      hf upload OWNER/NAME DIR . --repo-type space

    Example:

      lorahub space export ./my-space --space-id me/lorahub --index-hub 'author=me, tag=lora'
    """
    from lorahub.cli.spaceexport import export_space

    result = export_space(dest, base=base, index=index_hub, hardware=hardware, space_id=space_id, endpoint=endpoint,
                          title=title, force=force, say=None if as_json else info)
    emit(result, as_json, lambda r: [f"wrote {r['folder']}: {', '.join(r['files'])}",
                                     f"deploy: {r['deploy']}"])
