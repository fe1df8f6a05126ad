"""The Civitai-compatible read API: the server's model repos as Civitai models, versions and files.

What maps to what:

* a **model** is a model repo of this server whose main head holds adapters (its catalogue entry,
  :mod:`.catalogue_sync`); its ``id`` is derived from the repo's primary key, which is never reused
  (``hub_sequences``);
* a **model version** is a run of commits of the main branch (first parents, from the head) that left
  the adapter files (``*.safetensors``: path and SHA-256) as they are: its ``id`` is derived from the
  primary key of the run's oldest commit, looking back at most :data:`VERSION_WALK` commits from the
  run's newest. A commit that changes only the card keeps the version; one that changes an adapter
  makes a new one, and the old one stays listed and answers (its files from its commit's tree, whose
  blobs stay stored while a commit uses them), up to :data:`MAX_VERSIONS` versions within
  :data:`HISTORY_WALK` commits of the head. Commit keys are never reused either
  (:func:`.trees.next_commit_pk`);
* a **file** is one adapter of a version (its id from the version's and the file's place). The current
  version's files are the catalogue's (every hash); a superseded version's are its commit's tree (SHA256
  and AutoV2 only, the hashes a tree row holds).

Ids go out through a keyed permutation (a Feistel network over 30 bits, 52 for files, keyed by a server
secret in ``hub_secrets``): stable, never two alike, never reused, and they do not tell how many repos
or commits (private ones included) the server holds, which a counter would.

Every answer goes through :func:`.access.allowed` (``read``) for each repo it shows; lists prefilter in
SQL with :func:`.access.private_view` (the catalogue's searches) and are checked again row by row.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from lorahub.adapters.families import civitai_base_model, family_from_label
from lorahub.schemas.registry import HASH_FIELDS

from .. import text as T
from .access import allowed, search_viewer
from .auth import Identity, load_secret
from .errors import BadRequest, HubApiError
from .names import repo_id_of
from .tables import HubCommit, HubFile, HubRepo

#: Commits looked back through to find where the head's adapter files were last changed.
VERSION_WALK = 32
#: Versions listed per model (newest first), and the first-parent commits looked through for them.
MAX_VERSIONS = 50
HISTORY_WALK = 200
#: Commits of a repo read (newest keys first) to follow the main branch's first parents.
_HISTORY_ROWS = 1000
#: Repos looked at per SHA-256 asked for in superseded versions (by-hash).
_OLD_HITS = 20
#: Files of one version (index packed into the file id).
MAX_FILES = 4096
MAX_BATCH = 100
MAX_LIMIT = 100
#: How far a listing pages (cursor offsets); past it, narrow the query.
MAX_OFFSET = 10_000
#: Catalogue rows a listing reads per underlying page, and at most per request.
_PAGE = 100
_SCAN = 500

#: Civitai's hash names -> the catalogue's columns. A query's length says which it can be.
HASH_NAMES = {"autov1": "AutoV1", "autov2": "AutoV2", "sha256": "SHA256", "crc32": "CRC32", "blake3": "BLAKE3",
              "autov3": "AutoV3"}
_BY_LENGTH = {8: ("autov1", "crc32"), 10: ("autov2",), 12: ("autov3",), 64: ("sha256", "blake3")}
#: The AutoV1 of every file under 1 MiB (the SHA-256 of its empty window): Civitai stores none for them, and
#: as a query it would name every small file.
EMPTY_AUTOV1 = "e3b0c442"
_HEX = re.compile(r"^[0-9a-fA-F]+$")

#: ``sort`` values Civitai documents; without ratings and reactions here, the popular ones sort by downloads.
SORTS = {"highest rated": "downloads", "most downloaded": "downloads", "most liked": "downloads",
         "most discussed": "downloads", "most collected": "downloads", "most images": "downloads",
         "newest": "newest", "oldest": "newest", "relevancy": "relevance"}
#: Civitai model types lorahub's adapters are (by format).
TYPES = {"lora": "LORA", "locon": "LoCon", "dora": "DoRA", "lycoris": "LoCon"}
#: Licences (Hub ids) that allow selling outputs and the model's use (Civitai's ``allowCommercialUse``).
COMMERCIAL = frozenset({"mit", "apache-2.0", "bsd-3-clause", "bsd-2-clause", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0",
                        "openrail", "openrail++", "creativeml-openrail-m", "unlicense", "bigscience-openrail-m"})


class NotFound(HubApiError):
    """Civitai's miss: ``404 {"error": "..."}``."""

    status = 404


