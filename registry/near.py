"""Near-duplicates by what adapters do: ``lorahub dupes --near`` and ``lorahub search --like FILE``.

Both read the ΔW sketches stored on index (table ``adapter_sketches``, :mod:`lorahub.adapters.sketch`) on a
:class:`~lorahub.registry.database.Raw` reader (no SQLAlchemy, no ORM), in two steps:

1. **candidates** from the 64-value adapter-wide vectors alone: every pair whose vectors' cosine is at least
   :data:`CANDIDATE` (an exact matrix product, block by block, up to :data:`EXACT_LIMIT` sketches; above it,
   locality-sensitive hashing: :data:`BANDS` bands of :data:`BITS` random-hyperplane signs, pairs that
   share a band's key). Independent adapters' vectors have a cosine near 0 (standard deviation about 1/8); a copy,
   re-save, conversion or rank cut near 1; a module subset ``sqrt(share of the energy it keeps)``;
2. **verification** of each candidate with the whole sketches: :func:`lorahub.adapters.sketch.compare`
   (cosine over the common modules weighted by energy) at least ``threshold``, and one adapter's modules
   holding at least :data:`COVERED` of the other's energy.

With hashing (over :data:`EXACT_LIMIT` sketches) a pair whose vector cosine is 0.87 (a subset keeping 75% of
the energy) is a candidate with probability 0.9999, one at 0.8 0.97, one at 0.7 (half the energy) 0.64
(``1 - (1 - (1 - acos(c)/pi)^BITS)^BANDS``); in a group, a member needs only one such link. Two unrelated adapters share a band's key
with probability about ``2^-BITS`` per band: a few million pairs to check at 100k sketches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lorahub.adapters import sketch as sk

if TYPE_CHECKING:  # pragma: no cover
    from lorahub.schemas.registry import NearGroup, NearMember

    from .database import Raw

#: Vector cosine from which a pair is verified with the whole sketches.
CANDIDATE = 0.5
#: A pair is a near-duplicate when one adapter's modules hold this share of the other's energy.
COVERED = 0.95
#: Default similarity threshold of ``dupes --near``.
DEFAULT_THRESHOLD = 0.8
#: ``search --like``: matches below this similarity are not shown.
LIKE_FLOOR = 0.5
#: Up to this many sketches, candidates come from the exact all-pairs product.
EXACT_LIMIT = 20_000
#: Hashing: BANDS bands of BITS random-hyperplane signs each (independent hyperplanes for every band).
BANDS = 264
BITS = 19
_PER_DRAW = 12
_BLOCK = 2048
_MAX_RUN = 256  # a hash bucket larger than this is left out (degenerate vectors)
#: Picks (:func:`lorahub.adapters.sketch.picks`): a picked module's unit sketch is keyed by the bins of
#: PICK_PROJECTIONS random projections, PICK_BIN wide (a copy's unit sketch is the same to fp16 rounding:
#: it shares all bins with probability about 0.98; two unrelated ones share each bin with probability
#: about 0.07); a pair is a candidate when it shares PICK_MATCHES buckets, or one and its vectors' cosine
#: is at least PICK_FLOOR.
PICK_PROJECTIONS = 6
PICK_BIN = 0.25
PICK_MATCHES = 2
PICK_FLOOR = 0.25
_DTYPE_WIDTH = {"float64": 4, "float32": 3, "bfloat16": 2, "float16": 1}


@dataclass
class Entry:
    adapter_id: int
    sha256: str
    facts: sk.Facts
    modules: int


@dataclass
class Loaded:
    """What ``dupes --near`` reads of every sketch: the entries, their vectors and their picks."""

    entries: list[Entry]
    vectors: np.ndarray  # float32 [n, VECTOR_DIM]
    pick_hashes: np.ndarray  # uint32 [n, PICKS] (zeros: none)
    pick_units: np.ndarray  # float16 [n, PICKS, K*K]


def _load(raw: Raw, viewer: int | None) -> Loaded:
    from .lookups import _visibility

    params: dict[str, Any] = {"version": sk.VERSION, "true": True}
    cond = _visibility(viewer, params)
    rows = raw.all(
        "SELECT f.adapter_id, f.sha256, f.format, f.dtype, f.rank, f.tensor_sha256, s.modules, s.vector "
        "FROM adapter_files f JOIN adapters a ON a.id = f.adapter_id JOIN adapter_sketches s ON s.sha256 = f.sha256 "
        f"WHERE f.is_primary = :true AND s.version = :version AND {cond} ORDER BY f.adapter_id",
        params,
    )
    n = len(rows)
    entries: list[Entry] = []
    vectors = np.zeros((n, sk.VECTOR_DIM), dtype=np.float32)
    hashes = np.zeros((n, sk.PICKS), dtype=np.uint32)
    units = np.zeros((n, sk.PICKS, sk.K * sk.K), dtype=np.float16)
    for i, r in enumerate(rows):
        entries.append(Entry(r[0], r[1], sk.Facts(r[2], r[3], r[4], r[5]), r[6]))
        vec, ph, pu = sk.summary_parts(bytes(r[7]))
        vectors[i] = vec
        if ph is not None:  # every row of the current sketch version has its picks
            hashes[i], units[i] = ph, pu
    return Loaded(entries, vectors, hashes, units)


def candidate_pairs(vectors: np.ndarray, floor: float = CANDIDATE, *, exact_limit: int = EXACT_LIMIT,
                    pick_hashes: np.ndarray | None = None, pick_units: np.ndarray | None = None) -> np.ndarray:
    """``[m, 2]`` index pairs ``i < j`` to verify (see the module doc): those whose unit vectors' cosine is at
    least ``floor``, and, given the picks, those that agree on :data:`PICK_MATCHES` picks or on one and have a
    vector cosine of at least :data:`PICK_FLOOR`."""
    n = vectors.shape[0]
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    if n <= exact_limit:
        out = []
        for start in range(0, n, _BLOCK):
            block = vectors[start : start + _BLOCK] @ vectors.T
            i, j = np.nonzero(block >= floor)
            i = i + start
            keep = j > i
            out.append(np.stack([i[keep], j[keep]], axis=1))
        pairs = np.concatenate(out).astype(np.int64)
    else:
        pairs = _hashed_pairs(vectors, floor)
    if pick_hashes is not None and pick_units is not None:
        pairs = _union(n, pairs, _picked_pairs(vectors, pick_hashes, pick_units))
    return pairs


def _codes(n: int, pairs: np.ndarray) -> np.ndarray:
    return pairs[:, 0].astype(np.int64) * n + pairs[:, 1]


def _distinct(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted distinct codes, how often each occurs)`` (a sort: numpy's hash-based ``unique`` takes
    seconds on millions of int64)."""
    codes = np.sort(codes)
    if not codes.size:
        return codes, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], codes[1:] != codes[:-1]]))
    return codes[starts], np.diff(np.concatenate([starts, [codes.size]]))


