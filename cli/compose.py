"""The CLI composes the faces: ``lorahub serve --ui`` is the hub server (:mod:`lorahub.registry.server`)
with the web UI (:mod:`lorahub.space`) mounted at ``/``. Neither knows the other; this module joins them
(docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lorahub.errors import UsageError


def check_ui(workers: int) -> None:
    """Refuse ``--ui`` where it cannot work, before anything starts."""
    import importlib.util

    if workers > 1:
        # Gradio keeps its queue, sessions and uploads in the process: a page's calls would land on
        # processes that never saw its session or its files.
        raise UsageError("the web UI (--ui) needs --workers 1", hint="serve the UI from its own process: lorahub space")
    if importlib.util.find_spec("gradio") is None:
        raise UsageError("the web UI (--ui) needs gradio", hint="pip install 'lorahub-toolkit[space]'")


def mount_space(app: Any, *, push_endpoints: Sequence[str] = (), max_file_size: int | None = None) -> None:
    """The web UI (lorahub.space) at ``/`` of the server's ``app``, hardened (see
    :func:`lorahub.space.ui.mount`): it searches through the server's own registry object (the hub's
    database is never opened a second time), never reads the data folder or the database, and pushes only
    to this hub, the Hugging Face Hub and the endpoints the operator allows (``push_endpoints``)."""
    from lorahub.registry.database import database_files
    from lorahub.space import guard
    from lorahub.space.ui import mount

    state = app.state.lorahub
    settings = state.settings
    policy = guard.make_policy(
        serving_url=settings.public_url,
        push_endpoints=tuple(push_endpoints),
        max_file_size=max_file_size,
        blocked=[settings.data_dir, *database_files(settings.database_url)],
    )
    mount(app, "/", search=state.registry.search, uses=state.registry.uses, policy=policy)


def space_on_app(*, push_endpoints: Sequence[str] = (), max_file_size: int | None = None) -> Callable[[Any], None]:
    """The ``on_app`` hook of :func:`lorahub.registry.server.run.serve` that mounts the web UI."""

    def on_app(app: Any) -> None:
        mount_space(app, push_endpoints=push_endpoints, max_file_size=max_file_size)

    return on_app


__all__ = ["check_ui", "mount_space", "space_on_app"]
