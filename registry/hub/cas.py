"""The Xet CAS of ``lorahub serve``: tokens, xorbs, shards, reconstructions and the global dedupe
query (the wire formats are in :mod:`.xet`; the HTTP routes in ``registry/server/xet_api.py``).

* Tokens: ``xet-write-token`` / ``xet-read-token`` hand out ``lhx.<claims>.<mac>``, an HMAC (the
  server secret of :mod:`.auth`) over the user, the repo's primary key and name, the right
  (read/write) and an expiry (:data:`TOKEN_TTL_S`). A write token is re-checked against the repo
  (still there, same name) on every use; a read token never writes.
* Chunks are stored once, whatever xorb, file, repo or user they came in: each chunk record (its
  8-byte header and compressed bytes, as first received) at ``<data>/xet/chunks/ab/<hex>``, written
  to a temporary file and renamed only after its hash was computed from its decompressed bytes.
  A xorb is a row listing its chunks; its bytes are served by concatenating the records.
* A xorb upload (its body spooled to ``<data>/xet/tmp`` by the route, within the size bound) is
  verified whole, one chunk record at a time (every chunk's hash, the xorb hash in the URL) before
  any chunk is kept; the uploader is recorded as one of its owners (they proved holding its bytes).
* A shard upload names files as terms over stored xorbs. Each term must name a xorb the uploader
  owns, or carry the verification hash of exactly its chunk range (proof of knowing those chunks'
  hashes, which only their bytes give: two users sharing one client cache reference each other's
  xorbs this way); anything else is refused exactly like a xorb that does not exist (no probing);
  a chunk range inside it whose unpacked length is what the term says (and, when given, whose verification
  hash matches); the file hash is recomputed over all the file's chunks. The file is then
  read from its chunks through a SHA-256 (checked against the SHA-256 the shard announces;
  nothing is written: the chunks are the file's only copy, which the blob store serves through
  :meth:`XetCas.open_chunked`) and recorded for the token's repo exactly like an LFS upload
  (:meth:`.lfs.Lfs.record_upload`): a commit naming that oid goes through the same checks
  (safetensors validation, pickles refused, registry entry) as one whose object came through LFS.
  Nothing is recorded unless every file of the shard passed every check, its SHA-256 included.
* Reconstruction answers only for a file whose SHA-256 the token's repo holds (uploaded to it,
  ``hub_repo_objects``, or in one of its commits), so private data never reconstructs through
  another repo's token; a resolve answer carries the Xet headers under the same rule.
  Xorb bytes are fetched from URLs signed for one byte range of one xorb (a xorb may also hold
  chunks of other files, which the token may not read) and a short time.
* Tokens are re-checked on every call: the repo still there under the same name, still readable
  by the token's user (a repo made private stops answering), the ``lh_`` token not revoked.
* Global dedupe: chunks whose hash is ``0 mod 1024`` (and each file's first chunk) map to a xorb;
  the query answers a shard listing that xorb's chunks, only for xorbs the asking user owns.
"""

from __future__ import annotations

import base64
import bisect
import errno
import hashlib
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import sqlalchemy as sa

from lorahub.registry.database import Sessions, insert_ignore
from lorahub.registry.tables import Token, utcnow

from . import xet
from .access import allowed
from .auth import Identity, UrlSigner, identity_for_token_id
from .blobstore import BlobCache, BlobStore, StoredBlob, _fsync_dir, _storage_error
from .config import HubConfig
from .errors import BadRequest, Forbidden, HubApiError, PayloadTooLarge, Unauthorized
from .faults import fault_point
from .lfs import Lfs
from .repos import get_repo
from .tables import (
    HubCommit,
    HubFile,
    HubRepo,
    HubRepoObject,
    HubXetDedupe,
    HubXetFile,
    HubXetXorb,
    HubXetXorbOwner,
)

log = logging.getLogger("lorahub.server.xet")

TOKEN_PREFIX = "lhx."
TOKEN_TTL_S = 1800
FETCH_URL_TTL_S = 3600
#: Most byte ranges one signed xorb URL of a V2 reconstruction covers (the URL stays short).
MAX_URL_RANGES = 200
#: Most distinct xorbs one shard's files may name (bounds the rows read per shard).
MAX_SHARD_XORBS = 20_000


class XetError(HubApiError):
    pass