def _union(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    codes = _distinct(np.concatenate([_codes(n, a), _codes(n, b)]))[0]
    return np.stack([codes // n, codes % n], axis=1)


def _bucket_pairs(keys: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """``[m, 2]`` pairs of ``owners`` whose ``keys`` are equal (buckets over :data:`_MAX_RUN` are left out),
    sorted within a pair, not deduplicated."""
    order = np.argsort(keys)
    k = keys[order]
    edges = np.flatnonzero(k[1:] != k[:-1]) + 1
    starts = np.concatenate([[0], edges])
    lengths = np.diff(np.concatenate([starts, [k.size]]))
    found = [np.zeros((0, 2), dtype=np.int64)]
    for length in np.flatnonzero(np.bincount(lengths)):
        if length < 2 or length > _MAX_RUN:
            continue
        st = starts[lengths == length]
        a, b = np.triu_indices(int(length), 1)
        members = owners[order[st[:, None] + np.arange(length)[None, :]]]  # [runs, length]
        x, y = members[:, a].ravel(), members[:, b].ravel()
        found.append(np.stack([np.minimum(x, y), np.maximum(x, y)], axis=1))
    return np.concatenate(found)


def _picked_pairs(vectors: np.ndarray, hashes: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Pairs that picked one module with the same bins of its unit sketch (:data:`PICK_PROJECTIONS` random
    projections in bins :data:`PICK_BIN` wide), for :data:`PICK_MATCHES` picks or more, or for one with a
    vector cosine of at least :data:`PICK_FLOOR`."""
    n, t = hashes.shape
    live = np.nonzero(hashes.any(axis=1))[0]
    if live.size < 2:
        return np.zeros((0, 2), dtype=np.int64)
    rng = np.random.default_rng(0x91C5)
    planes = rng.standard_normal((units.shape[2], PICK_PROJECTIONS)).astype(np.float32)
    offsets = rng.uniform(0, 1, PICK_PROJECTIONS).astype(np.float32)
    bins = np.floor((units[live].astype(np.float32) @ planes) / PICK_BIN + offsets).astype(np.int64)
    bins = np.clip(bins + 16, 0, 31)  # [live, t, PICK_PROJECTIONS], 5 bits each
    code = (bins << (5 * np.arange(PICK_PROJECTIONS, dtype=np.int64))).sum(axis=2)  # < 2^30
    # one key per (pick function, module, bins): the function and 28 bits of the module's hash, the bins
    module = (hashes[live].astype(np.int64) & 0x0FFFFFFF) * t + np.arange(t, dtype=np.int64)[None, :]
    keys = (module << (5 * PICK_PROJECTIONS)) | code
    owners = np.repeat(live, t)
    pairs = _bucket_pairs(keys.ravel(), owners)
    if not len(pairs):
        return pairs
    codes, counts = _distinct(_codes(n, pairs))
    pairs = np.stack([codes // n, codes % n], axis=1)
    cos = np.einsum("ij,ij->i", vectors[pairs[:, 0]], vectors[pairs[:, 1]])
    return pairs[(counts >= PICK_MATCHES) | (cos >= PICK_FLOOR)]


def _hashed_pairs(vectors: np.ndarray, floor: float) -> np.ndarray:
    n = vectors.shape[0]
    rng = np.random.default_rng(0x5EED)
    live = np.nonzero(np.abs(vectors).sum(axis=1) > 0)[0]
    lv = vectors[live]
    pow2 = (2.0 ** np.arange(BITS)).astype(np.float32)  # keys up to 2^BITS are exact in float32
    found: list[np.ndarray] = [np.zeros((0, 2), dtype=np.int64)]
    for first in range(0, BANDS, _PER_DRAW):
        count = min(_PER_DRAW, BANDS - first)
        planes = rng.standard_normal((vectors.shape[1], count * BITS)).astype(np.float32)
        bits = ((lv @ planes) > 0).astype(np.float32).reshape(len(live), count, BITS)
        keys = np.ascontiguousarray((bits @ pow2).astype(np.int32).T)  # [count, live]
        for band in range(count):
            found.append(_bucket_pairs(keys[band], live))
    pairs = np.concatenate(found)
    if not len(pairs):
        return pairs
    codes = _distinct(_codes(n, pairs))[0]
    pairs = np.stack([codes // n, codes % n], axis=1)
    keep = np.zeros(len(pairs), dtype=bool)
    for start in range(0, len(pairs), 1 << 20):
        p = pairs[start : start + (1 << 20)]
        keep[start : start + len(p)] = np.einsum("ij,ij->i", vectors[p[:, 0]], vectors[p[:, 1]]) >= floor
    return pairs[keep]


def _sketches(raw: Raw, shas: list[str]) -> dict[str, sk.Sketch]:
    from .database import chunks

    out: dict[str, sk.Sketch] = {}
    for part in chunks(sorted(set(shas))):
        for r in raw.all("SELECT sha256, data FROM adapter_sketches WHERE sha256 IN :keys", {"keys": list(part)}):
            try:
                out[r[0]] = sk.Sketch.from_bytes(bytes(r[1]))
            except sk.SketchError:
                continue
    return out


def _rank_key(e: Entry) -> tuple[Any, ...]:
    f = e.facts
    return (-e.modules, -(f.rank or 0), -_DTYPE_WIDTH.get(f.dtype or "", 0), e.adapter_id)


def _member(result: Any, e: Entry, cmp: sk.Comparison | None, ref: Entry | None) -> NearMember:
    from lorahub.schemas.registry import NearMember

    if cmp is None or ref is None:
        return NearMember(adapter=result, dtype=e.facts.dtype, similarity=1.0, relations=[], scale=1.0, coverage=1.0)
    return NearMember(
        adapter=result,
        dtype=e.facts.dtype,
        similarity=round(cmp.similarity, 4),
        relations=sk.relations(cmp, ref.facts, e.facts),
        scale=round(cmp.scale, 4),
        coverage=round(min(1.0, cmp.covered), 4),
    )


def near_dupes(raw: Raw, threshold: float = DEFAULT_THRESHOLD, viewer: int | None = None, *,
               exact_limit: int = EXACT_LIMIT) -> list[NearGroup]:
    """Groups of adapters whose ΔW agree (see the module doc), biggest groups first."""
    from lorahub.schemas.registry import NearGroup

    from .lookups import results_for

    loaded = _load(raw, viewer)
    entries = loaded.entries
    pairs = candidate_pairs(loaded.vectors, min(CANDIDATE, threshold), exact_limit=exact_limit,
                            pick_hashes=loaded.pick_hashes, pick_units=loaded.pick_units)
    if not len(pairs):
        return []
    sketches = _sketches(raw, [entries[i].sha256 for i in np.unique(pairs)])
    parent = list(range(len(entries)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs.tolist():
        a, b = sketches.get(entries[i].sha256), sketches.get(entries[j].sha256)
        if a is None or b is None:
            continue
        cmp = sk.compare(a, b)
        if cmp.similarity >= threshold and cmp.covered >= COVERED:
            parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in np.unique(pairs).tolist():
        groups.setdefault(find(i), []).append(i)
    out: list[tuple[list[Entry], list[sk.Comparison | None]]] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        es = sorted((entries[i] for i in members), key=_rank_key)
        ref = sketches[es[0].sha256]
        out.append((es, [None] + [sk.compare(ref, sketches[e.sha256]) for e in es[1:]]))
    out.sort(key=lambda g: (-len(g[0]), g[0][0].adapter_id))
    results = {r.id: r for r in results_for(raw, [e.adapter_id for es, _ in out for e in es])}
    groups_out = []
    for es, cmps in out:
        ms = [_member(results[e.adapter_id], e, c, es[0]) for e, c in zip(es, cmps, strict=True) if e.adapter_id in results]
        if len(ms) > 1:
            groups_out.append(NearGroup(reference=ms[0], members=ms[1:]))
    return groups_out


def like(raw: Raw, query: sk.Sketch, facts: sk.Facts, *, limit: int = 20, viewer: int | None = None,
         floor: float = LIKE_FLOOR) -> list[NearMember]:
    """The indexed adapters nearest to the adapter sketched as ``query`` (similarity at least ``floor``)."""
    from .lookups import results_for

    loaded = _load(raw, viewer)
    entries, vectors = loaded.entries, loaded.vectors
    if not entries:
        return []
    q = query.vector.astype(np.float32)
    scores = vectors @ q
    keep = np.nonzero(scores >= min(CANDIDATE, floor) * 0.8)[0]
    keep = keep[np.argsort(-scores[keep], kind="stable")][: max(200, 10 * limit)]
    sketches = _sketches(raw, [entries[i].sha256 for i in keep])
    scored: list[tuple[float, Entry, sk.Comparison]] = []
    for i in keep.tolist():
        s = sketches.get(entries[i].sha256)
        if s is None:
            continue
        cmp = sk.compare(query, s)
        if cmp.similarity >= floor and cmp.covered >= COVERED:
            scored.append((cmp.similarity, entries[i], cmp))
    scored.sort(key=lambda t: (-t[0], t[1].adapter_id))
    scored = scored[:limit]
    results = {r.id: r for r in results_for(raw, [e.adapter_id for _, e, _ in scored])}
    query_entry = Entry(0, "", facts, query.modules)
    return [_member(results[e.adapter_id], e, c, query_entry) for _, e, c in scored if e.adapter_id in results]


__all__ = ["BANDS", "BITS", "CANDIDATE", "COVERED", "DEFAULT_THRESHOLD", "EXACT_LIMIT", "LIKE_FLOOR",
           "candidate_pairs", "like", "near_dupes"]
