"""The semantic search index of one database in one process, and its cache file beside the database.

:mod:`.semantic` keeps one :class:`VectorIndex` per database and model: the records' vectors (float32,
centred on their mean and normalised), the tag vocabulary (each tag's vector and the rows carrying it), the
filter tokens' rows, and above :data:`ANN_MIN_ROWS` live vectors an HNSW graph (:mod:`.ann`) in a process
that keeps the index (``lorahub serve``, the Space). Rows are positions that only grow: a changed record
gets a new position and its old one is marked dead (``alive``), so postings and the graph's keys stay valid;
:mod:`.semantic` rebuilds everything when dead rows outnumber live ones.

Searching (:meth:`VectorIndex.top`): exact (one product over every row, or over the rows a filter keeps
when they are at most :data:`FILTERED_EXACT` or :data:`FILTERED_EXACT_PER_CANDIDATE` times the candidates the
graph would be asked for), or the graph's :data:`ANN_CANDIDATES` nearest rows plus the rows of the query's
nearest tags with at most :data:`POSTING_EXACT` rows, scored exactly; asked again four times deeper while the
caller's filters reject too many, and exact past a quarter of the rows. A query's nearest tags and scored
candidates are kept for its next search (up to :data:`MEMO_BYTES`) until the index changes; the caller's
filters and visibility are asked every time.

The cache file (:meth:`VectorIndex.save`, :meth:`VectorIndex.open`): one file a command maps in
milliseconds instead of reading every vector from the database. ``MAGIC``, the header's length and its
BLAKE3 digest, the header (JSON: model, version, dimension, the database's change counter it matches, the
arrays' places, tag names, filter tokens, each array's digest) and the arrays, 64-byte aligned. Opening
checks the magic, the header's digest, every place against the file's size, the digest of every array but
the matrix (whose length is checked, and a sample of its blocks hashed: hashing all of it would cost as much
as reading it from the database) and the graph's digest before the graph is used. A file that fails any
check is not used (the caller rebuilds it from the database); it is never trusted to be well formed.
Written to a temporary file beside it, then renamed over it.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import text as T

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

log = logging.getLogger(__name__)

#: Live vectors from which a process that keeps its index searches an HNSW graph (below: exact search).
ANN_MIN_ROWS = 20_000
#: Candidates asked of the graph for a query: at least this many and 4x the depth the caller reads.
ANN_CANDIDATES = 400
#: A nearest tag's rows are scored exactly (beside the graph's candidates) when it has at most this many;
#: a larger tag's rows near the query are among the graph's candidates.
POSTING_EXACT = 8192
#: A filtered search scores exactly when the filters keep at most this many rows (else the graph's
#: candidates that pass them).
FILTERED_EXACT = 4096
#: ... or at most this many times the candidates it would ask of the graph (a filter keeping 1 row in 15 asks
#: 15x the candidates: one candidate of the graph costs about 4.5 rows scored exactly, measured at 100k rows).
FILTERED_EXACT_PER_CANDIDATE = 4
#: Rows scored (exactly) are read in place, every row's score computed and theirs kept, when they are more than
#: one in this many of the index's rows; fewer are gathered first (measured at 100k rows of 384 floats: a gather
#: of 5 % of them 1.5 ms against 6.5 for every row, of 25 % 12.7 against 6.8; 2026-12-06).
GATHER_SHARE = 8
#: Query -> its nearest tags of the registry's vocabulary, and how much a record's matching tag adds.
TAG_NEIGHBOURS = 5
TAG_WEIGHT = 0.5
#: Tags on fewer adapters than this are not among a query's nearest tags (one-off tags are noise).
MIN_TAG_COUNT = 2

MAGIC = b"LHVEC01\n"
FORMAT = 1
_ALIGN = 64
#: Every 16th block of the matrix (and its last) is hashed when the file is opened.
_SAMPLE_BLOCK = 1 << 16
_SAMPLE_EVERY = 16
#: array -> allowed dtype (the header may not name others)
_DTYPES = {"matrix": "float32", "ids": "int64", "alive": "bool", "mean": "float32", "tag_matrix": "float32",
           "tag_counts": "int64", "post_off": "int64", "post_val": "int32", "facet_off": "int64",
           "facet_val": "int32", "ann": "uint8"}
_MAX_HEADER = 256 << 20
#: Large tags whose rows are kept as a mask (one byte per row each).
_TAG_MASKS = 64
#: Scored candidates kept per index for repeated queries (a server answers the same words again and again):
#: at most this many bytes of arrays; forgotten whenever the index changes (see :meth:`VectorIndex.top`).
MEMO_BYTES = 32 << 20
#: ... and a search's scored candidates are kept only up to this many rows (an exact pass over every row is not).
MEMO_MAX_ROWS = 65_536


class BadCacheFile(ValueError):
    """The cache file is not one this code wrote for this model (or is damaged)."""


def normalised(x: np.ndarray) -> np.ndarray:
    import numpy as np

    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-9)


def _csr(lists: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    lens = np.fromiter((len(x) for x in lists), np.int64, len(lists))
    off = np.zeros(len(lists) + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    val = (np.concatenate([np.asarray(x, np.int32) for x in lists]) if lists and off[-1]
           else np.zeros(0, np.int32))
    return off, val.astype(np.int32, copy=False)


class VectorIndex:
    """One database's vectors for one model (rows ``[:n]`` of ``matrix``; ``alive`` marks the current ones).
    Not thread-safe (the kept candidates, the tag masks, the scratch mask): :mod:`.semantic` holds the index's
    slot lock around every search and change."""

    def __init__(self, dim: int, mean: np.ndarray, built_n: int) -> None:
        import numpy as np

        self.dim = dim
        self.mean = mean
        self.built_n = built_n
        self.matrix = np.zeros((0, dim), np.float32)
        self.ids = np.zeros(0, np.int64)
        self.alive = np.zeros(0, bool)
        self.n = 0
        self.live = 0
        self._row_of: dict[int, int] | None = None
        self.tag_names: list[str] = []
        self._tag_pos: dict[str, int] | None = None
        self.tag_matrix = np.zeros((0, dim), np.float32)
        self.tag_counts = np.zeros(0, np.int64)
        self._post_off = np.zeros(1, np.int64)
        self._post_val = np.zeros(0, np.int32)
        self._post_extra: dict[int, np.ndarray] = {}
        self._tag_masks: dict[int, np.ndarray] = {}  # large tags' rows as masks (a search's candidates test them)
        self._scratch: np.ndarray | None = None  # a False mask over the rows, lent to _tag_member and returned clean
        # query vector, filters, graph or not -> (tag bonus, candidates scored per depth asked): see top()
        self._memo: OrderedDict[tuple[Any, ...], _Memo] = OrderedDict()
        self._memo_bytes = 0
        self.facet_tokens: list[str] = []
        self._facet_pos: dict[str, int] | None = None
        self._facet_off = np.zeros(1, np.int64)
        self._facet_val = np.zeros(0, np.int32)
        self._facet_extra: dict[str, np.ndarray] = {}
        self.ann: Any = None
        self._ann_source: tuple[int, int, str] | None = None  # (offset, length, digest) in the mapped file
        self._map: Any = None  # the mapped cache file the arrays read from (kept alive)
        self.generation = 0
        self.changes_since_file = 0
        self.graph_rebuilt = False  # the file's graph was damaged and built again (the file is to be rewritten)

    # -- building ---------------------------------------------------------------------------------

    @classmethod
    def build(cls, rows: list[Any], vectors: np.ndarray, terms: Callable[[list[str]], np.ndarray], *,
              centre_min: int) -> VectorIndex:
        """An index of ``rows`` (adapter id, _, tags text, filter tokens) and their float32 ``vectors``;
        ``terms`` embeds tag names."""
        import numpy as np

        n, dim = len(rows), int(vectors.shape[1])
        mean = vectors.mean(axis=0) if n >= centre_min else np.zeros(dim, np.float32)
        index = cls(dim, mean.astype(np.float32), n)
        if not n:
            return index
        index.matrix = normalised(vectors - index.mean).astype(np.float32, copy=False)
        index.ids = np.fromiter((int(r[0]) for r in rows), np.int64, n)
        index.alive = np.ones(n, bool)
        index.n = index.live = n
        facets: dict[str, list[int]] = {}
        tags: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            if r[3]:
                for token in r[3].split():
                    found = facets.get(token)
                    if found is None:
                        facets[token] = [i]
                    else:
                        found.append(i)
            if r[2]:
                for tag in T.lines(r[2]):
                    found = tags.get(tag)
                    if found is None:
                        tags[tag] = [i]
                    else:
                        found.append(i)
        tags.pop("", None)
        index.tag_names = list(tags)
        index._post_off, index._post_val = _csr(list(tags.values()))
        index.tag_counts = np.diff(index._post_off)
        index.facet_tokens = list(facets)
        index._facet_off, index._facet_val = _csr(list(facets.values()))
        if index.tag_names:
            index.tag_matrix = np.ascontiguousarray(terms(index.tag_names), np.float32)
        return index

    def build_ann(self, *, threads: int = 0) -> None:
        """Build the graph over the live rows (usearch installed)."""
        import numpy as np

        from .ann import Ann

        rows = np.flatnonzero(self.alive[: self.n])
        self.ann = Ann.build(self.matrix[rows], rows, threads=threads)
        self._ann_source = None
        self.forget()

    def ensure_ann(self) -> Any:
        """The graph: the one in memory, or the cache file's (its digest checked first); None if neither."""
        if self.ann is None and self._ann_source is not None:
            offset, length, digest = self._ann_source
            self._ann_source = None
            self.forget()
            from .ann import Ann

            view = memoryview(self._map)[offset : offset + length]
            loaded = None
            if _digest(view) == digest:
                try:
                    loaded = Ann.load(view)
                except Exception as exc:  # noqa: BLE001 - e.g. written by another usearch version
                    log.warning("semantic: the graph in the vector cache file does not load (%s)", exc)
            if loaded is None:
                log.warning("semantic: the graph in the vector cache file is damaged; rebuilding it")
                self.build_ann()
                self.graph_rebuilt = True
            else:
                self.ann = loaded
        return self.ann

    # -- rows, tags, filter tokens -----------------------------------------------------------------

    def row_of(self) -> dict[int, int]:
        if self._row_of is None:
            import numpy as np

            live = np.flatnonzero(self.alive[: self.n])
            self._row_of = dict(zip(self.ids[live].tolist(), live.tolist(), strict=True))
        return self._row_of

    def posting(self, t: int) -> np.ndarray:
        """Rows (live or dead) carrying tag ``t``."""
        found = self._post_extra.get(t)
        if found is not None:
            return found
        if t + 1 < len(self._post_off):
            return self._post_val[self._post_off[t] : self._post_off[t + 1]]
        import numpy as np

        return np.zeros(0, np.int32)

    def facet(self, token: str) -> np.ndarray:
        """Rows (live or dead) carrying filter token ``token``."""
        import numpy as np

        found = self._facet_extra.get(token)
        if found is not None:
            return found
        if self._facet_pos is None:
            self._facet_pos = {t: i for i, t in enumerate(self.facet_tokens)}
        i = self._facet_pos.get(token)
        if i is None:
            return np.zeros(0, np.int32)
        return self._facet_val[self._facet_off[i] : self._facet_off[i + 1]]

    def has_private(self) -> bool:
        """Whether a live row carries the private filter token (``T.F_PRIVATE``)."""
        rows = self.facet(T.F_PRIVATE)
        return bool(len(rows)) and bool(self.alive[rows].any())

    # -- changes --------------------------------------------------------------------------------

    def remove(self, adapter_ids: list[int]) -> int:
        """Mark the rows of ``adapter_ids`` dead; how many were found."""
        import numpy as np

        row_of = self.row_of()
        rows = [row_of.pop(a) for a in adapter_ids if a in row_of]
        if not rows:
            return 0
        self.forget()
        if not self.alive.flags.writeable:
            self.alive = self.alive.copy()
        self.alive[rows] = False
        self.live -= len(rows)
        if self.ensure_ann() is not None:
            self.ann = self.ann.writable()
            self.ann.remove(np.asarray(rows, np.int64))
        self.changes_since_file += len(rows)
        return len(rows)

    def add(self, rows: list[Any], vectors: np.ndarray, terms: Callable[[list[str]], np.ndarray]) -> None:
        """Add (or replace) ``rows`` (adapter id, _, tags text, filter tokens) with their float32 vectors."""
        import numpy as np

        if not rows:
            return
        self.forget()
        self.remove([int(r[0]) for r in rows])
        k = len(rows)
        centred = normalised(vectors - self.mean).astype(np.float32)
        if self.n + k > len(self.matrix) or not self.matrix.flags.writeable:
            cap = max(self.n + k, 2 * len(self.matrix), 1024)
            self.matrix = _grown(self.matrix, self.n, (cap, self.dim), np.float32)
            self.ids = _grown(self.ids, self.n, (cap,), np.int64)
            self.alive = _grown(self.alive, self.n, (cap,), bool)
        elif not self.alive.flags.writeable:
            self.alive = self.alive.copy()
        pos = np.arange(self.n, self.n + k)
        self.matrix[pos] = centred
        self.ids[pos] = [int(r[0]) for r in rows]
        self.alive[pos] = True
        row_of = self.row_of()
        for i, r in enumerate(rows):
            row_of[int(r[0])] = self.n + i
        if self._tag_pos is None:
            self._tag_pos = {t: i for i, t in enumerate(self.tag_names)}
        new_tags: list[str] = []
        tag_rows: dict[int, list[int]] = {}
        facet_rows: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            p = self.n + i
            for tag in T.lines(r[2]):
                t = self._tag_pos.get(tag)
                if t is None:
                    t = self._tag_pos[tag] = len(self.tag_names)
                    self.tag_names.append(tag)
                    new_tags.append(tag)
                tag_rows.setdefault(t, []).append(p)
            for token in (r[3] or "").split():
                facet_rows.setdefault(token, []).append(p)
        if new_tags:
            self.tag_matrix = np.concatenate([self.tag_matrix, np.asarray(terms(new_tags), np.float32)])
            self.tag_counts = np.concatenate([self.tag_counts, np.zeros(len(new_tags), np.int64)])
        elif not self.tag_counts.flags.writeable:
            self.tag_counts = self.tag_counts.copy()
        for t, ps in tag_rows.items():
            self._tag_masks.pop(t, None)
            self._post_extra[t] = np.concatenate([self.posting(t), np.asarray(ps, np.int32)])
            self.tag_counts[t] += len(ps)
        for token, ps in facet_rows.items():
            self._facet_extra[token] = np.concatenate([self.facet(token), np.asarray(ps, np.int32)])
        self.n += k
        self.live += k
        if self.ensure_ann() is not None:
            self.ann = self.ann.writable()
            self.ann.add(pos, centred)
        self.changes_since_file += k

    # -- searching -------------------------------------------------------------------------------

    def _tag_bonus(self, q: np.ndarray) -> list[tuple[int, float]]:
        """(tag, similarity) of the query's nearest tags that add a bonus."""
        import numpy as np

        if not len(self.tag_matrix):
            return []
        sims = np.einsum("ij,j->i", self.tag_matrix, q)
        sims = np.where(self.tag_counts[: len(sims)] >= MIN_TAG_COUNT, sims, -1.0)
        k = min(TAG_NEIGHBOURS, len(sims))
        nearest = np.argpartition(-sims, k - 1)[:k]
        return [(int(t), float(sims[t])) for t in nearest if sims[t] > 0]

    def _bonus(self, near: list[tuple[int, float]]) -> np.ndarray | None:
        """Each row's tag bonus (before :data:`TAG_WEIGHT`): the similarity of its best tag among ``near``."""
        import numpy as np

        if not near:
            return None
        bonus = np.zeros(self.n, np.float32)
        for t, sim in near:
            p = self.posting(t)
            bonus[p] = np.maximum(bonus[p], sim)
        return bonus

    def _score(self, rows: np.ndarray | None, qc: np.ndarray, near: list[tuple[int, float]]) -> np.ndarray:
        """Scores of ``rows`` (None: rows ``[:n]``, dead ones at -inf): cosine + the tag bonus."""
        import numpy as np

        # einsum, not BLAS: OpenBLAS's threads for one small product cost more than the product on a busy machine
        if rows is None:
            bonus = self._bonus(near)
            s = np.einsum("ij,j->i", self.matrix[: self.n], qc)
            s[~self.alive[: self.n]] = -np.inf
            return s if bonus is None else s + TAG_WEIGHT * bonus
        if len(rows) * GATHER_SHARE > self.n:
            # the product over every row, then the rows': gathering a large share of the matrix into a new
            # array costs several times the product (60k of 100k rows: 28 against 6 ms)
            s = np.einsum("ij,j->i", self.matrix[: self.n], qc)[rows]
        else:
            s = np.einsum("ij,j->i", self.matrix[rows], qc)
        if near:  # candidates only: what they cost does not grow with the registry
            bonus = np.zeros(len(rows), np.float32)
            for t, sim in near:
                bonus = np.where(self._tag_member(t, rows), np.maximum(bonus, sim), bonus)
            s = s + TAG_WEIGHT * bonus
        return s

    def _tag_member(self, t: int, rows: np.ndarray) -> np.ndarray:
        """Which of ``rows`` carry tag ``t``: a search of a small tag's rows, a cached mask of a large tag's."""
        import numpy as np

        p = self.posting(t)
        if len(p) <= POSTING_EXACT:
            # a shared all-False mask: set the tag's rows, read the candidates, clear it again (no sort, as
            # np.isin does)
            scratch = self._scratch
            if scratch is None or len(scratch) < self.n:
                scratch = self._scratch = np.zeros(self.n, bool)
            scratch[p] = True
            out = scratch[rows]
            scratch[p] = False
            return out
        mask = self._tag_masks.get(t)
        if mask is None or len(mask) < self.n:
            if len(self._tag_masks) >= _TAG_MASKS:
                self._tag_masks.pop(next(iter(self._tag_masks)))
            mask = np.zeros(self.n, bool)
            mask[p] = True
            self._tag_masks[t] = mask
        return mask[rows]

    def _facet_mask(self, facets: list[str]) -> np.ndarray | None:
        """Live rows carrying every filter token of ``facets`` (a boolean mask over rows ``[:n]``)."""
        import numpy as np

        if not facets:
            return None
        keep = self.alive[: self.n].copy()
        for token in facets:
            mask = np.zeros(self.n, bool)
            mask[self.facet(token)] = True
            keep &= mask
        return keep

    def top(self, q: np.ndarray, depth: int, allowed: Callable[[list[int]], set[int]] | None, facets: list[str], *,
            floor_of: Callable[[float], float], use_ann: bool) -> list[tuple[int, float]]:
        """The best ``depth`` (adapter id, score) pairs above ``floor_of(best score)`` that ``allowed``
        keeps (None: every live row), best first; ``q`` is the query's normalised vector (not centred).

        What does not depend on ``allowed`` (the query's nearest tags, the candidates and their scores) is
        kept per (query vector, filters, graph or not) for the next search of the same words, up to
        :data:`MEMO_BYTES`, until the index changes (:meth:`forget`); ``allowed`` (the filters and the
        viewer's visibility in SQL) is asked every time."""

        if not self.live:
            return []
        key = (q.tobytes(), tuple(facets), bool(use_ann))
        memo = self._memo.get(key)
        if memo is None:
            memo = self._prepare(q, facets, use_ann)
            self._remember(key, memo)
        else:
            self._memo.move_to_end(key)
        k = max(ANN_CANDIDATES, 4 * depth)
        if memo.kept:
            k = max(k, int(k * self.live / memo.kept))  # as many candidates that pass the filters
        while True:
            step = memo.steps.get(k)
            if step is None:
                step = self._candidates(memo, k)
                if len(step.scores) <= MEMO_MAX_ROWS and key in self._memo:
                    memo.steps[k] = step
                    self._memo_bytes += step.nbytes
                    self._trim()
            s = step.scores
            floor = floor_of(step.best)
            out, exhausted = _walk(step.ids, s, depth, allowed, floor)
            # Done when exact, or when no row left out could rank: the last one kept (or the floor, when
            # fewer were kept and every candidate was looked at) scores at least the bound.
            bound = step.bound
            if step.exact or (len(out) >= depth and out[-1][1] >= bound) or (
                    len(out) < depth and (not exhausted or floor >= bound)):
                return out
            k *= 4

    def _prepare(self, q: np.ndarray, facets: list[str], use_ann: bool) -> _Memo:
        """What a query's search needs whatever the depth: its centred vector, nearest tags, the filters' row
        count, the graph, the first number of candidates."""
        import numpy as np

        qc = normalised(q - self.mean)
        near = self._tag_bonus(q)
        keep = self._facet_mask(facets)  # rows every filter token keeps
        kept = None if keep is None else int(np.count_nonzero(keep))
        ann = self.ensure_ann() if use_ann else None
        # The most a row left out of the candidates can add by a tag: its tag's rows were not all scored.
        unscored_bonus = max((TAG_WEIGHT * sim for t, sim in near if len(self.posting(t)) > POSTING_EXACT), default=0.0)
        return _Memo(qc=qc, near=near, facets=list(facets), kept=kept, ann=ann is not None, unscored_bonus=unscored_bonus,
                     nbytes=int(qc.nbytes) + len(facets) * 64 + 256)

    def _candidates(self, memo: _Memo, k: int) -> _Step:
        """The rows scored for ``k`` candidates asked of the graph (all rows, or the filters', when exact)."""
        import numpy as np

        keep = self._facet_mask(memo.facets)
        qc, near = memo.qc, memo.near
        ann = self.ann if memo.ann else None
        bound = -np.inf  # the best score a row outside the candidates can have (approximately)
        exact = (ann is None or k >= self.live // 4 or (
            memo.kept is not None and memo.kept <= max(FILTERED_EXACT, FILTERED_EXACT_PER_CANDIDATE * k)))
        if exact:
            rows = None if keep is None else np.flatnonzero(keep)
        else:
            found = ann.search(qc, k)
            if len(found):
                bound = float(np.einsum("j,j->", self.matrix[found[-1]], qc)) + memo.unscored_bonus
            mask = np.zeros(self.n, bool)
            mask[found] = True
            for t, _ in near:
                p = self.posting(t)
                if len(p) <= POSTING_EXACT:
                    mask[p] = True
            mask &= self.alive[: self.n] if keep is None else keep
            rows = np.flatnonzero(mask)
        s = self._score(rows, qc, near)
        ids = self.ids[: self.n] if rows is None else self.ids[rows]
        return _Step(ids=ids, scores=s, best=float(s.max()) if len(s) else 0.0, bound=bound, exact=exact)

    def _remember(self, key: tuple[Any, ...], memo: _Memo) -> None:
        self._memo[key] = memo
        self._memo_bytes += memo.nbytes
        self._trim()

    def _trim(self) -> None:
        while self._memo_bytes > MEMO_BYTES and len(self._memo) > 1:
            _, old = self._memo.popitem(last=False)
            self._memo_bytes -= old.nbytes + sum(st.nbytes for st in old.steps.values())

    # -- the cache file ----------------------------------------------------------------------------

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        """Write the index to ``path`` (atomically: a temporary file renamed over it)."""
        import numpy as np

        n = self.n
        tags = [self.posting(t) for t in range(len(self.tag_names))]
        post_off, post_val = _csr(tags)
        if self._facet_pos is None:
            self._facet_pos = {t: i for i, t in enumerate(self.facet_tokens)}
        tokens = self.facet_tokens + [t for t in self._facet_extra if t not in self._facet_pos]
        facet_off, facet_val = _csr([self.facet(t) for t in tokens])
        arrays: dict[str, Any] = {
            "matrix": np.ascontiguousarray(self.matrix[:n]), "ids": self.ids[:n], "alive": self.alive[:n],
            "mean": self.mean.astype(np.float32), "tag_matrix": self.tag_matrix,
            "tag_counts": self.tag_counts[: len(self.tag_names)], "post_off": post_off, "post_val": post_val,
            "facet_off": facet_off, "facet_val": facet_val,
        }
        ann = self.ensure_ann()
        if ann is not None:
            arrays["ann"] = np.frombuffer(ann.to_bytes(), np.uint8)
        places: dict[str, list[Any]] = {}
        digests: dict[str, str] = {}
        offset = 0
        for name, arr in arrays.items():
            arr = np.ascontiguousarray(arr)
            arrays[name] = arr
            places[name] = [offset, int(arr.nbytes), str(arr.dtype), list(arr.shape)]
            offset += -(-int(arr.nbytes) // _ALIGN) * _ALIGN
            digests[name] = _sample_digest(_bytes(arr)) if name == "matrix" else _digest(_bytes(arr))
        header = dict(meta, format=FORMAT, dim=self.dim, n=n, live=self.live, built_n=self.built_n,
                      generation=self.generation, places=places, digests=digests, tag_names=self.tag_names,
                      facet_tokens=tokens)
        raw = json.dumps(header, separators=(",", ":")).encode()
        head_len = len(MAGIC) + 8 + 32 + len(raw)
        start = -(-head_len // _ALIGN) * _ALIGN
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(MAGIC + struct.pack("<Q", len(raw)) + bytes.fromhex(_digest(raw)) + raw)
                f.write(b"\0" * (start - head_len))
                for arr in arrays.values():
                    f.write(_bytes(arr))
                    f.write(b"\0" * (-int(arr.nbytes) % _ALIGN))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        self.changes_since_file = 0

    @classmethod
    def open(cls, path: Path, expect: dict[str, Any]) -> VectorIndex:
        """The index in the cache file ``path``, mapped (copy on write); BadCacheFile when the file is
        damaged, of another format, or not made for ``expect`` (model, version, dimension)."""
        import numpy as np

        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < len(MAGIC) + 40:
                raise BadCacheFile("too short")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        if mm[: len(MAGIC)] != MAGIC:
            raise BadCacheFile("not a lorahub vector file")
        (hlen,) = struct.unpack("<Q", mm[len(MAGIC) : len(MAGIC) + 8])
        body = len(MAGIC) + 40
        if hlen > min(size - body, _MAX_HEADER):
            raise BadCacheFile("header length")
        raw = mm[body : body + hlen]
        if _digest(raw) != mm[len(MAGIC) + 8 : body].hex():
            raise BadCacheFile("header digest")
        try:
            header = json.loads(raw)
        except ValueError as exc:
            raise BadCacheFile("header") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise BadCacheFile("format")
        for key, value in expect.items():
            if header.get(key) != value:
                raise BadCacheFile(f"made for another {key}")
        start = -(-(body + hlen) // _ALIGN) * _ALIGN
        places, digests = header.get("places"), header.get("digests")
        if not isinstance(places, dict) or not isinstance(digests, dict) or set(places) - set(_DTYPES):
            raise BadCacheFile("places")
        arrays: dict[str, Any] = {}
        try:
            dim, n = int(header["dim"]), int(header["n"])
            for name, (offset, nbytes, dtype, shape) in places.items():
                offset, nbytes = int(offset), int(nbytes)
                shape = tuple(int(x) for x in shape)
                if dtype != _DTYPES[name] or offset < 0 or offset % _ALIGN or start + offset + nbytes > size:
                    raise BadCacheFile(f"place of {name}")
                count = int(np.prod(shape)) if shape else 1
                if count * np.dtype(dtype).itemsize != nbytes or min(shape, default=0) < 0:
                    raise BadCacheFile(f"shape of {name}")
                view = memoryview(mm)[start + offset : start + offset + nbytes]
                if name == "ann":
                    arrays[name] = (start + offset, nbytes, str(digests.get(name)))
                    continue
                check = _sample_digest(view) if name == "matrix" else _digest(view)
                if check != digests.get(name):
                    raise BadCacheFile(f"digest of {name}")
                arrays[name] = np.frombuffer(mm, dtype, count, start + offset).reshape(shape)
            tags, tokens = header["tag_names"], header["facet_tokens"]
            if not (isinstance(tags, list) and isinstance(tokens, list) and all(isinstance(t, str) for t in tags)
                    and all(isinstance(t, str) for t in tokens)):
                raise BadCacheFile("names")
            shapes_ok = (arrays["matrix"].shape == (n, dim) and arrays["ids"].shape == (n,)
                         and arrays["alive"].shape == (n,) and arrays["mean"].shape == (dim,)
                         and arrays["tag_matrix"].shape == (len(tags), dim) and arrays["tag_counts"].shape == (len(tags),)
                         and arrays["post_off"].shape == (len(tags) + 1,) and arrays["facet_off"].shape == (len(tokens) + 1,))
            if not shapes_ok:
                raise BadCacheFile("shapes")
            for off, val in (("post_off", "post_val"), ("facet_off", "facet_val")):
                o, v = arrays[off], arrays[val]
                if o[0] != 0 or o[-1] != len(v) or (len(o) > 1 and np.any(np.diff(o) < 0)) or (len(v) and (
                        v.min() < 0 or v.max() >= n)):
                    raise BadCacheFile(f"rows of {off}")
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, BadCacheFile):
                raise
            raise BadCacheFile(f"header: {exc}") from exc
        index = cls(dim, arrays["mean"], int(header.get("built_n") or n))
        index._map = mm
        index.matrix, index.ids, index.alive = arrays["matrix"], arrays["ids"], arrays["alive"]
        index.n, index.live = n, int(np.count_nonzero(index.alive))
        index.tag_names, index.tag_matrix, index.tag_counts = list(tags), arrays["tag_matrix"], arrays["tag_counts"]
        index._post_off, index._post_val = arrays["post_off"], arrays["post_val"]
        index.facet_tokens, index._facet_off, index._facet_val = list(tokens), arrays["facet_off"], arrays["facet_val"]
        index._ann_source = arrays.get("ann")
        index.generation = int(header["generation"])
        return index

    def drop_graph(self) -> None:
        """Forget the graph (in memory or in the file): exact search until :meth:`build_ann`."""
        self.ann = None
        self._ann_source = None
        self.forget()

    def forget(self) -> None:
        """Drop the scored candidates kept for repeated queries (:meth:`top`): the rows, their vectors, tags or
        filter tokens, or the graph changed. Every change of the index calls it."""
        self._memo.clear()
        self._memo_bytes = 0

    def has_graph(self) -> bool:
        return self.ann is not None or self._ann_source is not None


def _bytes(arr: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array, without a copy (an empty array: none)."""
    return memoryview(arr.reshape(-1)).cast("B") if arr.nbytes else memoryview(b"")


def _grown(arr: np.ndarray, n: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    import numpy as np

    out = np.zeros(shape, dtype)
    out[:n] = arr[:n]
    return out


@dataclass
class _Step:
    """The candidates of one graph search (or every row), scored: adapter ids, scores, the best score, the
    bound on what a row left out can score, and whether it was exact."""

    ids: np.ndarray
    scores: np.ndarray
    best: float
    bound: float
    exact: bool

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.scores.nbytes) + 128


@dataclass
class _Memo:
    """A query's search state at one index state: see :meth:`VectorIndex.top`."""

    qc: np.ndarray
    near: list[tuple[int, float]]
    facets: list[str]
    kept: int | None
    ann: bool
    unscored_bonus: float
    nbytes: int
    steps: dict[int, _Step] = field(default_factory=dict)


def _walk(ids: np.ndarray, s: np.ndarray, depth: int, allowed: Callable[[list[int]], set[int]] | None,
          floor: float) -> tuple[list[tuple[int, float]], bool]:
    """The best ``depth`` of (``ids``, ``s``) above ``floor`` that ``allowed`` keeps (None: all), checked best
    first in growing chunks; and whether every candidate was looked at."""
    import numpy as np

    out: list[tuple[int, float]] = []
    start, step, n = 0, depth + 16, len(s)
    while len(out) < depth and start < n:
        k = min(n, start + step)
        part = np.argpartition(-s, k - 1)[:k] if k < n else np.arange(n)
        part = part[s[part] > floor]
        chunk = part[np.lexsort((-ids[part], -s[part]))][start:]
        if not len(chunk):
            return out[:depth], True
        got = ids[chunk].tolist()
        if allowed is None:
            out.extend(zip(got, s[chunk].tolist(), strict=True))
        else:
            keep = allowed(got)
            out.extend((aid, score) for aid, score in zip(got, s[chunk].tolist(), strict=True) if aid in keep)
        start = k
        step *= 4
    return out[:depth], start >= n


def _digest(data: Any) -> str:
    import blake3

    return blake3.blake3(data).hexdigest()


def _sample_digest(data: memoryview) -> str:
    """BLAKE3 of every :data:`_SAMPLE_EVERY`-th block of ``data`` and of its last block."""
    import blake3

    h = blake3.blake3()
    size = len(data)
    for start in range(0, size, _SAMPLE_BLOCK * _SAMPLE_EVERY):
        h.update(data[start : start + _SAMPLE_BLOCK])
    if size:
        h.update(data[max(0, size - _SAMPLE_BLOCK) :])
    h.update(struct.pack("<Q", size))
    return h.hexdigest()


__all__ = ["ANN_CANDIDATES", "ANN_MIN_ROWS", "BadCacheFile", "POSTING_EXACT", "VectorIndex", "normalised"]