@dataclass(frozen=True)
class XetClaims:
    user_id: int  # 0: anonymous (read tokens of public repos)
    repo_pk: int
    repo_key: str
    write: bool
    exp: int
    token_id: int = 0  # the lh_ token it was issued for (0: anonymous); its rights are read again at each call


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class XetCas:
    def __init__(
        self, sessions: Sessions, store: BlobStore, lfs: Lfs, config: HubConfig, root: Path, signer: Callable[[], UrlSigner]
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.lfs = lfs
        self.config = config
        self.root = Path(root)
        self.chunk_dir = self.root / "chunks"
        self.tmp_dir = self.root / "tmp"
        self._signer = signer  # () -> UrlSigner, read lazily (the secret lives in the database)
        self._plans = BlobCache(256)

    @property
    def signer(self) -> UrlSigner:
        return self._signer()

    # -- tokens ---------------------------------------------------------------------------

    def issue_token(self, ident: Identity | None, repo_type: str, repo_id: str, *, write: bool) -> tuple[str, int]:
        with self.sessions.read() as s:
            repo = get_repo(s, repo_type, repo_id, ident, action="xet-write" if write else "xet-read")
            claims = {
                "u": ident.user_id if ident is not None else 0,
                "r": repo.id,
                "k": repo.key,
                "w": 1 if write else 0,
                "e": int(time.time()) + TOKEN_TTL_S,
                "t": ident.token_id if ident is not None else 0,
            }
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{TOKEN_PREFIX}{payload}.{self.signer.sign('xet-token', payload)}", claims["e"]

    def check_token(self, header: str | None, *, write: bool) -> XetClaims:
        scheme, _, value = (header or "").strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value.startswith(TOKEN_PREFIX) or len(value) > 1024:
            raise Unauthorized("a Xet CAS call needs the token of xet-read-token / xet-write-token")
        payload, _, sig = value[len(TOKEN_PREFIX) :].partition(".")
        if not self.signer.check(sig, "xet-token", payload):
            raise Unauthorized("invalid Xet token")
        try:
            c = json.loads(_unb64(payload))
            claims = XetClaims(int(c["u"]), int(c["r"]), str(c["k"]), bool(c["w"]), int(c["e"]), int(c["t"]))
        except (ValueError, KeyError, TypeError):
            raise Unauthorized("invalid Xet token") from None
        if claims.exp < time.time():
            raise Unauthorized("this Xet token has expired; ask xet-read-token / xet-write-token for a new one")
        if write and not claims.write:
            raise Forbidden("this Xet token is read-only")
        with self.sessions.read() as s:
            # Re-checked on every call: the repo (same name), its visibility, the lh_ token behind it.
            repo = s.get(HubRepo, claims.repo_pk)
            if repo is None or repo.key != claims.repo_key:
                raise Unauthorized("the repo of this Xet token no longer exists")
            ident = None
            if claims.token_id:
                tok = s.get(Token, claims.token_id)
                ident = identity_for_token_id(s, claims.token_id)
                if tok is None or ident is None or tok.user_id != claims.user_id:
                    raise Unauthorized("the token this Xet token was issued for has been revoked")
            # the policy, read now: a repo made private, a membership removed or a role lowered
            # stops a Xet token issued before at its next call
            if not allowed(ident, "xet-write" if claims.write else "xet-read", repo):
                raise Unauthorized("this Xet token no longer gives access to its repo")
        return claims

    # -- chunks ---------------------------------------------------------------------------

    def chunk_path(self, hex_hash: str) -> Path:
        return self.chunk_dir / hex_hash[:2] / hex_hash

    def _put_chunk(self, hex_hash: str, record: bytes) -> tuple[int, bool]:
        """Store a verified chunk record unless one is stored; ``(stored record length, created)``.
        A chunk stored again gets a fresh mtime, so ``registry check --repair`` does not remove an
        old orphan chunk that a new xorb is reusing (as for blobs, see :mod:`.blobstore`)."""
        final = self.chunk_path(hex_hash)
        try:
            size = final.stat().st_size
            try:
                os.utime(final)
            except OSError:
                pass
            return size, False
        except FileNotFoundError:
            pass
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "xb") as fh:
                fh.write(record)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _storage_error(exc, "cannot store the xorb") from None
        return len(record), True

    def read_chunk_record(self, hex_hash: str) -> bytes:
        return self.chunk_path(hex_hash).read_bytes()

    # -- files stored as chunks (the blob store's ChunkSource) -------------------------------

    def _chunk_plan(self, sha256: str) -> tuple[int, list[tuple[str, int]]] | None:
        """``(size, [(chunk hex, unpacked length), ...])`` of the content ``sha256`` when it came
        through Xet (cached: a registered file never changes), else None."""
        hit = self._plans.get(sha256)
        if hit is not None:
            return hit
        with self.sessions.read() as s:
            row = s.execute(sa.select(HubXetFile.size, HubXetFile.terms).where(HubXetFile.sha256 == sha256).limit(1)).first()
            if row is None:
                return None
            terms = json.loads(row[1])
            xorbs: dict[str, list[list]] = {}
            for xh in {t[0] for t in terms}:
                x = s.get(HubXetXorb, xh)
                if x is None:
                    log.error("xet: file %s names xorb %s, which has no row", sha256, xh)
                    return None
                xorbs[xh] = json.loads(x.chunks)
        chunks = [(c[0], int(c[1])) for xh, a, b, _ in terms for c in xorbs[xh][a:b]]
        plan = (int(row[0]), chunks)
        self._plans.put(sha256, plan)
        return plan

    def chunked_size(self, sha256: str) -> int | None:
        plan = self._chunk_plan(sha256)
        return plan[0] if plan is not None else None

    def open_chunked(self, sha256: str) -> BinaryIO | None:
        plan = self._chunk_plan(sha256)
        return open_chunks(self.chunk_dir, plan[1]) if plan is not None else None

    # -- xorbs ----------------------------------------------------------------------------

    def spool_path(self) -> Path:
        """A fresh ``xet/tmp/*.part`` path for an upload body on its way in (the route writes it
        within the size bound, :meth:`put_xorb` reads it, the route removes it; a crash leaves a
        ``.part`` that the sweep and ``registry check`` remove)."""
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _storage_error(exc, "cannot store the xorb") from None
        return self.tmp_dir / f"{uuid.uuid4().hex}.part"

    def put_xorb(self, claims: XetClaims, hex_hash: str, body: Path, size: int) -> bool:
        """Verify and store a xorb whose upload body is the file ``body`` (``size`` bytes); ``True``
        when it was new to the server. Reads one chunk record at a time: the xorb is never whole
        in memory."""
        want = xet.hash_of_hex(hex_hash)
        try:
            with open(body, "rb") as fh:
                try:
                    chunks = xet.parse_xorb(fh, size)
                except xet.XetFormatError as exc:
                    raise BadRequest(f"xorb {hex_hash}: {exc}") from None
        except OSError as exc:
            raise _storage_error(exc, "cannot read the xorb") from None
        got = xet.xorb_hash([(c.hash, c.length) for c in chunks])
        if got != want:
            raise BadRequest(f"xorb hash mismatch: the chunks hash to {xet.hex_of(got)}, not {hex_hash}")
        with self.sessions.read() as s:
            known = s.get(HubXetXorb, hex_hash) is not None
        names = [xet.hex_of(c.hash) for c in chunks]
        if known:
            # Stored already; chunk files lost since (quarantined by `registry check --repair`) are
            # written again from these verified bytes.
            lost = [(h, c) for h, c in zip(names, chunks, strict=True) if not self.chunk_path(h).is_file()]
            if lost:
                with open(body, "rb") as fh:
                    for h, c in lost:
                        fh.seek(c.offset)
                        self._put_chunk(h, fh.read(c.record_length))
        if not known:
            fd = os.open(body, os.O_RDONLY)
            try:
                def put(hc: tuple[str, xet.XorbChunk]) -> int:
                    record = os.pread(fd, hc[1].record_length, hc[1].offset)
                    return self._put_chunk(hc[0], record)[0]

                # One fsync per chunk file, run side by side: the journal commits them together (a
                # 64 MiB xorb of ~1000 chunks: ~0.2 s instead of ~3.5 s one after the other).
                with ThreadPoolExecutor(max_workers=16) as pool:
                    sizes = list(pool.map(put, zip(names, chunks, strict=True)))
                    # the renames are durable before the row names the chunks
                    list(pool.map(_fsync_dir, {self.chunk_path(h).parent for h in names}))
            finally:
                os.close(fd)
            listing = [[h, c.length, n] for h, c, n in zip(names, chunks, sizes, strict=True)]
            fault_point("xet-xorb-before-row")  # inert outside crash tests (see .faults)
            with self.sessions.write() as s:
                insert_ignore(
                    s,
                    HubXetXorb,
                    [
                        {
                            "hash": hex_hash,
                            "num_chunks": len(listing),
                            "unpacked_bytes": sum(c[1] for c in listing),
                            "stored_bytes": sum(c[2] for c in listing),
                            "received_bytes": size,
                            "chunks": json.dumps(listing, separators=(",", ":")),
                            "created_at": utcnow(),
                        }
                    ],
                    ["hash"],
                )
                eligible = [{"chunk": c[0], "xorb": hex_hash} for c, raw in zip(listing, chunks, strict=True) if xet.hash_mod(raw.hash, xet.GLOBAL_DEDUPE_MODULUS) == 0]
                insert_ignore(s, HubXetDedupe, eligible + [{"chunk": listing[0][0], "xorb": hex_hash}], ["chunk", "xorb"])
                s.commit()
        if claims.user_id:
            with self.sessions.write() as s:
                insert_ignore(s, HubXetXorbOwner, [{"xorb": hex_hash, "user_id": claims.user_id}], ["xorb", "user_id"])
                s.commit()
        return not known

    def xorb_chunks(self, hex_hash: str) -> list[list]:
        with self.sessions.read() as s:
            row = s.get(HubXetXorb, hex_hash)
            return json.loads(row.chunks) if row is not None else []

    # -- shards ---------------------------------------------------------------------------

    def put_shard(self, claims: XetClaims, body: bytes) -> int:
        """Verify a shard's files, store each as the blob of its SHA-256 and record it for the
        token's repo. Returns the number of files registered."""
        try:
            files = xet.parse_shard(body)
        except xet.XetFormatError as exc:
            raise BadRequest(f"shard: {exc}") from None
        names = {xet.hex_of(t.xorb) for f in files for t in f.terms}
        if len(names) > MAX_SHARD_XORBS:
            raise BadRequest(f"shard names more than {MAX_SHARD_XORBS} xorbs")
        xorbs: dict[str, list[list]] = {}
        with self.sessions.read() as s:
            owned = set()
            for part in _batches(sorted(names), 500):
                owned |= {
                    r[0]
                    for r in s.execute(
                        sa.select(HubXetXorbOwner.xorb).where(HubXetXorbOwner.user_id == claims.user_id, HubXetXorbOwner.xorb.in_(part))
                    )
                }
            for part in _batches(sorted(names), 500):
                for h, chunks in s.execute(sa.select(HubXetXorb.hash, HubXetXorb.chunks).where(HubXetXorb.hash.in_(part))):
                    xorbs[h] = json.loads(chunks)
        plans = [self._check_file(f, xorbs, owned) for f in files]
        total = sum(p[1] for p in plans)
        if total > self.config.max_upload_size:
            # Bounds what one small shard can make the server read and hash (terms may repeat chunks).
            raise PayloadTooLarge(f"the files of one shard add up to {total} bytes, over the server's limit of {self.config.max_upload_size}")
        # Every file passed: read each through its SHA-256 (a file whose SHA-256 is not the one the
        # shard states fails the whole shard). Its bytes stay where they are, in the chunks: the
        # blob store serves them from there (no second copy of the file).
        stored_files = []
        for f, (fhex, size, terms) in zip(files, plans, strict=True):
            expected = xet.hex_of(f.sha256) if f.sha256 is not None else None  # stored like a Xet hash: 8-byte words reversed
            digest = hashlib.sha256()
            for chunk in self._file_bytes(terms, xorbs):
                digest.update(chunk)
            got = digest.hexdigest()
            if expected is not None and got != expected:
                raise BadRequest(f"file {fhex}: its sha256 is {got}, not the announced {expected}")
            stored_files.append((fhex, size, terms, StoredBlob(sha256=got, size=size, git_sha1=None, created=False)))
        # ... then record them all: the file's chunk plan first, then the blob row and the upload
        # to the repo (a crash in between leaves a file row no repo holds, which nothing serves).
        for fhex, size, terms, stored in stored_files:
            with self.sessions.write() as s:
                insert_ignore(
                    s,
                    HubXetFile,
                    [{"file_hash": fhex, "sha256": stored.sha256, "size": size, "terms": json.dumps(terms, separators=(",", ":")), "created_at": utcnow()}],
                    ["file_hash"],
                )
                first = xorbs[terms[0][0]][terms[0][1]][0]
                insert_ignore(s, HubXetDedupe, [{"chunk": first, "xorb": terms[0][0]}], ["chunk", "xorb"])
                s.commit()
            self.lfs.record_upload(claims.repo_pk, stored)
        return len(files)

    def _check_file(self, f: xet.ShardFile, xorbs: dict[str, list[list]], owned: set[str]) -> tuple[str, int, list[list]]:
        fhex = xet.hex_of(f.hash)
        leaves: list[tuple[bytes, int]] = []
        terms: list[list] = []
        size = 0
        for t in f.terms:
            xh = xet.hex_of(t.xorb)
            chunks = xorbs.get(xh)
            refused = BadRequest(f"file {fhex} names xorb {xh}, which you have not uploaded and whose chunks the shard does not prove")
            if chunks is None:
                raise refused
            if xh not in owned:
                # Another user's xorb (two users sharing one client cache do this): accepted only for a
                # term whose verification hash proves knowing the hashes of exactly its chunks, which
                # only the chunks' bytes give (this server never tells chunk hashes of xorbs one does
                # not own). Refused exactly like a xorb that does not exist: no probing.
                if t.range_hash is None or not (0 <= t.start < t.end <= len(chunks)):
                    raise refused
                if xet.range_hash([xet.hash_of_hex(c[0]) for c in chunks[t.start : t.end]]) != t.range_hash:
                    raise refused
            if t.end > len(chunks):
                raise BadRequest(f"file {fhex}: chunk range [{t.start}, {t.end}) is outside xorb {xh} ({len(chunks)} chunks)")
            part = chunks[t.start : t.end]
            unpacked = sum(c[1] for c in part)
            if unpacked != t.unpacked:
                raise BadRequest(f"file {fhex}: a term over xorb {xh} says {t.unpacked} bytes, its chunks hold {unpacked}")
            hashes = [xet.hash_of_hex(c[0]) for c in part]
            if t.range_hash is not None and xet.range_hash(hashes) != t.range_hash:
                raise BadRequest(f"file {fhex}: the verification hash of a term over xorb {xh} is wrong")
            leaves.extend(zip(hashes, (c[1] for c in part), strict=True))
            terms.append([xh, t.start, t.end, unpacked])
            size += unpacked
            if size > self.config.max_upload_size:
                raise PayloadTooLarge(f"file {fhex} exceeds the server's limit of {self.config.max_upload_size} bytes")
        if xet.file_hash(leaves) != f.hash:
            raise BadRequest(f"file hash mismatch: the chunks of file {fhex} hash to {xet.hex_of(xet.file_hash(leaves))}")
        return fhex, size, terms

    def _file_bytes(self, terms: list[list], xorbs: dict[str, list[list]] | None = None) -> Iterator[bytes]:
        for xh, start, end, _ in terms:
            chunks = xorbs[xh] if xorbs is not None and xh in xorbs else self.xorb_chunks(xh)
            for c in chunks[start:end]:
                data = xet.decode_record(self.read_chunk_record(c[0]))
                if xet.chunk_hash(data) != xet.hash_of_hex(c[0]):
                    raise XetError(f"stored chunk {c[0]} is corrupt", status=500)
                yield data

    # -- reconstruction -------------------------------------------------------------------

    def file_for_sha256(self, sha256: str, repo_pk: int) -> str | None:
        """The Xet hash of the content ``sha256`` when it came through Xet and repo ``repo_pk`` holds
        it (the same rule :meth:`reconstruction` applies), else None."""
        with self.sessions.read() as s:
            row = s.execute(sa.select(HubXetFile.file_hash).where(HubXetFile.sha256 == sha256).limit(1)).first()
            return row[0] if row and _repo_holds(s, repo_pk, sha256) else None

    def reconstruction(
        self, claims: XetClaims, file_hex: str, byte_range: tuple[int, int | None] | None, base: str, *, version: int = 1
    ) -> dict | None:
        """The V1 (``fetch_info``: one signed URL per term) or V2 (``xorbs``: per xorb, one signed
        URL for all its byte ranges the file needs, overlapping and adjacent ones merged)
        reconstruction answer; ``None`` for a range starting past the end (416)."""
        xet.hash_of_hex(file_hex)
        with self.sessions.read() as s:
            row = s.get(HubXetFile, file_hex)
            allowed = row is not None and _repo_holds(s, claims.repo_pk, row.sha256)
            if not allowed:
                raise XetError(f"no file {file_hex} in this repo", status=404)
            terms = json.loads(row.terms)
            size = row.size
        start, end = 0, size - 1
        if byte_range is not None:
            start = byte_range[0]
            end = min(size - 1, byte_range[1] if byte_range[1] is not None else size - 1)
            if start >= size or end < start:
                return None
        out_terms: list[dict] = []
        spans: list[tuple[str, int, int, int, int]] = []  # (xorb, first chunk, end chunk, first byte, last byte)
        pos = 0
        offset_first = 0
        cache: dict[str, list[list]] = {}
        for xh, t_start, t_end, _ in terms:
            chunks = cache.get(xh) or cache.setdefault(xh, self.xorb_chunks(xh))
            first = last = None
            first_pos = 0
            p = pos
            for i in range(t_start, t_end):
                n = chunks[i][1]
                if p + n > start and p <= end:
                    if first is None:
                        first, first_pos = i, p
                    last = i
                p += n
            pos = p
            if first is None:
                continue
            if not out_terms:
                offset_first = start - first_pos
            unpacked = sum(c[1] for c in chunks[first : last + 1])
            out_terms.append({"hash": xh, "unpacked_length": unpacked, "range": {"start": first, "end": last + 1}})
            b0 = sum(c[2] for c in chunks[:first])
            b1 = b0 + sum(c[2] for c in chunks[first : last + 1]) - 1
            spans.append((xh, first, last + 1, b0, b1))
        exp = int(time.time()) + FETCH_URL_TTL_S

        def url(xh: str, ranges: list[tuple[int, int]]) -> str:
            # Signed for these bytes only: a xorb may also hold chunks of files this token may not read.
            r = ",".join(f"{a}-{b}" for a, b in ranges)
            return f"{base}/xorbs/{xh}?r={r}&exp={exp}&sig={self.signer.sign('xet-xorb-ranges', xh, r, exp)}"

        answer: dict = {"offset_into_first_range": offset_first, "terms": out_terms}
        if version == 1:
            fetch: dict[str, list[dict]] = {}
            for xh, c0, c1, b0, b1 in spans:
                fetch.setdefault(xh, []).append({"range": {"start": c0, "end": c1}, "url": url(xh, [(b0, b1)]), "url_range": {"start": b0, "end": b1}})
            answer["fetch_info"] = fetch
            return answer
        merged: dict[str, list[list[int]]] = {}
        for xh, c0, c1, b0, b1 in sorted(spans, key=lambda x: (x[0], x[1])):
            runs = merged.setdefault(xh, [])
            if runs and c0 <= runs[-1][1]:  # overlapping or adjacent chunks: one range
                if c1 > runs[-1][1]:
                    runs[-1][1], runs[-1][3] = c1, b1
            else:
                runs.append([c0, c1, b0, b1])
        xorbs: dict[str, list[dict]] = {}
        for xh, runs in merged.items():
            for i in range(0, len(runs), MAX_URL_RANGES):
                part = runs[i : i + MAX_URL_RANGES]
                xorbs.setdefault(xh, []).append(
                    {
                        "url": url(xh, [(b0, b1) for _, _, b0, b1 in part]),
                        "ranges": [{"chunks": {"start": c0, "end": c1}, "bytes": {"start": b0, "end": b1}} for c0, c1, b0, b1 in part],
                    }
                )
        answer["xorbs"] = xorbs
        return answer

    def check_fetch(self, xh: str, allowed: str, exp: str, sig: str) -> tuple[list[list], list[tuple[int, int]]]:
        """The xorb's chunks and the byte ranges (inclusive, sorted, disjoint) its signed URL allows."""
        try:
            exp_i = int(exp)
            ranges = [tuple(int(x) for x in part.split("-", 1)) for part in allowed.split(",")] if len(allowed) < 64 * MAX_URL_RANGES else []
        except ValueError:
            raise Forbidden("invalid xorb URL") from None
        if not ranges or len(ranges) > MAX_URL_RANGES or any(len(r) != 2 for r in ranges):
            raise Forbidden("invalid xorb URL")
        if not xet.is_hex_hash(xh) or not self.signer.check(sig, "xet-xorb-ranges", xh, allowed, exp_i):
            raise Forbidden("invalid xorb URL signature")
        if exp_i < time.time():
            raise Forbidden("this xorb URL has expired; ask for the reconstruction again")
        chunks = self.xorb_chunks(xh)
        if not chunks:
            raise XetError("no such xorb", status=404)
        return chunks, ranges  # type: ignore[return-value]

    def xorb_bytes(self, chunks: list[list], start: int, end: int) -> Iterator[bytes]:
        """Bytes ``[start, end]`` (inclusive) of a xorb as served (its stored records, in order)."""
        pos = 0
        for h, _, n in chunks:
            if pos > end:
                break
            if pos + n > start:
                rec = self.read_chunk_record(h)
                yield rec[max(0, start - pos) : min(n, end - pos + 1)]
            pos += n

    # -- global dedupe --------------------------------------------------------------------

    def dedupe_shard(self, claims: XetClaims, chunk_hex: str) -> bytes | None:
        xet.hash_of_hex(chunk_hex)
        if not claims.user_id:
            return None
        with self.sessions.read() as s:
            rows = s.execute(
                sa.select(HubXetXorb.hash, HubXetXorb.stored_bytes, HubXetXorb.chunks)
                .join(HubXetDedupe, HubXetDedupe.xorb == HubXetXorb.hash)
                .join(HubXetXorbOwner, HubXetXorbOwner.xorb == HubXetXorb.hash)
                .where(HubXetDedupe.chunk == chunk_hex, HubXetXorbOwner.user_id == claims.user_id)
                .limit(4)
            ).all()
        if not rows:
            return None
        listing = []
        for h, stored, chunks_json in rows:
            chunks = json.loads(chunks_json)
            entries = []
            pos = 0
            for ch, n, rec in chunks:
                entries.append((xet.hash_of_hex(ch), pos, n))
                pos += rec
            listing.append((xet.hash_of_hex(h), stored, entries))
        return xet.build_dedupe_shard(listing, timestamp=int(time.time()))


