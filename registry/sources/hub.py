"""``lorahub index --hub``: index the LoRA repos of a Hub endpoint without downloading weights.

For each repo the listing returns (``--author``, ``--search``, ``--filter``):

1. ``model_info(files_metadata=True)``: the commit ``sha``, the card data and, per file, the size
   and the LFS SHA-256 (which is the file's ``sha256``/AutoV2 fingerprint);
2. for every ``.safetensors`` file, its header through HTTP range reads at that commit
   (``bytes=0-65535``, then the rest of the header when it is longer), parsed with
   :func:`lorahub.adapters.header.parse_header_bytes` and analysed like a local file (format,
   base family, rank, trigger words), without the scalar alphas, which live in the tensor data;
3. files that are not adapters (pipeline weights) are skipped; a repo without adapters is not
   indexed (and its earlier record, if any, is removed).

A repo whose commit is already indexed is skipped (``unchanged``). The fingerprints that need the
tensor data (AutoV3, BLAKE3, CRC32) are not known this way; ``lorahub pull`` or a local
``lorahub index`` adds them. Works against the real Hub and ``lorahub serve`` (tested).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from lorahub.errors import AdapterFileError, LorahubError
from lorahub.schemas.registry import IndexFailure, IndexSummary, hub_source_key

#: First range read: the 8-byte length and, usually, the whole header of a LoRA.
FIRST_READ = 65536
MAX_HEADER = 100_000_000
#: Repos handled at once.
WORKERS = 8


class HubIndexError(LorahubError):
    pass


def _range_get(session: Any, url: str, headers: dict[str, str], start: int, end: int) -> bytes:
    from huggingface_hub.utils import hf_raise_for_status

    resp = session.get(url, headers={**headers, "Range": f"bytes={start}-{end}"}, follow_redirects=True)
    hf_raise_for_status(resp)
    data = resp.content
    if resp.status_code == 200:  # the server ignored the range: cut what we asked for
        data = data[start : end + 1]
    return data


def read_remote_header(endpoint: str, repo_id: str, revision: str, filename: str, size: int, token: str | None) -> Any:
    """The parsed safetensors header of ``filename`` at ``revision``, read with range requests."""
    from huggingface_hub.utils import build_hf_headers, get_session

    from lorahub.adapters.header import parse_header_bytes

    url = f"{endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"
    headers = build_hf_headers(token=token)
    label = f"{repo_id}/{filename}"
    if size < 8:
        raise AdapterFileError(label, f"not a safetensors file: {size} bytes")
    session = get_session()
    first = _range_get(session, url, headers, 0, min(size, FIRST_READ) - 1)
    if len(first) < 8:
        raise AdapterFileError(label, "not a safetensors file: too short for a header")
    (n,) = struct.unpack("<Q", first[:8])
    if n == 0 or n > size - 8:
        raise AdapterFileError(label, f"truncated or not safetensors: header length {n} in a {size}-byte file")
    if n > MAX_HEADER:
        raise AdapterFileError(label, f"header length {n} exceeds the {MAX_HEADER}-byte limit")
    raw = first[8 : 8 + n]
    if len(raw) < n:
        raw += _range_get(session, url, headers, 8 + len(raw), 8 + n - 1)
    if len(raw) != n:
        raise AdapterFileError(label, f"short read: header needs {n} bytes, got {len(raw)}")
    return parse_header_bytes(label, raw, size)


def _report(header: Any) -> Any:
    from lorahub.adapters.formats import analyze
    from lorahub.adapters.inspect import inspect_header

    analysis = analyze(header, read_alpha=False)  # scalar alphas are tensor data: not fetched
    if not analysis.modules:
        return None
    return inspect_header(header, analysis)


def _indexed_revisions(registry: Any, keys: list[str]) -> dict[str, str | None]:
    from sqlalchemy import select

    from lorahub.registry.tables import Adapter, AdapterVersion

    out: dict[str, str | None] = {}
    if not keys:
        return out
    with registry.connect() as conn:
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            rows = conn.execute(
                select(Adapter.source_key, AdapterVersion.revision)
                .join(AdapterVersion, AdapterVersion.adapter_id == Adapter.id, isouter=True)
                .where(Adapter.source_key.in_(part))
            )
            for key, rev in rows:
                out[key] = rev
    return out


def index_hub(
    registry: Any,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    author: str | None = None,
    search: str | None = None,
    filters: Iterable[str] = (),
    limit: int | None = None,
    repo_ids: Iterable[str] = (),
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    workers: int = WORKERS,
) -> IndexSummary:
    """Index adapters of the repos of ``endpoint`` into ``registry`` (a :class:`lorahub.registry.catalogue.Registry`)."""
    from huggingface_hub.utils import HfHubHTTPError

    from lorahub.hub.endpoint import hf_api
    from lorahub.registry.drafts import hub_repo_draft

    started = time.perf_counter()
    api = hf_api(endpoint, token=token)
    ep = api.endpoint.rstrip("/")
    say = progress or (lambda _m: None)
    ids = list(repo_ids)
    try:
        if not ids:
            ids = [
                m.id
                for m in api.list_models(author=author, search=search, filter=list(filters) or None, limit=limit)
            ]
    except HfHubHTTPError as exc:
        raise HubIndexError(f"cannot list models on {ep}: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise HubIndexError(f"cannot reach {ep}: {exc}") from None
    summary = IndexSummary(scanned=len(ids), database=registry.display_url)
    keys = {rid: hub_source_key(ep, rid) for rid in ids}
    known = _indexed_revisions(registry, list(keys.values()))

    def one(rid: str) -> tuple[str, str, Any]:
        """(repo_id, outcome, draft or error) with outcome in unchanged/draft/empty/failed."""
        try:
            info = api.model_info(rid, files_metadata=True)
            if not force and info.sha and known.get(keys[rid]) == info.sha:
                return rid, "unchanged", None
            adapters = []
            for sib in info.siblings or []:
                if not sib.rfilename.lower().endswith(".safetensors") or not sib.size:
                    continue
                header = read_remote_header(ep, rid, info.sha, sib.rfilename, int(sib.size), token)
                report = _report(header)
                if report is None:
                    continue
                hashes = {"sha256": sib.lfs.sha256} if sib.lfs is not None else {}
                adapters.append((sib.rfilename, int(sib.size), report, hashes))
            if not adapters:
                return rid, "empty", None
            card = info.card_data.to_dict() if info.card_data is not None else None
            ns, name = rid.split("/", 1) if "/" in rid else ("", rid)
            draft = hub_repo_draft(
                endpoint=ep,
                repo_id=rid,
                url_prefix="",
                namespace=ns,
                name=name,
                private=bool(info.private),
                owner_id=None,
                downloads=int(info.downloads or 0),
                created_at=info.created_at,
                commit_oid=info.sha,
                commit_title=(info.sha or "")[:12],
                card=card,
                readme=None,
                adapters=adapters,
            )
            draft.owner_id = None
            return rid, "draft", draft
        except (HfHubHTTPError, AdapterFileError, OSError, ValueError) as exc:
            return rid, "failed", " ".join(str(exc).split())[:300]

    drafts = []
    removed_keys = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for rid, outcome, value in pool.map(one, ids):
            if outcome == "unchanged":
                summary.unchanged += 1
            elif outcome == "draft":
                drafts.append(value)
                if keys[rid] in known:
                    summary.updated += 1
                else:
                    summary.added += 1
                say(f"{rid}: {len(value.versions[0].files)} adapter file(s)")
            elif outcome == "empty":
                if keys[rid] in known:
                    removed_keys.append(keys[rid])
            else:
                summary.failed.append(IndexFailure(path=rid, error=value))
                say(f"{rid}: {value}")
    if drafts:
        registry.upsert(drafts)
    if removed_keys:
        from sqlalchemy import select

        from lorahub.registry.tables import Adapter

        with registry.connect() as conn:
            ids_to_remove = [r[0] for r in conn.execute(select(Adapter.id).where(Adapter.source_key.in_(removed_keys)))]
        summary.removed = registry.remove(ids_to_remove)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


__all__ = ["HubIndexError", "index_hub", "read_remote_header"]
