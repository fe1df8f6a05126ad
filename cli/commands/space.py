"""``lorahub space``: the Gradio page (search, preview/blend, inspect, train, push) on a local port."""

from __future__ import annotations

import click

from lorahub.cli.output import info


@click.command("space")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(1, 65535), help="Port.")
@click.option("--base", default=None, metavar="SPEC",
              help="Base model (embedded id, diffusers folder, .safetensors checkpoint, Hub id). "
                   "Default: $LORAHUB_SPACE_BASE on a GPU, else the embedded tiny model.")
@click.option("--database", default=None, metavar="URL", help="Registry searched by the Search tab (default: $LORAHUB_DATABASE_URL, else SQLite in $LORAHUB_HOME).")
def space_cmd(host: str, port: int, base: str | None, database: str | None) -> None:
    """Serve the lorahub page in the browser (the same app a Hugging Face Space runs)."""
    from lorahub.errors import require

    require("gradio", "space")
    from lorahub.space.ui import create_blocks

    demo = create_blocks(base, database)
    info(f"lorahub space: listening on http://{host}:{port}/")
    demo.launch(server_name=host, server_port=port, show_error=False, quiet=True, inbrowser=False)
