"""``push``: an adapter package to the Hugging Face Hub or any Hub-compatible endpoint.

Validate first (the adapter-file layer), write the model card and upload through
huggingface_hub in one commit. Idempotent: an unchanged package makes no commit
and sends no file bytes; a changed one makes exactly one commit with only the
changed files; running it again after an interrupted upload completes it (the
server already holds the objects that were sent). The result carries what was
read of the adapter (:class:`~lorahub.schemas.hub.RepoAdapter`): recording it in
a registry is the caller's choice (``lorahub push`` does, with
``Registry.record_hub_files``).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lorahub.errors import InvalidAdapterError, UsageError, YamlError
from lorahub.schemas.hub import PushFile, PushResult, RepoAdapter
from lorahub.schemas.registry import HASH_FIELDS

from .card import (
    CardInputs,
    Sample,
    hub_base_model,
    is_generated,
    merge_card,
    parse_card,
    render_card,
    tool_files,
)
from .endpoint import hf_api, is_hf_hub, normalize_endpoint
from .errors import HubError, hub_error
from .package import AdapterPackage, load_package


@dataclass
class _Local:
    path: str
    size: int
    sha256: str
    git_sha1: str | None
    source: Path | bytes


def _file_digests(src: Path | bytes, want_git: bool) -> tuple[int, str, str | None]:
    if isinstance(src, bytes):
        data = src
        git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        return len(data), hashlib.sha256(data).hexdigest(), git
    size = src.stat().st_size
    if src.suffix == ".safetensors":
        from lorahub.adapters.fingerprint import fingerprint_file

        sha = fingerprint_file(src).sha256
    else:
        h = hashlib.sha256()
        with open(src, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        sha = h.hexdigest()
    git = None
    if want_git and size <= 10 << 20:
        g = hashlib.sha1(b"blob %d\0" % size)
        with open(src, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                g.update(chunk)
        git = g.hexdigest()
    return size, sha, git


def _validate(pkg: AdapterPackage) -> list[str]:
    """Validate every adapter file of the package; raise on the first invalid one."""
    from lorahub.adapters.pickles import is_pickle_name, pickle_refusal
    from lorahub.adapters.validate import validate_file

    pickles = sorted(k for k in pkg.files if is_pickle_name(k))
    if pickles:
        raise pickle_refusal(pickles[0], "a pickle file in the package, which lorahub does not share",
                             hint="remove it from the package or convert it to .safetensors")
    warnings: list[str] = []
    targets = [pkg.weights] + [
        f for k, f in pkg.files.items() if k.endswith(".safetensors") and f != pkg.weights
    ]
    for f in targets:
        report = validate_file(f)
        if not report.valid:
            raise InvalidAdapterError(str(f), report.errors)
        warnings += [f"{f.name}: {w}" for w in report.warnings]
    return warnings


def push(
    path: str | os.PathLike[str],
    *,
    repo: str | None = None,
    private: bool = False,
    endpoint: str | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    message: str | None = None,
    dry_run: bool = False,
    overwrite_card: bool = False,
    base_model: str | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> PushResult:
    say = log or (lambda _m: None)
    ep = normalize_endpoint(endpoint)
    pkg = load_package(path)
    warnings = _validate(pkg)

    from lorahub.adapters.fingerprint import fingerprint_file
    from lorahub.adapters.inspect import inspect_file

    report = inspect_file(pkg.weights)
    fp = fingerprint_file(pkg.weights)
    reports = {pkg.weight_name: report}
    for rel, f in pkg.files.items():
        if "/" not in rel and rel.endswith(".safetensors") and rel != pkg.weight_name:
            reports[rel] = inspect_file(f)
    base = base_model or pkg.base_model
    if base in (None, "", "embedded") and report.base_family not in ("sdxl", "flux", "sd3"):
        from lorahub.base.embedded import EMBEDDED_ID

        base = EMBEDDED_ID if pkg.training else base
    if not base_model:  # what the user names is kept as is
        # the checkpoint (FLUX.1-dev or -schnell...) from the file that declares one: diffusers' own files carry
        # no modelspec, the kohya file beside them may
        declaring = next((r for r in reports.values() if r.base_family == report.base_family
                          and r.metadata.get("modelspec.architecture")), report)
        base = hub_base_model(base, report.base_family, declaring)
    # None: the token of the environment (HF_TOKEN, `hf auth login`), as huggingface_hub does; False: none
    # at all, ever (a web page pushing for a visitor): a dry run then makes no request, a push is refused.
    token = token if token is False else (token or None)
    if token is False and not dry_run:
        raise HubError(f"no token for {ep}", hint="a push needs a token")
    api = hf_api(ep, token=token)

    user = None
    if token or (token is None and not dry_run):
        try:
            who = api.whoami()
            user = who.get("name")
        except Exception as exc:  # noqa: BLE001 - mapped to one line
            if not dry_run:
                if _is_no_token(exc):
                    raise HubError(
                        f"no token for {ep}", hint="pass --token, set HF_TOKEN or run `hf auth login`"
                    ) from exc
                raise hub_error(exc, endpoint=ep, action="whoami") from exc
    if repo:
        repo_id = repo
    elif user:
        repo_id = f"{user}/{pkg.default_repo_name}"
    elif dry_run:
        repo_id = f"<you>/{pkg.default_repo_name}"
    else:  # pragma: no cover - whoami without a name
        raise UsageError("cannot tell your user name: pass --repo NAMESPACE/NAME")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UsageError(f"repo id {repo_id!r} is not NAMESPACE/NAME")

    inputs = CardInputs(
        repo_id=repo_id,
        weight_name=pkg.weight_name,
        tool_files=tool_files(reports, pkg.weight_name),
        report=report,
        fingerprint=fp,
        base_model=base,
        license=license,
        tags=list(tags or []),
        samples=[Sample(p, prompt or ", ".join(report.trigger_words)) for p, prompt in pkg.samples],
        training={k: v for k, v in pkg.training.items() if isinstance(v, (str, int, float, bool))},
        endpoint=ep,
    )
    added: list[str] = []
    if pkg.card is None:
        card, action = render_card(inputs), "generated"
    elif is_generated(pkg.card):
        card, action = render_card(inputs), "generated"
    elif overwrite_card:
        card, action = render_card(inputs), "overwritten"
    else:
        card, added = merge_card(pkg.card, inputs)
        action = "merged" if added else "kept"
        if added:
            say(f"kept your model card; filled in missing metadata: {', '.join(added)} (--overwrite-card replaces it)")

    local: list[_Local] = []
    for rel, f in pkg.files.items():
        if rel == "README.md":
            continue
        size, sha, git = _file_digests(f, want_git=True)
        local.append(_Local(rel, size, sha, git, f))
    card_bytes = card.encode("utf-8")
    size, sha, git = _file_digests(card_bytes, want_git=True)
    local.append(_Local("README.md", size, sha, git, card_bytes))
    if report.recipe is not None:  # a lorahub blend: its recipe beside it, and its sources' licences checked
        from lorahub.pipeline.recipe import RECIPE_FILE, dump_recipe, licence_conflicts

        if RECIPE_FILE not in pkg.files:
            recipe_bytes = dump_recipe(report.recipe).encode("utf-8")
            size, sha, git = _file_digests(recipe_bytes, want_git=True)
            local.append(_Local(RECIPE_FILE, size, sha, git, recipe_bytes))
        try:
            published = (parse_card(card) or {}).get("license")
        except YamlError:
            published = None
        warnings.extend(licence_conflicts(report.recipe, published if isinstance(published, str) else None))
    local.sort(key=lambda item: item.path)

    web_url = f"{ep}/{repo_id}"
    rev = revision or "main"
    adapters = [repo_adapter(pkg.weight_name, report, fp)]
    if dry_run:
        remote = _remote_state(api, repo_id, rev, ep) if user else {}
        files = [_status(item, remote) for item in local]
        return PushResult(
            repo_id=repo_id, endpoint=ep, url=web_url, revision=rev, commit=remote.get("__sha__"),
            changed=any(f.status != "unchanged" for f in files), dry_run=True, private=private,
            weight_name=pkg.weight_name, files=files, card_action=action, card_added=added, card=card,
            adapters=adapters, warnings=warnings,
        )

    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
    except Exception as exc:  # noqa: BLE001
        raise hub_error(exc, endpoint=ep, repo_id=repo_id, action="repo creation") from exc
    remote = _remote_state(api, repo_id, rev, ep)
    files = [_status(item, remote) for item in local]
    changed = [item for item, f in zip(local, files, strict=True) if f.status != "unchanged"]
    head = remote.get("__sha__")
    pr_url = None
    if not changed:
        say(f"{repo_id} is up to date at {str(head)[:12]}: nothing to push")
        commit = head
    else:
        from huggingface_hub import CommitOperationAdd

        ops = [
            CommitOperationAdd(path_in_repo=item.path,
                               path_or_fileobj=io.BytesIO(item.source) if isinstance(item.source, bytes) else str(item.source))
            for item in changed
        ]
        say(f"pushing {len(changed)} file(s) to {web_url}")
        try:
            info = api.create_commit(
                repo_id,
                operations=ops,
                commit_message=message or f"Upload {pkg.default_repo_name} with lorahub",
                revision=rev,
                create_pr=create_pr,
                parent_commit=head if (head and not create_pr) else None,
            )
        except Exception as exc:  # noqa: BLE001
            raise hub_error(exc, endpoint=ep, repo_id=repo_id, action="upload") from exc
        commit = info.oid
        pr_url = getattr(info, "pr_url", None)
    return PushResult(
        repo_id=repo_id, endpoint=ep, url=web_url, revision=rev, commit=commit, changed=bool(changed),
        private=private, weight_name=pkg.weight_name, files=files,
        bytes_uploaded=sum(item.size for item in changed), card_action=action, card_added=added, card=card,
        pull_request_url=pr_url, adapters=adapters, warnings=warnings,
    )


def repo_adapter(path: str, report, fp) -> RepoAdapter:  # noqa: ANN001 - InspectReport, FingerprintReport
    """What a registry needs of one adapter file of a repo: its fingerprints and its header's summary."""
    return RepoAdapter(
        path=path, size=fp.size, hashes={k: v for k, v in fp.model_dump().items() if k in HASH_FIELDS and v},
        format=report.format, base_family=report.base_family, rank=report.rank, alpha=report.alpha,
        dtype=report.dtype, trigger_words=list(report.trigger_words), title=report.title, recipe=report.recipe,
    )


