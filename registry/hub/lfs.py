"""Uploads: preupload (which files go through LFS), the LFS batch API, recording an uploaded object
and verifying it.

An LFS object is uploaded to a signed URL the batch answer hands out (see :mod:`.auth`); the
upload is recorded for *this* repo (``hub_repo_objects``), and a commit may only name objects
recorded for its repo (see :mod:`.commits`). The answers here are the protocol's own objects (the
preupload entries, the batch objects with their per-object errors); the HTTP layer adds the
upload URLs. :class:`Lfs` is the operations, each opening its own session (see
:mod:`lorahub.registry.hub`).
"""

from __future__ import annotations

import base64
import binascii
import time
from pathlib import PurePosixPath
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from lorahub.registry.database import Sessions, insert_ignore, retry_busy
from lorahub.registry.tables import utcnow

from . import trees
from .auth import Identity
from .blobstore import BlobStore, StoredBlob
from .config import HubConfig
from .errors import BadRequest, HubApiError, RepoNotFound
from .faults import fault_point
from .gitobj import is_sha256
from .names import check_path
from .repos import get_repo, repo_by_public_id
from .tables import HubBlob, HubRepo, HubRepoObject

#: Files the Hub stores with LFS whatever their size (besides binary content and size >= threshold).
LFS_SUFFIXES = frozenset(
    ".safetensors .bin .ckpt .pt .pth .onnx .pb .h5 .msgpack .npy .npz .pkl .pickle .joblib .model .gguf .ggml "
    ".tflite .ot .arrow .parquet .zip .gz .tgz .xz .bz2 .zst .tar .7z .rar .png .jpg .jpeg .gif .webp .bmp .tif "
    ".tiff .mp3 .mp4 .wav .ogg .flac .webm .avi .mov .pdf".split()
)


def upload_mode(path: str, size: int, sample: bytes, lfs_threshold: int) -> str:
    """``"lfs"`` or ``"regular"`` for a file, as the Hub decides it from its name, size and first 512 bytes."""
    if size <= 0:
        return "regular"
    if PurePosixPath(path).suffix.lower() in LFS_SUFFIXES or size >= lfs_threshold:
        return "lfs"
    if b"\0" in sample:
        return "lfs"
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 3:  # not just a character cut by the 512-byte sample
            return "lfs"
    return "regular"