class ChunkReader(io.RawIOBase):
    """A seekable reader of a file stored as chunks (``[(chunk hex, unpacked length), ...]`` in
    ``chunk_dir``): a read decodes only the chunks it spans, each checked against its hash (a
    corrupt or missing chunk file is an ``OSError`` naming it)."""

    def __init__(self, chunk_dir: Path, chunks: list[tuple[str, int]]) -> None:
        self._dir = chunk_dir
        self._chunks = chunks
        self._starts = []
        pos = 0
        for _, n in chunks:
            self._starts.append(pos)
            pos += n
        self._size = pos
        self._pos = 0
        self._cur: tuple[int, bytes] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def _chunk(self, i: int) -> bytes:
        if self._cur is not None and self._cur[0] == i:
            return self._cur[1]
        h, n = self._chunks[i]
        path = self._dir / h[:2] / h
        record = path.read_bytes()
        try:
            data = xet.decode_record(record)
            good = len(data) == n and xet.chunk_hash(data) == xet.hash_of_hex(h)
        except xet.XetFormatError:
            good = False
        if not good:
            raise OSError(errno.EIO, f"stored chunk {h} is corrupt", str(path))
        self._cur = (i, data)
        return data

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._pos >= self._size or not len(b):
            return 0
        i = bisect.bisect_right(self._starts, self._pos) - 1
        data = self._chunk(i)
        off = self._pos - self._starts[i]
        n = min(len(b), len(data) - off)
        b[:n] = data[off : off + n]
        self._pos += n
        return n


def open_chunks(chunk_dir: Path, chunks: list[tuple[str, int]]) -> BinaryIO:
    """A buffered, seekable reader of the file made of ``chunks`` (see :class:`ChunkReader`)."""
    return io.BufferedReader(ChunkReader(chunk_dir, chunks), buffer_size=1 << 20)  # type: ignore[return-value]


def _repo_holds(s: object, repo_pk: int, sha256: str) -> bool:
    """Repo ``repo_pk`` holds the content: uploaded to it, or in one of its commits."""
    if s.execute(sa.select(HubRepoObject.sha256).where(HubRepoObject.repo_id == repo_pk, HubRepoObject.sha256 == sha256).limit(1)).first():
        return True
    in_commit = (
        sa.select(HubFile.id)
        .join(HubCommit, HubCommit.id == HubFile.commit_id)
        .where(HubCommit.repo_id == repo_pk, HubFile.sha256 == sha256)
        .limit(1)
    )
    return s.execute(in_commit).first() is not None


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


__all__ = ["TOKEN_TTL_S", "ChunkReader", "XetCas", "XetClaims", "XetError", "open_chunks"]