# -- ids ---------------------------------------------------------------------------------------------


class IdCodec:
    """A keyed permutation of ``[0, 2**bits)``, per kind (``model``, ``version``, ``file``): ids out are
    ``permute(pk) + 1`` (never 0), ids in are checked and turned back."""

    BITS = {"model": 30, "version": 30, "file": 52}

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _round(self, kind: str, i: int, value: int, mask: int) -> int:
        mac = hmac.new(self._key, f"{kind}:{i}:{value}".encode(), hashlib.sha256).digest()
        return int.from_bytes(mac[:8], "big") & mask

    def encode(self, kind: str, pk: int) -> int:
        bits = self.BITS[kind]
        if not 0 <= pk < (1 << bits):
            raise ValueError(f"{kind} key {pk} is out of range")
        half = bits // 2
        mask = (1 << half) - 1
        left, right = pk >> half, pk & mask
        for i in range(4):
            left, right = right, left ^ self._round(kind, i, right, mask)
        return ((left << half) | right) + 1

    def decode(self, kind: str, public: int) -> int | None:
        bits = self.BITS[kind]
        value = public - 1
        if not 0 <= value < (1 << bits):
            return None
        half = bits // 2
        mask = (1 << half) - 1
        left, right = value >> half, value & mask
        for i in reversed(range(4)):
            left, right = right ^ self._round(kind, i, left, mask), left
        return (left << half) | right


def parse_id(raw: str, what: str) -> int:
    """An id: 1 to 16 digits, else 400."""
    if not raw.isdigit() or not raw.isascii() or len(raw) > 16:
        raise BadRequest(f"{what} must be a positive integer, not {raw[:40]!r}")
    return int(raw)


def parse_hash(raw: str) -> str:
    """A Civitai file hash (AutoV1/CRC32 8 hex, AutoV2 10, AutoV3 12, SHA256/BLAKE3 64), lower case, else 400."""
    if not isinstance(raw, str):
        raise BadRequest("hashes are strings")
    value = raw.strip()
    if len(value) not in _BY_LENGTH or not _HEX.match(value):
        raise BadRequest(
            f"not a file hash: {value[:70]!r} (AutoV1 or CRC32: 8 hex digits, AutoV2: 10, AutoV3: 12, SHA256 or BLAKE3: 64)"
        )
    return value.lower()


# -- what is read --------------------------------------------------------------------------------------


@dataclass
class Version:
    """One version: the commit its id comes from, its newest commit, its adapter files (path, sha256, size)."""

    commit: HubCommit
    newest: HubCommit
    files: list[tuple[str, str, int]]


@dataclass
class OldFile:
    """A superseded version's file, from its commit's tree: what :meth:`CivitaiApi.file_json` reads."""

    filename: str
    size: int
    sha256: str
    indexed_at: datetime | None
    dtype: str | None = None

    def __getattr__(self, name: str) -> Any:
        if name == "autov2":
            return self.sha256[:10]
        if name in HASH_FIELDS:
            return None
        raise AttributeError(name)