def _is_no_token(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "token" in text and ("not provided" in text or "no token" in text or "not logged in" in text or "login" in text)


def _remote_state(api, repo_id: str, revision: str, ep: str) -> dict[str, object]:  # noqa: ANN001
    """path -> (lfs sha256 or None, git blob id); '__sha__' -> head commit. Empty for a new repo."""
    from huggingface_hub import errors as hf

    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except (hf.RepositoryNotFoundError, hf.RevisionNotFoundError):
        return {}
    except Exception as exc:  # noqa: BLE001
        raise hub_error(exc, endpoint=ep, repo_id=repo_id, action="repo lookup") from exc
    state: dict[str, object] = {"__sha__": info.sha}
    for s in info.siblings or []:
        lfs = getattr(s, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        if sha is None and isinstance(lfs, dict):
            sha = lfs.get("sha256")
        state[s.rfilename] = (sha, getattr(s, "blob_id", None))
    return state


def _status(item: _Local, remote: dict[str, object]) -> PushFile:
    have = remote.get(item.path)
    if have is None:
        status = "new"
    else:
        sha, blob = have  # type: ignore[misc]
        same = (sha is not None and sha.lower() == item.sha256) or (
            sha is None and blob is not None and item.git_sha1 is not None and blob == item.git_sha1
        )
        status = "unchanged" if same else "changed"
    return PushFile(path=item.path, size=item.size, sha256=item.sha256, status=status)


__all__ = ["push", "is_hf_hub", "repo_adapter"]
