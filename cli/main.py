"""Entry point of the ``lorahub`` command.

Commands are registered in :data:`COMMANDS` as ``"module:attribute"`` strings
and imported only when used (or when ``--help`` lists them). Command modules
must not import torch, diffusers or gradio at module level.

Errors: a :class:`lorahub.errors.LorahubError` becomes one line on stderr and
its exit code (1 failed, 2 usage); anything else becomes one line too unless
``LORAHUB_DEBUG=1``, which shows the traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from lorahub import __version__
from lorahub.config import debug
from lorahub.errors import LorahubError

#: name -> "module:attribute" of a click command or group.
COMMANDS: dict[str, str] = {
    "inspect": "lorahub.cli.commands.inspect:inspect_cmd",
    "validate": "lorahub.cli.commands.validate:validate_cmd",
    "fingerprint": "lorahub.cli.commands.fingerprint:fingerprint_cmd",
    "meta": "lorahub.cli.commands.meta:meta_group",
    "base": "lorahub.cli.commands.base:base_group",
    "demo": "lorahub.cli.commands.demo:demo_cmd",
    "train": "lorahub.cli.commands.train:train_cmd",
    "space": "lorahub.cli.commands.space:space_cmd",
    "preview": "lorahub.cli.commands.preview:preview_cmd",
    "blend": "lorahub.cli.commands.preview:blend_cmd",
    "fuse": "lorahub.cli.commands.preview:fuse_cmd",
    "convert": "lorahub.cli.commands.preview:convert_cmd",
    "index": "lorahub.cli.commands.registry:index_cmd",
    "search": "lorahub.cli.commands.registry:search_cmd",
    "dupes": "lorahub.cli.commands.registry:dupes_cmd",
    "registry": "lorahub.cli.commands.registry:registry_group",
    "serve": "lorahub.cli.commands.serve:serve_cmd",
    "token": "lorahub.cli.commands.serve:token_group",
    "org": "lorahub.cli.commands.orgs:org_group",
    "push": "lorahub.cli.commands.hub:push_cmd",
    "pull": "lorahub.cli.commands.hub:pull_cmd",
    "resolve": "lorahub.cli.commands.resolve:resolve_cmd",
}


class LorahubGroup(click.Group):
    """A click group that loads commands lazily and turns errors into one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except LorahubError as exc:
            if debug():
                raise
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            if debug():
                raise
            fail("interrupted", 130)
        except BrokenPipeError:
            sys.exit(1)
        except Exception as exc:  # noqa: BLE001 - the one place that catches everything
            if debug():
                raise
            name = type(exc).__name__
            fail(f"unexpected {name}: {exc} (set LORAHUB_DEBUG=1 to see the traceback)", 1)


def fail(message: str, code: int) -> None:
    click.echo(click.style("Error: ", fg="red", bold=True) + " ".join(str(message).split("\n")), err=True)
    sys.exit(code)


@click.group(cls=LorahubGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lorahub")
def cli() -> None:
    """lorahub: train, fingerprint, search, share, hot-swap and blend Stable Diffusion LoRA adapters.

    Set LORAHUB_HOME to choose where lorahub keeps its state (default
    ~/.cache/lorahub) and LORAHUB_DEBUG=1 to see tracebacks.
    """


def main() -> None:
    cli(prog_name="lorahub")


if __name__ == "__main__":  # pragma: no cover
    main()