@dataclass
class Entry:
    """One model: the repo, its catalogue adapter (row), its files (rows, primary first), the version's commit,
    the head, and every version listed (newest first; the current one's ``commit`` is ``version``)."""

    repo: HubRepo
    adapter: Any
    files: list[Any]
    words: list[str]
    version: HubCommit
    head: HubCommit
    versions: list[Version]

    @property
    def version_pk(self) -> int:
        return int(self.version.id)

    def find(self, pk: int) -> Version | None:
        return next((v for v in self.versions if int(v.commit.id) == pk), None)


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def model_type(fmt: str | None) -> str:
    f = (fmt or "").lower()
    if "dora" in f:
        return TYPES["dora"]
    if f.startswith("lycoris") or "locon" in f:
        return TYPES["locon"]
    return TYPES["lora"]


def _fp(dtype: str | None) -> str | None:
    return {"float16": "fp16", "f16": "fp16", "fp16": "fp16", "bfloat16": "bf16", "bf16": "bf16",
            "float32": "fp32", "f32": "fp32", "fp32": "fp32", "float8_e4m3fn": "fp8", "f8_e4m3": "fp8"}.get(
        (dtype or "").lower())


class CivitaiApi:
    """The reads behind ``/api/v1/...`` and ``/api/download/models/...`` (opens its own sessions)."""

    def __init__(self, sessions: Any, registry: Any, source_key: Any) -> None:
        self.sessions = sessions
        self.registry = registry
        #: repo -> its catalogue adapter's ``source_key`` (``CatalogueSync.source_key``)
        self.source_key = source_key
        self._codec: IdCodec | None = None

    @property
    def ids(self) -> IdCodec:
        if self._codec is None:
            self._codec = IdCodec(load_secret(self.sessions, "civitai-id-key"))
        return self._codec

    # -- reading one model ---------------------------------------------------------------------------

    def _entry(self, s: Any, repo: HubRepo, adapter: Any = None) -> Entry | None:
        from lorahub.registry.tables import Adapter

        if adapter is None:
            adapter = s.execute(sa.select(Adapter).where(Adapter.source_key == self.source_key(repo))).scalar_one_or_none()
            if adapter is None:
                return None
        return self._entries(s, [(repo, adapter)]).get(adapter.id)

    def _entries(self, s: Any, pairs: list[tuple[HubRepo, Any]]) -> dict[int, Entry]:
        """Entries of (repo, catalogue adapter) pairs, by adapter id, in a few queries for all of them."""
        from lorahub.registry.tables import AdapterFile, AdapterVersion, TriggerWord

        pairs = [(r, a) for r, a in pairs if r.repo_type == "model" and r.sha]
        if not pairs:
            return {}
        ids = [a.id for _, a in pairs]
        versions: dict[int, Any] = {}
        for v in s.execute(sa.select(AdapterVersion).where(AdapterVersion.adapter_id.in_(ids))
                           .order_by(AdapterVersion.adapter_id, AdapterVersion.position)).scalars():
            versions.setdefault(v.adapter_id, v)
        files: dict[int, list[Any]] = {}
        vids = [v.id for v in versions.values()]
        for f in s.execute(sa.select(AdapterFile).where(AdapterFile.version_id.in_(vids))
                           .order_by(AdapterFile.is_primary.desc(), AdapterFile.repo_path)).scalars():
            files.setdefault(f.adapter_id, []).append(f)
        words: dict[int, list[str]] = {}
        for aid, w in s.execute(sa.select(TriggerWord.adapter_id, TriggerWord.word)
                                .where(TriggerWord.adapter_id.in_(ids), TriggerWord.version_id.is_(None))
                                .order_by(TriggerWord.adapter_id, TriggerWord.position)):
            words.setdefault(aid, []).append(w)
        wanted = {(r.id, versions[a.id].revision) for r, a in pairs if a.id in versions and versions[a.id].revision}
        heads = self._commits(s, wanted)
        out: dict[int, Entry] = {}
        for repo, a in pairs:
            v = versions.get(a.id)
            key = (repo.id, v.revision) if v is not None else None
            if key not in heads or not files.get(a.id):
                continue
            head = heads[key]
            history = self._history(s, head)
            if not history or int(history[0].newest.id) != int(head.id):
                # the head holds no adapter file by the tree (cannot be with a catalogue entry): itself alone
                history = [Version(head, head, [])]
            out[a.id] = Entry(repo, a, files[a.id], words.get(a.id, []), history[0].commit, head, history)
        return out

    @staticmethod
    def _history(s: Any, head: HubCommit) -> list[Version]:
        """The versions of the main branch ending at ``head``, newest first: runs of first-parent commits with
        the same ``.safetensors`` files (path, SHA-256), each named by its oldest commit, at most
        :data:`VERSION_WALK` back from its newest (for the head's run: the id it has always had); at most
        :data:`MAX_VERSIONS`, within :data:`HISTORY_WALK` commits. Runs without adapter files are no version;
        a run cut off by the window (its oldest commit unknown) is left out."""
        from sqlalchemy.orm import load_only

        cols = (HubCommit.id, HubCommit.repo_id, HubCommit.oid, HubCommit.parent_oid, HubCommit.title, HubCommit.created_at)
        rows = s.execute(sa.select(HubCommit).options(load_only(*cols)).where(HubCommit.repo_id == head.repo_id)
                         .order_by(HubCommit.id.desc()).limit(_HISTORY_ROWS)).scalars()
        by_oid = {c.oid: c for c in rows}
        chain, seen, c = [head], {head.oid}, head
        while len(chain) < HISTORY_WALK and c.parent_oid and c.parent_oid in by_oid and c.parent_oid not in seen:
            c = by_oid[c.parent_oid]
            seen.add(c.oid)
            chain.append(c)
        files: dict[int, list[tuple[str, str, int]]] = {int(c.id): [] for c in chain}
        for cid, p, h, size in s.execute(
                sa.select(HubFile.commit_id, HubFile.path, HubFile.sha256, HubFile.size)
                .where(HubFile.commit_id.in_(list(files)), sa.func.lower(HubFile.path).like("%.safetensors"))):
            if p.lower().endswith(".safetensors"):
                files[int(cid)].append((p, h, int(size)))
        keys = [frozenset((p, h) for p, h, _ in files[int(c.id)]) for c in chain]
        out: list[Version] = []
        i = 0
        while i < len(chain) and len(out) < MAX_VERSIONS:
            j = i
            while j + 1 < len(chain) and keys[j + 1] == keys[i]:
                j += 1
            ended = j + 1 < len(chain) or not chain[j].parent_oid
            if i > 0 and not ended and j - i < VERSION_WALK:
                break  # cut off by the window: where the run began is not known
            if keys[i]:
                out.append(Version(chain[min(j, i + VERSION_WALK)], chain[i], sorted(files[int(chain[i].id)])))
            i = j + 1
        return out

    @staticmethod
    def _commits(s: Any, keys: set[tuple[int, str]]) -> dict[tuple[int, str], HubCommit]:
        if not keys:
            return {}
        rows = s.execute(sa.select(HubCommit).where(HubCommit.repo_id.in_({r for r, _ in keys}),
                                                    HubCommit.oid.in_({o for _, o in keys}))).scalars()
        return {(c.repo_id, c.oid): c for c in rows if (c.repo_id, c.oid) in keys}

    # -- JSON ------------------------------------------------------------------------------------------

    def _file_id(self, version_pk: int, index: int) -> int:
        return self.ids.encode("file", version_pk * MAX_FILES + index)

    def file_json(self, e: Entry, base: str, index: int, f: Any, version_pk: int | None = None) -> dict[str, Any]:
        pk = e.version_pk if version_pk is None else version_pk
        version_id = self.ids.encode("version", pk)
        file_id = self._file_id(pk, index)
        hashes = {HASH_NAMES[c]: getattr(f, c).upper() for c in HASH_FIELDS
                  if c in HASH_NAMES and getattr(f, c) and not (c == "autov1" and getattr(f, c) == EMPTY_AUTOV1)}
        url = f"{base}/api/download/models/{version_id}"
        if index:
            url += f"?fileId={file_id}"
        return {
            "id": file_id,
            "sizeKB": (f.size or 0) / 1024,
            "name": f.filename,
            "type": "Model",
            "pickleScanResult": "Success",
            "pickleScanMessage": "No Pickle imports",
            "virusScanResult": "Success",
            "virusScanMessage": None,
            "scannedAt": _iso(f.indexed_at),
            "metadata": {"format": "SafeTensor", "size": "full", "fp": _fp(f.dtype)},
            "hashes": hashes,
            "downloadUrl": url,
            "primary": index == 0,
        }

    def base_model(self, e: Entry) -> str:
        return civitai_base_model(e.adapter.base_family, e.adapter.base_model)

    def version_files(self, e: Entry, v: Version | None) -> list[Any]:
        """The files of version ``v`` (None: the current one), primary first, at most :data:`MAX_FILES`."""
        if v is None or int(v.commit.id) == e.version_pk:
            return e.files[:MAX_FILES]
        return [OldFile(p.rsplit("/", 1)[-1], size, h, v.newest.created_at) for p, h, size in v.files[:MAX_FILES]]

    def version_json(self, e: Entry, base: str, *, with_model: bool, v: Version | None = None) -> dict[str, Any]:
        a = e.adapter
        commit = e.version if v is None else v.commit
        newest = e.head if v is None or int(v.commit.id) == e.version_pk else v.newest
        version_id = self.ids.encode("version", int(commit.id))
        model_id = self.ids.encode("model", int(e.repo.id))
        mtype = model_type(a.format)
        label = self.base_model(e)
        out: dict[str, Any] = {
            "id": version_id,
            "modelId": model_id,
            "name": (commit.title or commit.oid[:12])[:200],
            "createdAt": _iso(commit.created_at),
            "updatedAt": _iso(newest.created_at),
            "publishedAt": _iso(commit.created_at),
            "status": "Published",
            "availability": "Private" if e.repo.private else "Public",
            "trainedWords": list(e.words),
            "baseModel": label,
            "baseModelType": "Standard",
            "earlyAccessTimeFrame": 0,
            "description": None,
            "nsfwLevel": 1 if not a.nsfw else 4,
            "uploadType": "Created",
            "stats": {"downloadCount": int(e.repo.downloads or 0), "ratingCount": 0, "rating": 0,
                      "thumbsUpCount": 0, "thumbsDownCount": 0},
            "files": [self.file_json(e, base, i, f, int(commit.id)) for i, f in enumerate(self.version_files(e, v))],
            "images": [],
            "downloadUrl": f"{base}/api/download/models/{version_id}",
        }
        if with_model:
            ecosystem = {"sd1": "sd1", "sd2": "sd2", "sdxl": "sdxl", "sd3": "sd3", "flux": "flux1"}.get(
                family_from_label(label), "other")
            out["air"] = f"urn:air:{ecosystem}:lora:civitai:{model_id}@{version_id}"
            out["model"] = {"name": a.title or a.name, "type": mtype, "nsfw": bool(a.nsfw), "poi": False, "minor": False}
            # lorahub's own (Civitai has no licence id): what `lorahub resolve` reports
            out["modelLicense"] = a.license
        return out

    def model_json(self, e: Entry, base: str) -> dict[str, Any]:
        a = e.adapter
        lic = (a.license or "").lower()
        return {
            "id": self.ids.encode("model", int(e.repo.id)),
            "name": a.title or a.name,
            "description": a.description or "",
            "type": model_type(a.format),
            "poi": False,
            "nsfw": bool(a.nsfw),
            "nsfwLevel": 1 if not a.nsfw else 4,
            "availability": "Private" if e.repo.private else "Public",
            "allowNoCredit": True,
            "allowCommercialUse": "Sell" if lic in COMMERCIAL else "None",
            "allowDerivatives": True,
            "allowDifferentLicense": True,
            "license": a.license,
            "repoId": repo_id_of(e.repo),
            "url": a.url,
            "stats": {"downloadCount": int(e.repo.downloads or 0), "favoriteCount": 0, "thumbsUpCount": 0,
                      "thumbsDownCount": 0, "commentCount": 0, "ratingCount": 0, "rating": 0, "tippedAmountCount": 0},
            "creator": {"username": e.repo.namespace, "image": None},
            "tags": T.lines(a.tags_text),
            "modelVersions": [self.version_json(e, base, with_model=False, v=v) for v in e.versions],
        }

    # -- the routes' reads -----------------------------------------------------------------------------

    def _visible(self, ident: Identity | None, repo: HubRepo | None) -> bool:
        return repo is not None and allowed(ident, "read", repo)

    def model(self, ident: Identity | None, public_id: int, base: str) -> dict[str, Any]:
        pk = self.ids.decode("model", public_id)
        with self.sessions.read() as s:
            repo = s.get(HubRepo, pk) if pk is not None else None
            e = self._entry(s, repo) if self._visible(ident, repo) else None
            if e is None:
                raise NotFound(f"No model with id {public_id}")
            return self.model_json(e, base)

    def _version_entry(self, s: Any, ident: Identity | None, public_id: int) -> tuple[Entry, Version]:
        pk = self.ids.decode("version", public_id)
        commit = s.get(HubCommit, pk) if pk is not None else None
        repo = s.get(HubRepo, commit.repo_id) if commit is not None else None
        e = self._entry(s, repo) if self._visible(ident, repo) else None
        v = e.find(pk) if e is not None and pk is not None else None
        if e is None or v is None:
            raise NotFound(f"No model version with id {public_id}")
        return e, v

    def version(self, ident: Identity | None, public_id: int, base: str) -> dict[str, Any]:
        with self.sessions.read() as s:
            e, v = self._version_entry(s, ident, public_id)
            return self.version_json(e, base, with_model=True, v=v)

    def download(self, ident: Identity | None, public_id: int, file_id: int | None) -> tuple[str, int, str, int]:
        """(sha256, size, file name, repo key) of the version's primary file, or of ``file_id``."""
        with self.sessions.read() as s:
            e, v = self._version_entry(s, ident, public_id)
            pk = int(v.commit.id)
            for i, f in enumerate(self.version_files(e, v)):
                if (file_id is None and i == 0) or (file_id is not None and self._file_id(pk, i) == file_id):
                    if not f.sha256:
                        break
                    return f.sha256, int(f.size or 0), f.filename, int(e.repo.id)
            raise NotFound(f"No file {file_id} in model version {public_id}" if file_id else f"No file in model version {public_id}")

    def _entries_for_adapters(self, s: Any, ident: Identity | None, adapter_ids: list[int]) -> dict[int, Entry]:
        """Entries of catalogue adapters that are this server's visible model repos, by adapter id."""
        from lorahub.registry.tables import Adapter

        if not adapter_ids:
            return {}
        adapters = {a.id: a for a in s.execute(sa.select(Adapter).where(Adapter.id.in_(adapter_ids))).scalars()}
        keys = {f"model/{a.repo_id}".lower(): a for a in adapters.values() if a.source_kind == "hub" and a.repo_id}
        repos = s.execute(sa.select(HubRepo).where(HubRepo.key.in_(list(keys)))).scalars() if keys else []
        pairs = [(repo, keys[repo.key]) for repo in repos
                 if keys[repo.key].source_key == self.source_key(repo) and self._visible(ident, repo)]
        return self._entries(s, pairs)

    def by_hashes(self, ident: Identity | None, hashes: list[str], base: str) -> list[dict[str, Any]]:
        """The versions holding a file with any of ``hashes`` (checked by :func:`parse_hash`), each once, in
        the order of the hashes; the columns a hash's length allows are compared exactly (as Civitai does).
        A SHA-256 no current version holds is looked up in the trees of superseded versions (the newest
        listed version of each visible model holding it)."""
        viewer = search_viewer(ident)
        found: dict[str, list[int]] = {}
        order: list[int] = []
        for h in hashes:
            found[h] = []
            for r in self.registry.by_hash(h, viewer=viewer):
                cols = set(_BY_LENGTH[len(h)]) - ({"autov1"} if h == EMPTY_AUTOV1 else set())
                if (set(r.matched_hashes) & cols) and r.source_kind == "hub" and r.id not in found[h]:
                    found[h].append(r.id)
                    if r.id not in order:
                        order.append(r.id)
        with self.sessions.read() as s:
            entries = self._entries_for_adapters(s, ident, order)
            out, seen = [], set()
            for h in hashes:
                hits = [(e, None) for e in (entries.get(aid) for aid in found[h]) if e is not None]
                if not hits and len(h) == 64:
                    hits = self._old_hits(s, ident, h)
                for e, v in hits:
                    pk = e.version_pk if v is None else int(v.commit.id)
                    if pk not in seen:
                        seen.add(pk)
                        out.append(self.version_json(e, base, with_model=True, v=v))
            return out

    def _old_hits(self, s: Any, ident: Identity | None, sha256: str) -> list[tuple[Entry, Version]]:
        """(model, newest listed version holding a file with this SHA-256) of the visible models whose
        commits' trees hold it (the :data:`_OLD_HITS` that committed it last)."""
        newest = sa.func.max(HubCommit.id)
        repo_ids = list(s.execute(
            sa.select(HubCommit.repo_id).join(HubFile, HubFile.commit_id == HubCommit.id)
            .where(HubFile.sha256 == sha256).group_by(HubCommit.repo_id).order_by(newest.desc()).limit(_OLD_HITS)).scalars())
        out = []
        for rid in repo_ids:
            repo = s.get(HubRepo, rid)
            e = self._entry(s, repo) if self._visible(ident, repo) else None
            if e is None:
                continue
            v = next((v for v in e.versions if any(h == sha256 for _, h, _ in v.files)), None)
            if v is not None:
                out.append((e, v))
        return out

    def search(self, ident: Identity | None, q: ListQuery, base: str) -> tuple[list[dict[str, Any]], int | None]:
        """One page of models and the offset of the next (None at the end)."""
        from lorahub.schemas.registry import SearchQuery

        viewer = search_viewer(ident)
        items: list[dict[str, Any]] = []
        offset, scanned = q.offset, 0
        family = q.family()
        while len(items) < q.limit and scanned < _SCAN and offset < MAX_OFFSET:
            page, skip = offset // _PAGE + 1, offset % _PAGE
            query = SearchQuery(query=q.query, tags=[q.tag] if q.tag else [], author=q.username, base=family,
                                sort=q.sort, limit=_PAGE, page=page)
            hits = self.registry.search(query, viewer=viewer)
            with self.sessions.read() as s:
                entries = self._entries_for_adapters(s, ident, [h.id for h in hits[skip:]])
                for h in hits[skip:]:
                    offset += 1
                    scanned += 1
                    e = entries.get(h.id)
                    if e is not None and q.wants(e, self.base_model(e)):
                        items.append(self.model_json(e, base))
                        if len(items) >= q.limit:
                            break
            if len(hits) < _PAGE and offset >= (page - 1) * _PAGE + len(hits):
                return items, None
        return items, (offset if offset < MAX_OFFSET else None)


