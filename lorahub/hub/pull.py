"""``pull``: download an adapter repo (cache-aware) and verify it.

Every file is checked against the Hub's LFS SHA-256 and against ``known``: the hashes a registry
recorded for the repo, which the caller reads from its own registry (``lorahub pull`` reads them with
``Registry.source_files``). The result carries what was read of each adapter
(:class:`~lorahub.schemas.hub.RepoAdapter`) and the card, for the caller to record.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from lorahub.errors import LorahubError, UnsafePathError, UsageError
from lorahub.schemas.hub import PullFile, PullResult

from .endpoint import hf_api, normalize_endpoint
from .errors import HubError, hub_error
from .paths import local_path_problem


def parse_spec(spec: str) -> tuple[str, str | None]:
    repo_id, _, rev = spec.partition("@")
    repo_id = repo_id.strip()
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UsageError(f"{spec!r} is not NAMESPACE/NAME[@REVISION]")
    return repo_id, (rev.strip() or None)


def pull(
    spec: str,
    *,
    to: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    known: Mapping[str, str] | None = None,
) -> PullResult:
    """Download ``spec`` (``NAMESPACE/NAME[@REVISION]``) into ``to`` (else the huggingface_hub cache).

    ``known``: repo path -> SHA-256 a registry recorded for this repo; a file that differs is an error
    and nothing is kept."""
    repo_id, rev = parse_spec(spec)
    ep = normalize_endpoint(endpoint)
    api = hf_api(ep, token=token or None)
    try:
        info = api.model_info(repo_id, revision=rev, files_metadata=True)
    except Exception as exc:  # noqa: BLE001
        raise hub_error(exc, endpoint=ep, repo_id=repo_id, action="download") from exc
    commit = info.sha
    lfs = {}
    for s in info.siblings or []:
        meta = getattr(s, "lfs", None)
        sha = getattr(meta, "sha256", None) if meta is not None else None
        if sha is None and isinstance(meta, dict):
            sha = meta.get("sha256")
        lfs[s.rfilename] = sha
    # Every name is checked before anything is written: a repo that lists `sub/.git/config` (or
    # `.GIT/hooks/x`, `git~1/config`, ...) would plant a git folder whose config runs commands.
    for name in lfs:
        problem = local_path_problem(name)
        if problem is not None:
            raise UnsafePathError(
                f"refused to pull {repo_id}: it holds the file {name[:120]!r} ({problem}); nothing was downloaded"
            )
    known = dict(known or {})

    target = Path(to).expanduser() if to else None
    staging = None
    try:
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            folder = _download(api, repo_id, commit, sorted(lfs), staging)
        except LorahubError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise hub_error(exc, endpoint=ep, repo_id=repo_id, action="download") from exc
        folder = Path(folder)
        from lorahub.adapters.fingerprint import fingerprint_file
        from lorahub.adapters.inspect import inspect_file

        from .push import repo_adapter

        files: list[PullFile] = []
        adapters = []
        warnings: list[str] = []
        for f in sorted(folder.rglob("*")):
            rel = f.relative_to(folder).as_posix()
            if not f.is_file() or rel.startswith(".cache/") or "/.cache/" in rel:
                continue
            if not rel.endswith(".safetensors"):
                continue
            fp = fingerprint_file(f)
            if rel in known and known[rel] and known[rel].lower() != fp.sha256:
                raise HubError(
                    f"{repo_id}/{rel}: SHA-256 {fp.sha256[:12]}... does not match the registry's "
                    f"{known[rel][:12]}...: the file changed or was tampered with; nothing was kept"
                )
            if lfs.get(rel) and lfs[rel].lower() != fp.sha256:
                raise HubError(f"{repo_id}/{rel}: download does not match the Hub's SHA-256; nothing was kept")
            how = "registry" if rel in known else ("hub" if lfs.get(rel) else "unverified")
            files.append(PullFile(path=rel, local_path="", size=f.stat().st_size, sha256=fp.sha256, verified=how))
            try:
                adapters.append(repo_adapter(rel, inspect_file(f), fp))
            except LorahubError as exc:  # kept and verified, but it cannot be described as an adapter
                warnings.append(f"{rel}: not readable as an adapter ({exc})")
        if target is not None and staging is not None:
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(staging, target)
            staging = None
            folder = target
        for pf in files:
            pf.local_path = str(folder / pf.path)
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    readme = folder / "README.md"
    text = readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else None
    return PullResult(repo_id=repo_id, endpoint=ep, revision=rev or "main", commit=commit, folder=str(folder),
                      files=files, adapters=adapters, readme=text, warnings=warnings)


def _download(api, repo_id: str, commit: str, names: list[str], staging: Path | None) -> Path:  # noqa: ANN001
    """Download exactly ``names`` (already checked) at ``commit``: into ``staging``, else the
    huggingface_hub cache; returns the folder that holds them. File by file rather than
    ``snapshot_download``, which lists the repo a second time: a hostile server could name other
    files the second time."""
    from concurrent.futures import ThreadPoolExecutor

    if not names:
        raise HubError(f"{repo_id} holds no files at {commit}")

    def one(name: str) -> str:
        return api.hf_hub_download(repo_id, name, revision=commit, local_dir=str(staging) if staging else None)

    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        paths = list(pool.map(one, names))
    if staging is not None:
        return staging
    # hf_hub_download answers <cache>/snapshots/<commit>/<name>: the folder is above the name's parts
    first = Path(paths[0])
    return first.parents[len(Path(names[0]).parts) - 1]


def fetch_file(
    repo_id: str,
    filename: str,
    *,
    sha256: str,
    cache_dir: str | os.PathLike[str],
    endpoint: str | None = None,
    revision: str | None = None,
    max_size: int | None = None,
    token: str | bool | None = False,
) -> Path:
    """One file of a repo, downloaded into ``cache_dir`` (the huggingface_hub cache layout: a second call
    finds it there) and checked against ``sha256`` (the hash a catalogue recorded when it indexed the
    repo from its header, without the weights); a file that differs is removed and refused.

    ``max_size``: a file the endpoint says is larger is refused before any byte of it is read.
    ``token``: default ``False``, no credentials at all (a page that previews for strangers never sends
    its host's)."""
    import hashlib

    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    problem = local_path_problem(filename)
    if problem is not None or filename.startswith("/"):
        raise UnsafePathError(f"refused to fetch {repo_id}/{filename[:120]}: {problem or 'absolute path'}")
    want = (sha256 or "").strip().lower()
    if len(want) != 64:
        raise UsageError(f"{repo_id}/{filename}: no SHA-256 recorded to check the download against")
    api = hf_api(endpoint, token=token)
    ep = api.endpoint.rstrip("/")
    try:
        if max_size is not None:
            meta = get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision, endpoint=ep), token=token)
            if meta.size is not None and meta.size > max_size:
                raise HubError(f"{repo_id}/{filename}: {meta.size:,} bytes, more than the {max_size:,} allowed")
        path = Path(api.hf_hub_download(repo_id, filename, revision=revision, cache_dir=str(cache_dir)))
    except LorahubError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise hub_error(exc, endpoint=ep, repo_id=repo_id, action="download") from exc
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != want:
        real = path.resolve()
        path.unlink(missing_ok=True)
        real.unlink(missing_ok=True)
        raise HubError(f"{repo_id}/{filename}: SHA-256 {h.hexdigest()[:12]}... does not match the catalogue's "
                       f"{want[:12]}...: the file changed since it was indexed; nothing was kept")
    return path