class Lfs:
    def __init__(self, sessions: Sessions, store: BlobStore, config: HubConfig) -> None:
        self.sessions = sessions
        self.store = store
        self.config = config

    def preupload(
        self, ident: Identity | None, repo_type: str, repo_id: str, revision: str, files: list[Any], *, create_pr: bool
    ) -> list[dict[str, Any]]:
        """The preupload answer's entries: each file's upload mode and, when the revision holds the
        path, the oid it has there."""
        with self.sessions.read() as session:
            repo = get_repo(session, repo_type, repo_id, ident, write=True)
            commit = trees.resolve_revision(session, repo, revision)
            if not isinstance(files, list) or len(files) > self.config.max_operations:
                raise BadRequest(f"'files' must be a list of at most {self.config.max_operations} entries")
            current = trees.files_of(session, commit)
            shas = [f.sha256 for f in current.values() if not f.lfs]
            git_of: dict[str, str] = {}
            if shas:
                for sha, g in session.execute(sa.select(HubBlob.sha256, HubBlob.git_sha1).where(HubBlob.sha256.in_(shas))):
                    if g:
                        git_of[sha] = g
            out = []
            for item in files:
                if not isinstance(item, dict):
                    raise BadRequest("each file must be an object with path, sample and size")
                path = check_path(item.get("path"))
                size = item.get("size")
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise BadRequest(f"{path}: 'size' must be a non-negative integer")
                try:
                    sample = base64.b64decode(item.get("sample") or "", validate=True)[:512]
                except (binascii.Error, ValueError, TypeError):
                    raise BadRequest(f"{path}: 'sample' is not base64") from None
                mode = upload_mode(path, size, sample, self.config.lfs_threshold)
                entry: dict[str, Any] = {"path": path, "uploadMode": mode, "shouldIgnore": False}
                cur = current.get(path)
                if cur is not None:
                    if mode == "lfs":
                        entry["oid"] = cur.sha256
                    else:
                        entry["oid"] = cur.git_oid if not cur.lfs else git_of.get(cur.sha256)
                        if entry["oid"] is None:
                            del entry["oid"]
                out.append(entry)
            return out

    def batch(
        self, ident: Identity | None, repo_type: str, repo_id: str, body: Any
    ) -> tuple[HubRepo, list[dict[str, Any]], list[tuple[str, int]]]:
        """``(repo, objects, to_sign)``: the batch answer objects; ``to_sign`` lists (oid, size) needing upload URLs."""
        with self.sessions.read() as session:
            repo = get_repo(session, repo_type, repo_id, ident, write=True)
            if not isinstance(body, dict):
                raise BadRequest("LFS batch body must be a JSON object")
            op = body.get("operation")
            if op != "upload":
                raise BadRequest("only the 'upload' operation is supported (download through /resolve/)")
            transfers = body.get("transfers") or ["basic"]
            if not isinstance(transfers, list) or "basic" not in transfers:
                raise BadRequest("only the 'basic' transfer is supported")
            if body.get("hash_algo", "sha256") != "sha256":
                raise BadRequest("only hash_algo sha256 is supported")
            objects = body.get("objects")
            if not isinstance(objects, list) or len(objects) > self.config.max_batch_objects:
                raise BadRequest(f"'objects' must be a list of at most {self.config.max_batch_objects} entries")
            oids = [o.get("oid") for o in objects if isinstance(o, dict) and is_sha256(o.get("oid"))]
            linked = set()
            if oids:
                linked = {
                    r[0]
                    for r in session.execute(
                        sa.select(HubRepoObject.sha256).where(HubRepoObject.repo_id == repo.id, HubRepoObject.sha256.in_(oids))
                    )
                }
        out: list[dict[str, Any]] = []
        to_sign: list[tuple[str, int]] = []
        for o in objects:
            oid = o.get("oid") if isinstance(o, dict) else None
            size = o.get("size") if isinstance(o, dict) else None
            shown_oid = oid if isinstance(oid, str) else ""
            shown_size = size if isinstance(size, int) and not isinstance(size, bool) else 0
            if not is_sha256(oid):
                out.append({"oid": shown_oid[:64], "size": shown_size, "error": {"code": 422, "message": "oid must be 64 lower-case hex (sha256)"}})
                continue
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                out.append({"oid": oid, "size": shown_size, "error": {"code": 422, "message": "size must be a non-negative integer"}})
                continue
            if size > self.config.max_upload_size:
                out.append(
                    {"oid": oid, "size": size, "error": {"code": 413, "message": f"object of {size} bytes exceeds the server's limit of {self.config.max_upload_size} bytes"}}
                )
                continue
            if oid in linked and self.store.exists(oid) and self.store.size(oid) == size:
                out.append({"oid": oid, "size": size})
                continue
            out.append({"oid": oid, "size": size})
            to_sign.append((oid, size))
        return repo, out, to_sign

    def record_upload(self, repo_pk: int, stored: StoredBlob) -> None:
        """Record an object uploaded to repo ``repo_pk`` (the blob and its link to the repo)."""
        fault_point("upload-before-record")  # inert outside crash tests (see .faults)
        now = utcnow()
        started = time.monotonic()
        attempt = 0
        while True:  # a "database is locked" is retried for up to one busy timeout (retry_busy), as commits are
            try:
                with self.sessions.write() as s:
                    insert_ignore(
                        s,
                        HubBlob,
                        [{"sha256": stored.sha256, "size": stored.size, "git_sha1": stored.git_sha1, "created_at": now}],
                        ["sha256"],
                    )
                    insert_ignore(s, HubRepoObject, [{"repo_id": repo_pk, "sha256": stored.sha256, "created_at": now}], ["repo_id", "sha256"])
                    s.commit()
                return
            except OperationalError as exc:
                if not retry_busy(exc, started):
                    raise
                attempt += 1
                time.sleep(min(0.05 * attempt, 0.5))

    def verify(self, ident: Identity | None, public_id: str, oid: str, size: int) -> None:
        """The LFS verify step: the object was uploaded to this repo, whole (``size`` bytes)."""
        with self.sessions.read() as s:
            repo = repo_by_public_id(s, public_id)
            if repo is None:
                raise RepoNotFound()
            get_repo(s, repo.repo_type, f"{repo.namespace}/{repo.name}", ident, write=True)
            linked = s.execute(
                sa.select(HubRepoObject.sha256).where(HubRepoObject.repo_id == repo.id, HubRepoObject.sha256 == oid)
            ).first()
            if linked is None or not self.store.exists(oid):
                raise HubApiError(f"object {oid} was not uploaded", status=404)
            if self.store.size(oid) != size:
                raise BadRequest(f"object {oid} has {self.store.size(oid)} bytes, not {size}")


__all__ = ["LFS_SUFFIXES", "Lfs", "upload_mode"]
