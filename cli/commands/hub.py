"""``lorahub push`` and ``lorahub pull``: share adapters through a Hub endpoint."""

from __future__ import annotations

import click

from lorahub.cli.output import emit, info, json_option, warn
from lorahub.errors import LorahubError


def _record(res, registry_url: str | None, done: str) -> None:  # noqa: ANN001 - PushResult | PullResult
    """Record a push or pull in the registry; a failure is a warning (the files were already moved)."""
    try:
        from lorahub.registry.catalogue import Registry

        with Registry(registry_url) as reg:
            reg.record_hub_files(res)
        res.registered = True
    except Exception as exc:  # noqa: BLE001 - say why the record is missing
        res.warnings.append(f"{done}, but not recorded in the local registry: {type(exc).__name__}: {exc}")


@click.command("push")
@click.argument("path", type=click.Path(exists=True, path_type=str))
@click.option("--repo", help="NAMESPACE/NAME (default: your user name and the folder name).")
@click.option("--private", is_flag=True, help="Create the repo private.")
@click.option("--endpoint", help="Hub endpoint URL (default: $HF_ENDPOINT or https://huggingface.co).")
@click.option("--token", help="Token (default: $HF_TOKEN or the huggingface_hub login).")
@click.option("--revision", help="Branch to push to (default: main).")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing to the branch.")
@click.option("-m", "--message", help="Commit message.")
@click.option("--base-model", help="Hub id of the base model for the card (default: from the training config; Flux.1/SD3: the checkpoint the metadata or shapes name, e.g. black-forest-labs/FLUX.1-dev).")
@click.option("--license", "license_", help="Licence for the card (default: the base's: Flux.1-dev's non-commercial licence named and linked, schnell apache-2.0, SD 3.5 stabilityai-ai-community, SD 1.x/SDXL the family's usual one).")
@click.option("--tag", "tags", multiple=True, help="Extra card tag (repeatable).")
@click.option("--overwrite-card", is_flag=True, help="Replace a README.md you wrote instead of only filling in metadata.")
@click.option("--dry-run", is_flag=True, help="Show the card and the file list; upload nothing.")
@click.option("--registry", "registry_url", help="Registry database URL to record the push in (default: the local one).")
@click.option("--no-register", is_flag=True, help="Do not record the push in the registry.")
@json_option
def push_cmd(path: str, repo: str | None, private: bool, endpoint: str | None, token: str | None,
             revision: str | None, create_pr: bool, message: str | None, base_model: str | None,
             license_: str | None, tags: tuple[str, ...], overwrite_card: bool, dry_run: bool,
             registry_url: str | None, no_register: bool, as_json: bool) -> None:
    """Push an adapter package folder (as `lorahub train` writes it) or one .safetensors file.

    Validates first, writes a model card (a card you wrote is kept: only missing
    metadata is filled in), uploads in one commit and records the adapter in the
    registry. Pushing an unchanged adapter makes no commit and sends no bytes. For
    endpoints other than the Hugging Face Hub, Xet is switched off automatically.
    """
    from lorahub.hub.push import push

    res = push(path, repo=repo, private=private, endpoint=endpoint, token=token, revision=revision,
               create_pr=create_pr, message=message, dry_run=dry_run, overwrite_card=overwrite_card,
               base_model=base_model, license=license_, tags=list(tags), log=info)
    if not no_register and not res.dry_run and res.commit and not create_pr:
        _record(res, registry_url, "pushed")
    for w in res.warnings:
        warn(w)

    def human(r) -> list[str]:  # noqa: ANN001
        lines = []
        if r.dry_run:
            lines += [f"dry run: would push to {r.url} (card: {r.card_action})", "", r.card or "", "files:"]
            lines += [f"  {f.status:<9} {f.path}  ({f.size:,} bytes)" for f in r.files]
            return lines
        if r.changed:
            lines.append(f"pushed {sum(f.status != 'unchanged' for f in r.files)} file(s), {r.bytes_uploaded:,} bytes")
        else:
            lines.append("nothing changed: no new commit")
        lines.append(f"{r.url}  (commit {str(r.commit)[:12]})")
        if r.pull_request_url:
            lines.append(f"pull request: {r.pull_request_url}")
        return lines

    emit(res, as_json, human)


@click.command("pull")
@click.argument("spec", metavar="REPO_ID[@REV]")
@click.option("--to", "to", type=click.Path(file_okay=False, path_type=str),
              help="Folder to put the files in (default: the huggingface_hub cache).")
@click.option("--endpoint", help="Hub endpoint URL (default: $HF_ENDPOINT or https://huggingface.co).")
@click.option("--token", help="Token for private repos (default: $HF_TOKEN or the huggingface_hub login).")
@click.option("--registry", "registry_url", help="Registry database URL (default: the local one).")
@click.option("--no-register", is_flag=True, help="Do not record the adapter in the registry.")
@json_option
def pull_cmd(spec: str, to: str | None, endpoint: str | None, token: str | None, registry_url: str | None,
             no_register: bool, as_json: bool) -> None:
    """Download an adapter repo, verify its files and add it to the registry.

    Files are checked against the registry's fingerprints when it knows the repo
    (a mismatch is an error and nothing is kept) and against the Hub's LFS SHA-256.
    A registry that cannot be read is an error too.
    """
    from lorahub.hub.endpoint import normalize_endpoint
    from lorahub.hub.pull import parse_spec, pull
    from lorahub.registry.catalogue import Registry

    repo_id, _ = parse_spec(spec)
    # What the registry recorded for the repo: a download that differs is refused. A registry that
    # cannot be read is an error (exit 1), not a silent pull without that check.
    try:
        with Registry(registry_url) as reg:
            known = reg.hub_files(normalize_endpoint(endpoint), repo_id)
    except LorahubError as exc:
        exc.message = f"the registry could not be read to verify {repo_id} against: {exc.message}"
        raise
    res = pull(spec, to=to, endpoint=endpoint, token=token, known=known)
    if not no_register and res.files:
        _record(res, registry_url, "downloaded")
    for w in res.warnings:
        warn(w)

    def human(r) -> list[str]:  # noqa: ANN001
        lines = [f"{r.repo_id}@{r.commit[:12]} -> {r.folder}"]
        lines += [f"  {f.path}  {f.sha256[:12]}  verified against {f.verified}" for f in r.files]
        return lines

    emit(res, as_json, human)