def fetch_small(repo_id: str, filename: str, *, endpoint: str, revision: str | None = None, max_size: int,
                timeout: float = 10.0, transport: object = None) -> bytes:
    """The bytes of one small file of a repo (its card, a sample image), read into memory and never past
    ``max_size`` bytes, anonymously (no token, whatever the machine's login), within ``timeout`` seconds per
    request; redirects are followed (the Hub sends file bytes from its CDN), at most three. For a page that
    shows strangers what a catalogue holds: it names only repo paths (:func:`local_path_problem`), never URLs.
    Raises :class:`HubError` (not found, too large, unreachable)."""
    import httpx
    from huggingface_hub import hf_hub_url

    problem = local_path_problem(filename)
    if problem is not None or filename.startswith("/"):
        raise UnsafePathError(f"refused to fetch {repo_id}/{filename[:120]}: {problem or 'absolute path'}")
    ep = normalize_endpoint(endpoint)
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=ep)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True, max_redirects=3, trust_env=False,
                          transport=transport, headers={"User-Agent": "lorahub"}) as client:  # type: ignore[arg-type]
            with client.stream("GET", url) as r:
                if r.status_code != 200:
                    raise HubError(f"{repo_id}/{filename}: the endpoint answered {r.status_code}")
                size = r.headers.get("content-length")
                if size and size.isdigit() and int(size) > max_size:
                    raise HubError(f"{repo_id}/{filename}: {int(size):,} bytes, more than the {max_size:,} allowed")
                buf = bytearray()
                for chunk in r.iter_bytes():
                    buf += chunk
                    if len(buf) > max_size:
                        raise HubError(f"{repo_id}/{filename}: more than the {max_size:,} bytes allowed")
    except httpx.HTTPError as exc:
        raise HubError(f"{repo_id}/{filename}: cannot read it from {ep}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return bytes(buf)

