"""``lorahub serve`` and ``lorahub token create|list|revoke``.

The server keeps its blobs in ``--data DIR`` (default ``$LORAHUB_HOME/server``) and its database
at ``--database URL``, else ``$LORAHUB_DATABASE_URL``, else SQLite inside the data folder. The
``token`` commands take the same two options so that they reach the same database.
"""

from __future__ import annotations

import click

from lorahub.cli.output import emit, info, json_option, table, warn

data_option = click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Server data folder (blobs; SQLite database by default). Default: $LORAHUB_HOME/server.",
)
database_option = click.option(
    "--database",
    default=None,
    metavar="URL",
    help="Database URL (sqlite:///... or postgresql://...). Default: $LORAHUB_DATABASE_URL, else SQLite in the data folder.",
)


def size_value(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """Click callback of a SIZE option (``500M``, ``20G``; also ``lorahub space``): bytes, or None when not given."""
    if value is None:
        return None
    from lorahub.units import parse_bytes

    try:
        return parse_bytes(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _origins(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    from lorahub.registry.server.settings import check_origin

    try:
        return tuple(check_origin(v) for v in value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port (0 picks a free one).")
@data_option
@database_option
@click.option("--max-upload-size", default=None, callback=size_value, metavar="SIZE", help="Largest LFS object, e.g. 500M, 20G (default 20G).")
@click.option("--max-commit-size", default=None, callback=size_value, metavar="SIZE", help="Largest NDJSON commit body (default 64M).")
@click.option("--public-url", default=None, metavar="URL", help="URL clients reach the server at, when behind a proxy (default http://HOST:PORT).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Also answer requests whose Host is NAME (repeatable; '*' turns the check off). Always answered: "
                   "the public URL's host, localhost and IP addresses; any other Host gets 421 (DNS rebinding).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN", callback=_origins,
              help="Let web pages from ORIGIN (https://app.example.com; '*' for any) read the answers (CORS, "
                   "without cookies); repeatable. Default: none.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
@click.option("--no-access-log", is_flag=True, help="Do not log one line per request.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes sharing the port (and the database and blobs).")
@click.option("--no-index", is_flag=True, help="Do not index committed adapters into the registry (they are still validated).")
@click.option("--ui/--no-ui", default=False, show_default=True,
              help="Also serve the lorahub web UI (the Space) at / (needs gradio, and --workers 1). Off by "
                   "default: anyone who reaches the server may use it to render and train (see docs/server.md).")
@click.option("--ui-push-endpoint", "ui_push_endpoints", multiple=True, metavar="URL",
              help="An endpoint the web UI may push to besides this hub and https://huggingface.co (repeatable; "
                   "also $LORAHUB_UI_PUSH_ENDPOINTS).")
@click.option("--ui-max-file-size", default=None, callback=size_value, metavar="SIZE",
              help="Largest file the web UI accepts (default $LORAHUB_UI_MAX_FILE_SIZE, else 1G).")
def serve_cmd(
    host: str,
    port: int,
    data_dir: str | None,
    database: str | None,
    max_upload_size: int | None,
    max_commit_size: int | None,
    public_url: str | None,
    allowed_hosts: tuple[str, ...],
    cors_origins: tuple[str, ...],
    log_level: str,
    no_access_log: bool,
    workers: int,
    no_index: bool,
    ui: bool,
    ui_push_endpoints: tuple[str, ...],
    ui_max_file_size: int | None,
) -> None:
    """Run a self-hosted, Hugging Face Hub compatible adapter hub.

    Clients: set HF_ENDPOINT=http://HOST:PORT; the stock huggingface_hub / hf CLI upload and
    download as they are (Xet with hf_xet, or classic LFS). Create tokens with
    `lorahub token create --user NAME`.
    The lorahub search API and its docs are at /docs; with --ui, the web UI (the Space) at /.
    """
    from lorahub.registry.server.run import serve

    on_app = None
    if ui:
        from lorahub.cli.compose import check_ui, space_on_app

        check_ui(workers)
        on_app = space_on_app(push_endpoints=ui_push_endpoints, max_file_size=ui_max_file_size)
    serve(
        host=host,
        port=port,
        data_dir=data_dir,
        database=database,
        max_upload_size=max_upload_size,
        max_commit_bytes=max_commit_size,
        public_url=public_url,
        allowed_hosts=list(allowed_hosts),
        cors_origins=list(cors_origins),
        log_level=log_level,
        access_log=not no_access_log,
        index_adapters=not no_index,
        workers=workers,
        on_app=on_app,
    )


@click.group("token")
def token_group() -> None:
    """Create, list and revoke API tokens of `lorahub serve`."""


def _session(data_dir: str | None, database: str | None):  # noqa: ANN202
    from sqlmodel import Session

    from lorahub.registry.server.run import prepare

    _, _, registry = prepare(data_dir, database)
    return registry, Session(registry.engine, expire_on_commit=False)


@token_group.command("create")
@click.option("--user", "user_name", required=True, metavar="NAME", help="User (created if needed); the token writes to NAME's namespace.")
@click.option("--read-only", is_flag=True, help="A token that can read (private repos of the user included) but not write.")
@click.option("--name", "token_name", default="", help="A label for the token (shown by `token list`).")
@click.option("--expires-days", type=click.FloatRange(min=0, min_open=True), default=None, help="Expire after this many days.")
@click.option("--repo", "repos", multiple=True, metavar="NS/NAME",
              help="Fine-grained: the token acts only on this repo (repeatable; with --org, on those too).")
@click.option("--org", "orgs", multiple=True, metavar="ORG",
              help="Fine-grained: the token acts only on the repos of this organisation (or, given the user's own "
                   "name, of the user; repeatable).")
@data_option
@database_option
def token_create(
    user_name: str,
    read_only: bool,
    token_name: str,
    expires_days: float | None,
    repos: tuple[str, ...],
    orgs: tuple[str, ...],
    data_dir: str | None,
    database: str | None,
) -> None:
    """Create a token; it is printed once, alone on the last line of stdout.

    It has its user's rights (their namespace, their organisations' repos as their roles allow),
    limited to reading with --read-only and to the named repos and organisations with --repo/--org
    (public repos stay readable by every token)."""
    from lorahub.registry.hub.auth import create_token

    registry, session = _session(data_dir, database)
    try:
        with session:
            token, row, user = create_token(
                session, user_name, write=not read_only, name=token_name, expires_in_days=expires_days,
                repos=repos, orgs=orgs,
            )
    finally:
        registry.close()
    access = "read" if read_only else f"read, write to {user.name}/* and as its roles allow"
    if repos or orgs:
        access = ("read" if read_only else "read, write") + " only on " + ", ".join([*repos, *(f"{o}/*" for o in orgs)])
    info(f"token {row.id} for user {user.name} ({access}); store it now, it is not shown again")
    click.echo(token)


@token_group.command("list")
@click.option("--user", "user_name", default=None, metavar="NAME", help="Only this user's tokens.")
@data_option
@database_option
@json_option
def token_list(user_name: str | None, data_dir: str | None, database: str | None, as_json: bool) -> None:
    """List tokens (never the secrets: only their first characters)."""
    from lorahub.registry.database import as_datetime, iso
    from lorahub.registry.hub.auth import list_tokens, token_scopes
    from lorahub.registry.server.run import prepare

    # A driver connection of its own, no SQLAlchemy: a fast start (see lorahub.registry.catalogue).
    registry = prepare(data_dir, database, pooled=False)[2]
    try:
        with registry.reading() as raw:
            rows = list_tokens(raw, user_name)
            scopes = token_scopes(raw, [t.id for t in rows])
    finally:
        registry.close()
    items = [
        {
            "id": t.id,
            "user": t.user_name,
            "name": t.name,
            "prefix": t.token_prefix + "...",
            "access": "write" if t.can_write else "read",
            "scopes": scopes.get(int(t.id), []),
            "created_at": iso(as_datetime(t.created_at)),
            "last_used_at": iso(as_datetime(t.last_used_at)),
            "expires_at": iso(as_datetime(t.expires_at)),
            "revoked": t.revoked_at is not None,
        }
        for t in rows
    ]

    def human(objs: list[dict]) -> list[str]:
        if not objs:
            return ["no tokens"]
        return table(
            [
                [
                    str(o["id"]),
                    o["user"],
                    o["access"] + (" on " + ",".join(o["scopes"]) if o["scopes"] else ""),
                    o["prefix"],
                    o["name"] or "-",
                    (o["created_at"] or "")[:16].replace("T", " "),
                    (o["last_used_at"] or "never")[:16].replace("T", " "),
                    "revoked" if o["revoked"] else "active",
                ]
                for o in objs
            ],
            ["ID", "USER", "ACCESS", "TOKEN", "NAME", "CREATED", "LAST USED", "STATUS"],
        )

    emit(items, as_json, human)


@token_group.command("revoke")
@click.argument("token_or_id")
@data_option
@database_option
def token_revoke(token_or_id: str, data_dir: str | None, database: str | None) -> None:
    """Revoke a token, given the token itself or its id (from `lorahub token list`)."""
    from lorahub.registry.hub.auth import revoke_token

    registry, session = _session(data_dir, database)
    try:
        with session:
            tok, user = revoke_token(session, token_or_id)
    finally:
        registry.close()
    if tok.revoked_at is not None:
        info(f"token {tok.id} of user {user.name} is revoked")
    else:  # pragma: no cover
        warn("token not revoked")
