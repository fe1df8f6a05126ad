"""Where adapter files are published: ask Hub-compatible and Civitai-compatible servers by SHA-256.

* **Hub-compatible** servers (``lorahub serve``): ``GET {endpoint}/api/lorahub/by-hash/{sha256}``, one
  request per file (a ``HashLookup``). A server without that API (the Hugging Face Hub) answers 404:
  reported as an error of that endpoint, not as "not published".
* **Civitai-compatible** servers (civitai.com, ``lorahub serve``): ``POST {endpoint}/api/v1/model-versions/by-hash``
  with at most 100 SHA-256 per request (Civitai's limit); the versions that come back are matched to
  the files by the SHA-256 of their files.

Answers are read within bounds (:data:`MAX_ANSWER` bytes, JSON checked field by field: a stranger's
server answers), and cached by endpoint and hash (:class:`ResolveCache`, under ``$LORAHUB_HOME/cache``,
with a time to live; misses are cached too, failures are not).

The caller passes the ``httpx.Client`` (or a transport), so that tests and faces choose how requests
travel; nothing here records anything: the CLI (``lorahub resolve --apply``) does.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lorahub.adapters.families import family_from_label
from lorahub.errors import UsageError
from lorahub.schemas.hub import Publication, ResolveResult

#: Civitai's batch limit (POST /api/v1/model-versions/by-hash).
CIVITAI_BATCH = 100
#: Largest answer read from a server.
MAX_ANSWER = 16 << 20
#: Default time an answer is reused.
DEFAULT_TTL_S = 24 * 3600
_FIELD = 2000  # longest string kept from an answer
_LIST = 200  # longest list kept from an answer


def normalize_endpoint(url: str, *, civitai: bool = False) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash (and without ``/api/v1`` for Civitai)."""
    url = (url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise UsageError(f"not an http(s) endpoint URL: {url[:200]!r}", hint="e.g. https://civitai.com or http://127.0.0.1:8000")
    if civitai and url.endswith("/api/v1"):
        url = url[: -len("/api/v1")]
    return url


class ResolveCache:
    """Answers by (kind, endpoint, sha256), one small JSON file each under ``directory``; older than
    ``ttl_s`` is a miss. Writes are atomic (a crash leaves the old answer or none)."""

    def __init__(self, directory: str | os.PathLike[str], ttl_s: float = DEFAULT_TTL_S) -> None:
        self.directory = Path(directory)
        self.ttl_s = ttl_s

    def _path(self, kind: str, endpoint: str, sha256: str) -> Path:
        key = hashlib.sha256(f"{kind}\n{endpoint}\n{sha256}".encode()).hexdigest()
        return self.directory / key[:2] / f"{key}.json"

    def get(self, kind: str, endpoint: str, sha256: str) -> list[Publication] | None:
        path = self._path(kind, endpoint, sha256)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if time.time() - float(data["at"]) > self.ttl_s or data.get("endpoint") != endpoint or data.get("sha256") != sha256:
                return None
            return [Publication.model_validate(p) for p in data["found"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, kind: str, endpoint: str, sha256: str, found: list[Publication]) -> None:
        from lorahub._atomic import atomic_write_text

        path = self._path(kind, endpoint, sha256)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({"at": time.time(), "kind": kind, "endpoint": endpoint, "sha256": sha256,
                                                "found": [p.model_dump(mode="json") for p in found]}))
        except OSError:
            pass  # a cache that cannot be written is only slower


class _Failed(Exception):
    """One endpoint could not answer (one line)."""


class _NoByHash(_Failed):
    """A Hub that has no lorahub by-hash API (the Hugging Face Hub)."""


def _read_json(client: Any, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    """(status, parsed JSON or None) of one request, reading at most :data:`MAX_ANSWER` bytes."""
    import httpx

    try:
        with client.stream(method, url, **kw) as r:
            buf = bytearray()
            for chunk in r.iter_bytes():
                buf += chunk
                if len(buf) > MAX_ANSWER:
                    raise _Failed(f"{url}: answer larger than {MAX_ANSWER >> 20} MiB")
            status = r.status_code
    except httpx.HTTPError as exc:
        raise _Failed(f"cannot reach {url.split('/api/', 1)[0]}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    try:
        return status, json.loads(bytes(buf)) if buf.strip() else None
    except (ValueError, RecursionError):
        return status, None


def _s(value: Any) -> str | None:
    return value[:_FIELD] if isinstance(value, str) and value else None


def _i(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63 else None


def _words(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [v[:_FIELD] for v in value[:_LIST] if isinstance(v, str) and v.strip()]


def _family(value: Any) -> str:
    from lorahub.adapters.families import FAMILIES

    return value if value in FAMILIES else "unknown"


# -- Hub-compatible servers (lorahub's by-hash API) -------------------------------------------------


def hub_lookup(client: Any, endpoint: str, sha256: str) -> list[Publication]:
    status, data = _read_json(client, "GET", f"{endpoint}/api/lorahub/by-hash/{sha256}")
    if status == 404 and not (isinstance(data, dict) and "matches" in data):
        raise _NoByHash(f"{endpoint} has no lorahub by-hash API (404): not a lorahub server")
    if status != 200 or not isinstance(data, dict) or not isinstance(data.get("matches"), list):
        raise _Failed(f"{endpoint}: by-hash lookup failed ({status})")
    out = []
    for m in data["matches"][:_LIST]:
        if not isinstance(m, dict) or m.get("sha256") != sha256:
            continue  # a prefix or another fingerprint matched: not this file
        # a Hub repo's file: source "namespace/name@<commit, 12 hex>:<path in the repo>"
        source = _s(m.get("source")) or ""
        hub_file = m.get("source_kind") == "hub" and "@" in source
        repo_id = source.split("@", 1)[0] if hub_file else None
        revision = source.split("@", 1)[1].split(":", 1)[0] if hub_file else None
        out.append(Publication(
            kind="hub", endpoint=endpoint, name=_s(m.get("title")) or _s(m.get("name")) or repo_id or "?",
            repo_id=repo_id, version=_s(m.get("version")), revision=revision, file_name=_s(m.get("file_name")),
            trigger_words=_words(m.get("trigger_words")), base_model=_s(m.get("base_model")),
            base_family=_family(m.get("base_family")), license=_s(m.get("license")), author=_s(m.get("author")),
            tags=_words(m.get("tags")), url=_s(m.get("url")),
        ))
    return out


# -- Civitai-compatible servers ---------------------------------------------------------------------


def _civitai_publication(endpoint: str, v: dict[str, Any], f: dict[str, Any]) -> Publication:
    model = v.get("model") if isinstance(v.get("model"), dict) else {}
    model_id, version_id = _i(v.get("modelId")), _i(v.get("id"))
    label = _s(v.get("baseModel"))
    page = f"{endpoint}/models/{model_id}" + (f"?modelVersionId={version_id}" if version_id else "") if model_id else None
    return Publication(
        kind="civitai", endpoint=endpoint, name=_s(model.get("name")) or "?", model_id=model_id, version_id=version_id,
        version=_s(v.get("name")), file_name=_s(f.get("name")), trigger_words=_words(v.get("trainedWords")),
        base_model=label, base_family=family_from_label(label),  # type: ignore[arg-type]
        license=_s(v.get("modelLicense")), url=page, download_url=_s(f.get("downloadUrl")) or _s(v.get("downloadUrl")),
    )


def civitai_lookup(client: Any, endpoint: str, hashes: list[str]) -> dict[str, list[Publication]]:
    """Publications by SHA-256 (lower case) for ``hashes`` (at most :data:`CIVITAI_BATCH`)."""
    status, data = _read_json(client, "POST", f"{endpoint}/api/v1/model-versions/by-hash", json=[h.upper() for h in hashes])
    if status != 200 or not isinstance(data, list):
        detail = data.get("error") if isinstance(data, dict) and isinstance(data.get("error"), str) else ""
        raise _Failed(f"{endpoint}: Civitai by-hash lookup failed ({status}{': ' + detail[:200] if detail else ''})")
    wanted = set(hashes)
    out: dict[str, list[Publication]] = {h: [] for h in hashes}
    for v in data[: CIVITAI_BATCH * 4]:
        if not isinstance(v, dict) or not isinstance(v.get("files"), list):
            continue
        for f in v["files"][:_LIST]:
            if not isinstance(f, dict) or not isinstance(f.get("hashes"), dict):
                continue
            h = f["hashes"].get("SHA256")
            if isinstance(h, str) and h.lower() in wanted:
                pub = _civitai_publication(endpoint, v, f)
                if all(p.version_id != pub.version_id for p in out[h.lower()]):
                    out[h.lower()].append(pub)
    return out


# -- the files ---------------------------------------------------------------------------------------


def adapter_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The ``.safetensors`` files named, or found under folders named (sorted, each once)."""
    out: dict[str, Path] = {}
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for f in sorted(path.rglob("*.safetensors")):
                if f.is_file():
                    out.setdefault(str(f.resolve()), f)
        elif path.is_file():
            out.setdefault(str(path.resolve()), path)
        else:
            raise UsageError(f"{p}: no such file or folder")
    return list(out.values())


def resolve(
    files: list[tuple[str, str, int]],
    *,
    hubs: Iterable[str] = (),
    civitai: Iterable[str] = (),
    client: Any = None,
    transport: Any = None,
    cache: ResolveCache | None = None,
    progress: Callable[[str], None] | None = None,
    index: Callable[[str, str], list[Publication] | None] | None = None,
) -> list[ResolveResult]:
    """Where each of ``files`` ((path, sha256, size)) is published on the servers named.

    ``client``: an ``httpx.Client`` to send the requests with (else one is made, on ``transport`` if
    given). Endpoint failures are reported in each result's ``errors``; nothing is raised for them.
    ``index(endpoint, sha256)``: what a face knows of a Hub's files (publications ``via="index"``; None:
    it knows nothing of that Hub), asked for a Hub without lorahub's by-hash API instead of reporting it
    as an error (not cached here)."""
    import httpx

    hub_list = list(dict.fromkeys(normalize_endpoint(h) for h in hubs))
    civ_list = list(dict.fromkeys(normalize_endpoint(c, civitai=True) for c in civitai))
    if not hub_list and not civ_list:
        raise UsageError("name at least one server to ask: --endpoint URL (a lorahub hub) or --civitai URL")
    own = client is None
    if own:
        client = httpx.Client(transport=transport, timeout=30.0, follow_redirects=False,
                              headers={"User-Agent": "lorahub-resolve"})
    results = [ResolveResult(path=p, sha256=h.lower(), size=n, cached=True) for p, h, n in files]
    try:
        hashes = list(dict.fromkeys(r.sha256 for r in results))
        found: dict[str, list[Publication]] = {h: [] for h in hashes}
        errors: dict[str, list[str]] = {h: [] for h in hashes}
        fresh: set[str] = set()
        for kind, endpoints in (("hub", hub_list), ("civitai", civ_list)):
            for endpoint in endpoints:
                todo = []
                for h in hashes:
                    hit = cache.get(kind, endpoint, h) if cache is not None else None
                    if hit is None:
                        todo.append(h)
                    else:
                        found[h] += hit
                if progress and todo:
                    progress(f"asking {endpoint} about {len(todo)} file(s)")
                try:
                    if kind == "hub":
                        try:
                            answers = {h: hub_lookup(client, endpoint, h) for h in todo}
                        except _NoByHash as exc:
                            known = {h: index(endpoint, h) for h in todo} if index is not None else {}
                            if not known or any(v is None for v in known.values()):
                                raise _Failed(f"{exc}, and the local registry has no index of its repos "
                                              f"(lorahub index --hub --endpoint {endpoint})") from None
                            for h, pubs in known.items():
                                found[h] += [p.model_copy(update={"via": "index"}) for p in pubs or []]
                            continue
                    else:
                        answers = {}
                        for i in range(0, len(todo), CIVITAI_BATCH):
                            answers.update(civitai_lookup(client, endpoint, todo[i : i + CIVITAI_BATCH]))
                except _Failed as exc:
                    for h in todo:
                        errors[h].append(str(exc))
                    continue
                for h, pubs in answers.items():
                    found[h] += pubs
                    fresh.add(h)
                    if cache is not None:
                        cache.put(kind, endpoint, h, pubs)
        for r in results:
            r.found = list(found[r.sha256])
            r.errors = list(errors[r.sha256])
            r.cached = r.sha256 not in fresh and not r.errors
    finally:
        if own:
            client.close()
    return results


__all__ = ["CIVITAI_BATCH", "ResolveCache", "adapter_files", "civitai_lookup", "hub_lookup", "normalize_endpoint", "resolve"]
