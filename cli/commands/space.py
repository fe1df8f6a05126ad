"""``lorahub space``: the Gradio page (search, preview/blend, inspect, train, push) on a local port."""

from __future__ import annotations

import click

from lorahub.cli.commands.serve import size_value
from lorahub.cli.output import info


@click.command("space")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(1, 65535), help="Port.")
@click.option("--base", default=None, metavar="SPEC",
              help="Base model (embedded id, diffusers folder, .safetensors checkpoint, Hub id). "
                   "Default: $LORAHUB_SPACE_BASE on a GPU, else the embedded tiny model.")
@click.option("--database", default=None, metavar="URL", help="Registry searched by the Search tab (default: $LORAHUB_DATABASE_URL, else SQLite in $LORAHUB_HOME).")
@click.option("--push-endpoint", "push_endpoints", multiple=True, metavar="URL",
              help="A Hub endpoint the Push tab may push to (repeatable; also $LORAHUB_UI_PUSH_ENDPOINTS). "
                   "Besides these, only https://huggingface.co.")
@click.option("--max-file-size", default=None, callback=size_value, metavar="SIZE",
              help="Largest file the page accepts, e.g. 500M (default $LORAHUB_UI_MAX_FILE_SIZE, else 1G).")
def space_cmd(host: str, port: int, base: str | None, database: str | None, push_endpoints: tuple[str, ...],
              max_file_size: int | None) -> None:
    """Serve the lorahub page in the browser (the same app a Hugging Face Space runs).

    Anyone who reaches the port can use the page: files are taken only from uploads, pushes need the
    visitor's own token (never the one of this machine), training and rendering are rate-limited per
    client. See `lorahub serve --help` to serve it inside a hub.
    """
    from lorahub.errors import require

    require("gradio", "space")
    from lorahub.space import guard
    from lorahub.space.ui import serve

    policy = guard.make_policy(push_endpoints=push_endpoints, max_file_size=max_file_size, database_url=database)
    serve(host, port, base=base, registry_url=database, policy=policy,
          on_ready=lambda url: info(f"lorahub space: listening on {url}"))