@dataclass
class ListQuery:
    """``GET /api/v1/models`` parameters, checked (:func:`parse_list`)."""

    limit: int = MAX_LIMIT
    offset: int = 0
    query: str | None = None
    tag: str | None = None
    username: str | None = None
    types: tuple[str, ...] = ()
    base_models: tuple[str, ...] = ()
    sort: str = "downloads"
    #: Civitai's default: no mature content unless ``nsfw=true``
    nsfw: bool = False
    page_mode: bool = False

    def family(self) -> str | None:
        fams = {family_from_label(b) for b in self.base_models}
        return fams.pop() if len(fams) == 1 and "unknown" not in fams else None

    def wants(self, e: Entry, label: str) -> bool:
        if self.types and model_type(e.adapter.format).lower() not in self.types:
            return False
        if self.base_models and label.lower() not in self.base_models:
            return False
        if not self.nsfw and e.adapter.nsfw:
            return False
        return True


_LIST_LIMITS = {"query": 200, "tag": 200, "username": 96, "types": 200, "baseModels": 400, "sort": 40,
                "cursor": 12, "limit": 4, "page": 6, "nsfw": 5, "period": 20}


def parse_list(params: Any) -> ListQuery:
    """The query string of ``GET /api/v1/models``, each value bounded; a wrong one is a 400."""
    for name, limit in _LIST_LIMITS.items():
        values = params.getlist(name)
        if len(values) > 20 or any(len(v) > limit for v in values):
            raise BadRequest(f"{name}: at most 20 values of {limit} characters")
    q = ListQuery()
    raw_limit = params.get("limit")
    if raw_limit not in (None, ""):
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
        q.limit = int(raw_limit)
    cursor, page = params.get("cursor"), params.get("page")
    q.query = (params.get("query") or "").strip() or None
    if cursor not in (None, "") and page not in (None, ""):
        raise BadRequest("give either cursor or page, not both")
    if cursor not in (None, ""):
        if not cursor.isdigit() or not cursor.isascii() or int(cursor) >= MAX_OFFSET:
            raise BadRequest(f"cursor: not a cursor this server handed out: {cursor[:20]!r}")
        q.offset = int(cursor)
    elif page not in (None, ""):
        if q.query:
            raise BadRequest("page cannot be combined with query: use cursor paging")
        if not page.isdigit() or int(page) < 1 or (int(page) - 1) * q.limit >= MAX_OFFSET:
            raise BadRequest(f"page must be a positive integer with (page - 1) * limit below {MAX_OFFSET}")
        q.offset = (int(page) - 1) * q.limit
        q.page_mode = True
    q.tag = (params.get("tag") or "").strip().lower() or None
    q.username = (params.get("username") or "").strip() or None
    types = [t.strip().lower() for v in params.getlist("types") for t in v.split(",") if t.strip()]
    q.types = tuple(types)
    bases = [b.strip().lower() for v in params.getlist("baseModels") for b in v.split(",") if b.strip()]
    q.base_models = tuple(" ".join(b.split()) for b in bases)
    sort = params.get("sort")
    if sort not in (None, ""):
        key = " ".join(sort.split()).lower()
        if key not in SORTS:
            raise BadRequest(f"sort must be one of: {', '.join(s.title() for s in SORTS)}")
        q.sort = SORTS[key]
        if q.sort == "relevance" and not q.query:
            q.sort = "downloads"
    else:
        q.sort = "relevance" if q.query else "downloads"
    nsfw = params.get("nsfw")
    if nsfw not in (None, ""):
        if nsfw.lower() not in ("true", "false"):
            raise BadRequest("nsfw must be true or false")
        q.nsfw = nsfw.lower() == "true"
    return q


def parse_batch(body: Any) -> list[str]:
    """The body of ``POST /api/v1/model-versions/by-hash``: a JSON array of at most 100 hashes."""
    if not isinstance(body, list):
        raise BadRequest("send a JSON array of file hashes")
    if len(body) > MAX_BATCH:
        raise BadRequest(f"at most {MAX_BATCH} hashes per request, got {len(body)}")
    return list(dict.fromkeys(parse_hash(h) for h in body))


def dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


__all__ = ["MAX_BATCH", "CivitaiApi", "IdCodec", "ListQuery", "NotFound", "parse_batch", "parse_hash", "parse_id",
           "parse_list"]
