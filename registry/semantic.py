"""Semantic search: a sentence embedding of every adapter record, stored in the registry, searched exactly.

The model
---------
WordLlama ``l2_supercat_256`` (the ``wordllama`` package, extra ``lorahub-toolkit[semantic]``): static token
embeddings (32,000 x 256, 16 MB, inside the wheel) with the Llama-2 tokenizer; a text's vector is the mean of
its tokens' vectors. Its files are read straight from the installed package (the package itself is not
imported: it would configure logging and import ``requests``), so nothing is ever downloaded. Why this model
and not a transformer (MiniLM, e5-small): docs/registry.md, "Semantic search".

A record's vector
-----------------
The normalised mean of four field vectors, each normalised first and weighted (:data:`FIELD_WEIGHTS`): the
name (and title), the tags, the trigger words, the first :data:`DESCRIPTION_CHARS` characters of the
description (a Hub repo's card). Stored as float16 with the model's name and version (``MODEL``,
:func:`model_version`: the package's version and :data:`RECIPE`, how fields become one vector). Vectors are
written by :func:`write_embeddings`, which :func:`lorahub.registry.rows.write_adapters` calls for every
record it writes (index, import, push, pull and the server's commits all go through it);
``lorahub registry embed`` (:func:`embed_missing`) fills in what a registry lacks after a model change or
when records were written without the extra.

Searching
---------
Each process keeps, per database, the vectors in one float32 matrix (centred on their mean, normalised) and
reloads only the rows whose ``seq`` grew (one indexed query per search). A query's score against a record is
its cosine plus :data:`TAG_WEIGHT` x the best similarity between the query and one of the record's tags among
the query's :data:`TAG_NEIGHBOURS` nearest tags of the registry's own tag vocabulary: paraphrases reach the
words people tag with ("spooky monsters" -> horror, monster, creature). Exact search over the matrix costs
one matrix-vector product: about 5 ms per 100k records on one core (benchmarks/bench_semantic.py); see
docs/registry.md for 1M records and where an ANN index would take over.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from lorahub.errors import LorahubError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .database import Raw

PACKAGE = "wordllama"
MODEL = "wordllama/l2_supercat_256"
_WEIGHTS = "weights/l2_supercat_256.safetensors"
_TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
#: How a record's fields become one vector; part of the stored version (a change re-embeds).
RECIPE = "lorahub1"
FIELD_WEIGHTS = (("name", 0.5), ("tags", 1.0), ("words", 0.5), ("description", 0.25))
DESCRIPTION_CHARS = 400
MAX_TOKENS = 256
#: Query -> its nearest tags of the registry's vocabulary, and how much a record's matching tag adds.
TAG_NEIGHBOURS = 5
TAG_WEIGHT = 0.5
#: Tags on fewer adapters than this are not among a query's nearest tags (one-off tags are noise).
MIN_TAG_COUNT = 2
#: Least score of a semantic hit (cosine to the query, both centred on the records' mean, + tag bonus):
#: closer to the query than the average record. (No threshold tells gibberish from a paraphrase with static
#: embeddings: hybrid search asks for a query word that occurs in the registry instead, see search.fuse.)
MIN_SCORE = 0.0
#: Hybrid search: records by meaning only with a score of at least this fraction of the best one (0.4: the
#: paraphrase set's P@10 0.78; 0.6 cut it to 0.68); in a registry of fewer than MIN_CENTRE_ROWS records (not
#: centred: every cosine is high) at least UNCENTRED_NEAR_BEST of the best and a cosine of UNCENTRED_FLOOR.
NEAR_BEST = 0.4
UNCENTRED_NEAR_BEST = 0.75
UNCENTRED_FLOOR = 0.3
#: A full reload of the cached matrix after this many seconds (deleted rows, changed tags, a new mean), and
#: whenever the records doubled since the last one.
FULL_RELOAD_S = 3600.0
#: Fewer records than this are not centred on their mean (too few to have a meaningful one).
MIN_CENTRE_ROWS = 100
#: PostgreSQL advisory lock taken by writers of embeddings (``seq`` then grows in commit order).
SEQ_LOCK_KEY = 0x6C68656D62  # "lhemb"

MODES = ("keyword", "semantic", "hybrid")


class SemanticUnavailable(LorahubError):
    """Semantic or hybrid search was asked for where it cannot run (no model, or no vectors): exit code 1."""


def _package_dir() -> str | None:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


@lru_cache(maxsize=1)
def installed() -> bool:
    """Whether the model's package is installed (nothing imported; looked up once per process)."""
    folder = _package_dir()
    return bool(folder) and os.path.isfile(os.path.join(folder, _WEIGHTS))


def model_version() -> str:
    from importlib.metadata import version

    return f"{version(PACKAGE)}+{RECIPE}"


class Embedder:
    """The model: token vectors and tokenizer, read from the installed package."""

    def __init__(self) -> None:
        import numpy as np
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = _package_dir()
        if not folder:
            raise SemanticUnavailable("semantic search needs the model", hint="pip install 'lorahub-toolkit[semantic]'")
        self.name = MODEL
        self.version = model_version()
        self.table = np.ascontiguousarray(load_file(os.path.join(folder, _WEIGHTS))["embedding.weight"], dtype=np.float32)
        self.dim = int(self.table.shape[1])
        tok = Tokenizer.from_file(os.path.join(folder, _TOKENIZER))
        tok.no_padding()
        tok.no_truncation()
        self.tokenizer = tok
        self._lock = threading.Lock()

    def means(self, texts: list[str]) -> np.ndarray:
        """The mean token vector of each text (zeros for an empty one), float32."""
        import numpy as np

        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        with self._lock:
            if len(texts) == 1:  # a query: no batch (its thread pool costs more than the text)
                encoded = [self.tokenizer.encode(texts[0], add_special_tokens=False)]
            else:
                encoded = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        last = self.table.shape[0] - 1
        for i, enc in enumerate(encoded):
            ids = enc.ids[:MAX_TOKENS]
            if ids:
                out[i] = self.table[np.clip(np.asarray(ids, np.int64), 0, last)].mean(axis=0)
        return out

    def query(self, text: str) -> np.ndarray:
        return _normalised(self.means([text]))[0]

    def terms(self, texts: list[str]) -> np.ndarray:
        return _normalised(self.means(texts))

    def records(self, fields: list[dict[str, str]]) -> np.ndarray:
        """Normalised record vectors from their fields (``name``, ``tags``, ``words``, ``description``)."""
        import numpy as np

        total = np.zeros((len(fields), self.dim), np.float32)
        for key, weight in FIELD_WEIGHTS:
            total += weight * _normalised(self.means([f.get(key) or "" for f in fields]))
        return _normalised(total)


def _normalised(x: np.ndarray) -> np.ndarray:
    import numpy as np

    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-9)


_embedder: Embedder | None = None
_embedder_lock = threading.Lock()


def embedder() -> Embedder | None:
    """The process's model (loaded once), or None when the package is not installed."""
    global _embedder
    if _embedder is None:
        if not installed():
            return None
        with _embedder_lock:
            if _embedder is None:
                _embedder = Embedder()
    return _embedder


def record_fields(row: dict[str, Any] | Any) -> dict[str, str]:
    """The texts embedded for an adapter row (a dict of :mod:`.rows`, or a row with the same columns)."""
    get = row.get if isinstance(row, dict) else (lambda k: getattr(row, k, None))
    name = get("name") or ""
    title = get("title")
    if title and title != name:
        name = f"{name}. {title}"
    return {
        "name": name,
        "tags": ", ".join((get("tags_text") or "").split("\n")),
        "words": ", ".join((get("trigger_words_text") or "").split("\n")),
        "description": (get("description") or "")[:DESCRIPTION_CHARS],
    }


# --------------------------------------------------------------------------------------------
# Writing


def write_embeddings(conn: Any, ids: list[int], rows: list[dict[str, Any]], *, replace: bool = True) -> int:
    """Write the vectors of adapters ``ids`` (their rows ``rows``, as :mod:`.rows` writes them) inside the
    caller's transaction, replacing theirs (``replace=False``: the caller removed them). Without the model
    there is no vector (old ones described old text); ``lorahub registry embed`` adds them later. Returns
    how many vectors were written."""
    from sqlalchemy import delete, insert

    from .database import chunks, utcnow
    from .tables import AdapterEmbedding

    table = AdapterEmbedding.__table__
    if replace:
        for part in chunks(list(ids)):
            conn.execute(delete(table).where(table.c.adapter_id.in_(part)))
    model = embedder()
    if model is None or not ids:
        return 0
    import numpy as np

    vectors = model.records([record_fields(r) for r in rows]).astype(np.float16)
    seq = _next_seq(conn, len(ids))
    now = utcnow()
    values = [{"adapter_id": int(aid), "model": model.name, "model_version": model.version, "dim": model.dim,
               "vector": vectors[i].tobytes(), "seq": seq + i, "created_at": now} for i, aid in enumerate(ids)]
    for part in chunks(values, 1000):
        conn.execute(insert(table), list(part))
    return len(values)


def _next_seq(conn: Any, n: int) -> int:
    """The first of ``n`` new ``seq`` values. Writers serialise here (SQLite: the write lock they hold;
    PostgreSQL: an advisory lock to the end of the transaction), so ``seq`` grows in commit order and a reader
    that has seen ``seq`` N has seen every row below it. Never a value used before, even when the rows that
    held the largest ones were deleted: at least the time in microseconds (a reader compares the largest
    ``seq`` with the one it last read)."""
    from sqlalchemy import text

    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SEQ_LOCK_KEY})
    top = conn.execute(text("SELECT coalesce(max(seq), 0) FROM adapter_embeddings")).scalar_one()
    return max(int(top) + 1, time.time_ns() // 1000)


@dataclass
class EmbedSummary:
    embedded: int
    kept: int
    seconds: float
    model: str
    model_version: str


def embed_missing(registry: Any, *, everything: bool = False, batch: int = 2000, progress: Any = None) -> EmbedSummary:
    """Embed the adapters that have no vector of the current model and version (``everything``: all of them)."""
    from sqlalchemy import text

    model = embedder()
    if model is None:
        raise SemanticUnavailable("no embedding model installed", hint="pip install 'lorahub-toolkit[semantic]'")
    started = time.perf_counter()
    where = "" if everything else (
        "WHERE e.adapter_id IS NULL OR e.model <> :m OR e.model_version <> :v")
    cols = "a.id, a.name, a.title, a.tags_text, a.trigger_words_text, substr(a.description, 1, :chars) AS description"
    sql = (f"SELECT {cols} FROM adapters a LEFT JOIN adapter_embeddings e ON e.adapter_id = a.id {where} "
           "ORDER BY a.id")
    params = {"m": model.name, "v": model.version, "chars": DESCRIPTION_CHARS}
    with registry.connect() as conn:
        todo = [dict(r._mapping) for r in conn.execute(text(sql), params)]
        total = conn.execute(text("SELECT count(*) FROM adapters")).scalar_one()
    done = 0
    for i in range(0, len(todo), batch):
        part = todo[i : i + batch]
        with registry.writing() as conn:
            done += write_embeddings(conn, [r["id"] for r in part], part)
        if progress is not None:
            progress(done, len(todo))
    return EmbedSummary(embedded=done, kept=int(total) - len(todo), seconds=round(time.perf_counter() - started, 3),
                        model=model.name, model_version=model.version)


# --------------------------------------------------------------------------------------------
# Searching


@dataclass
class _Index:
    """One database's vectors in memory (rows ``[:n]`` of ``matrix`` are live)."""

    key: str
    version: str
    matrix: Any = None  # float32 (capacity, dim), centred and normalised
    ids: Any = None  # int64 (capacity,)
    n: int = 0
    mean: Any = None
    row_of: dict[int, int] = field(default_factory=dict)
    seq: int = 0
    loaded: float = 0.0
    built_n: int = 0
    # tag vocabulary: tag -> position; vectors; postings (positions of rows carrying the tag)
    tag_pos: dict[str, int] = field(default_factory=dict)
    tag_names: list[str] = field(default_factory=list)
    tag_matrix: Any = None
    tag_counts: Any = None
    postings: list[list[int]] = field(default_factory=list)
    # filter tokens (adapters.search_facets: family, base label, format, tags, author, licence...) -> positions
    facets: dict[str, list[int]] = field(default_factory=dict)
    facet_arrays: dict[str, Any] = field(default_factory=dict)
    posting_arrays: dict[int, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_indexes: dict[str, _Index] = {}
_indexes_lock = threading.Lock()


def _index_for(raw: Raw, model: Embedder) -> _Index:
    key = f"{raw.key}#{model.name}#{model.version}"
    with _indexes_lock:
        index = _indexes.get(key)
        if index is None:
            index = _indexes[key] = _Index(key, model.version)
    return index


def _refresh(raw: Raw, model: Embedder, index: _Index) -> None:
    """Read the rows written since the index last looked (all of them on the first call, after
    :data:`FULL_RELOAD_S`, or when the table went back: a rebuilt database)."""

    top = raw.all("SELECT max(seq) AS s FROM adapter_embeddings")[0][0] or 0
    now = time.monotonic()
    full = (index.matrix is None or top < index.seq or now - index.loaded > FULL_RELOAD_S
            or index.n > 2 * max(index.built_n, MIN_CENTRE_ROWS // 2))  # doubled since the mean was taken
    if not full and top == index.seq:
        return
    with index.lock:
        if full:
            since = 0
        elif top == index.seq:
            return
        else:
            since = index.seq
        rows = raw.all(
            "SELECT e.adapter_id, e.vector, e.seq, a.tags_text, a.search_facets FROM adapter_embeddings e "
            "JOIN adapters a ON a.id = e.adapter_id WHERE e.seq > :s AND e.model = :m AND e.model_version = :v",
            {"s": since, "m": model.name, "v": model.version},
        )
        new_seq = max([index.seq if not full else 0, top])
        if full:
            _build(index, model, rows)
            index.loaded = now
        else:
            _extend(index, model, rows)
        index.seq = new_seq


def _vectors(rows: list[Any], dim: int) -> np.ndarray:
    import numpy as np

    if not rows:
        return np.zeros((0, dim), np.float32)
    return np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype=np.float16).reshape(len(rows), dim).astype(np.float32)


def _build(index: _Index, model: Embedder, rows: list[Any]) -> None:
    import numpy as np

    vectors = _vectors(rows, model.dim)
    # Centre on the records' mean once there are enough of them to have one (one record minus itself is 0).
    centre = len(rows) >= MIN_CENTRE_ROWS
    index.mean = vectors.mean(axis=0) if centre else np.zeros(model.dim, np.float32)
    index.built_n = len(rows)
    index.matrix = np.empty((max(len(rows), 1024), model.dim), np.float32)
    index.ids = np.zeros(index.matrix.shape[0], np.int64)
    index.n = 0
    index.row_of = {}
    index.tag_pos, index.tag_names, index.postings, index.posting_arrays = {}, [], [], {}
    index.facets, index.facet_arrays = {}, {}
    index.tag_matrix = np.zeros((0, model.dim), np.float32)
    n = len(rows)
    if not n:
        index.tag_counts = np.zeros(0, np.int64)
        return
    # The whole table at once (a command's search loads it every time): no per-row bookkeeping of _place.
    index.matrix[:n] = _normalised(vectors - index.mean)
    index.ids[:n] = [r[0] for r in rows]
    index.n = n
    index.row_of = {aid: i for i, aid in enumerate(index.ids[:n].tolist())}
    facets: dict[str, list[int]] = {}
    tags: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r[4]:
            for token in r[4].split():
                found = facets.get(token)
                if found is None:
                    facets[token] = [i]
                else:
                    found.append(i)
        if r[3]:
            for tag in r[3].split("\n"):
                found = tags.get(tag)
                if found is None:
                    tags[tag] = [i]
                else:
                    found.append(i)
    tags.pop("", None)
    index.facets = facets
    index.tag_names = list(tags)
    index.tag_pos = {t: k for k, t in enumerate(index.tag_names)}
    index.postings = list(tags.values())
    if index.tag_names:
        index.tag_matrix = model.terms(index.tag_names)
    index.tag_counts = np.fromiter((len(p) for p in index.postings), np.int64, len(index.postings))


def _extend(index: _Index, model: Embedder, rows: list[Any]) -> None:
    _place(index, model, rows, _vectors(rows, model.dim))


def _place(index: _Index, model: Embedder, rows: list[Any], vectors: np.ndarray) -> None:
    import numpy as np

    if not rows:
        return
    centred = _normalised(vectors - index.mean)
    new_tags: list[str] = []
    for i, r in enumerate(rows):
        aid = int(r[0])
        pos = index.row_of.get(aid)
        if pos is None:
            if index.n == index.matrix.shape[0]:
                grow = index.matrix.shape[0] * 2
                index.matrix = np.concatenate([index.matrix, np.empty_like(index.matrix)])[:grow]
                index.ids = np.concatenate([index.ids, np.zeros_like(index.ids)])[:grow]
            pos = index.n
            index.n += 1
            index.row_of[aid] = pos
            index.ids[pos] = aid
        index.matrix[pos] = centred[i]
        for token in (r[4] or "").split():
            index.facets.setdefault(token, []).append(pos)
            index.facet_arrays.pop(token, None)
        for tag in (r[3] or "").split("\n"):
            if not tag:
                continue
            t = index.tag_pos.get(tag)
            if t is None:
                t = index.tag_pos[tag] = len(index.tag_names)
                index.tag_names.append(tag)
                index.postings.append([])
                new_tags.append(tag)
            index.postings[t].append(pos)
            index.posting_arrays.pop(t, None)
    if new_tags:
        index.tag_matrix = np.concatenate([index.tag_matrix, model.terms(new_tags)])
    index.tag_counts = np.fromiter((len(p) for p in index.postings), np.int64, len(index.postings))


def ready(raw: Raw) -> bool:
    """Whether semantic search can run on this database: the model is installed and some adapter has a vector
    of it (loads the index)."""
    if not raw.all("SELECT max(seq) AS s FROM adapter_embeddings")[0][0]:
        return False  # nothing stored: the model is not even loaded
    model = embedder()
    if model is None:
        return False
    index = _index_for(raw, model)
    _refresh(raw, model, index)
    return index.n > 0


def scores(raw: Raw, query: str) -> tuple[np.ndarray, np.ndarray]:
    """(adapter ids, scores) of every vector of this database against ``query``."""
    import numpy as np

    model = embedder()
    if model is None:
        raise SemanticUnavailable("semantic search needs the model", hint="pip install 'lorahub-toolkit[semantic]'")
    index = _index_for(raw, model)
    _refresh(raw, model, index)
    n = index.n
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    q = model.query(query)
    # einsum, not BLAS: OpenBLAS's threads for one matrix-vector product cost more than the product on a busy
    # machine (4.6 ms instead of 0.2 at 3k rows, measured under load; see docs/registry.md).
    s = np.einsum("ij,j->i", index.matrix[:n], _normalised(q - index.mean))
    if index.tag_matrix is not None and len(index.tag_matrix):
        tag_sims = np.einsum("ij,j->i", index.tag_matrix, q)
        tag_sims = np.where(index.tag_counts >= MIN_TAG_COUNT, tag_sims, -1.0)
        k = min(TAG_NEIGHBOURS, len(tag_sims))
        nearest = np.argpartition(-tag_sims, k - 1)[:k]
        bonus = np.zeros(n, np.float32)
        for t in nearest:
            sim = float(tag_sims[t])
            if sim <= 0:
                continue
            arr = index.posting_arrays.get(int(t))
            if arr is None:
                arr = index.posting_arrays[int(t)] = np.asarray(index.postings[int(t)], np.int64)
            arr = arr[arr < n]
            bonus[arr] = np.maximum(bonus[arr], sim)
        s = s + TAG_WEIGHT * bonus
    return index.ids[:n], s


def top(raw: Raw, query: str, depth: int, allowed: Any, facets: list[str] = (), *,
        near_best: bool = False) -> list[tuple[int, float]]:
    """The best ``depth`` (adapter id, score) pairs with a score above :data:`MIN_SCORE` that ``allowed``
    keeps (a function: ids -> the subset the search's filters and visibility keep), best first. ``facets``
    (filter tokens, all required) are applied to the cached matrix first; candidates are then checked in
    SQL best first, a few more than needed, then four times as many while ``allowed`` rejects them.

    ``near_best`` (hybrid search): only scores of at least :data:`NEAR_BEST` x the best one (in a registry
    too small to be centred, :data:`UNCENTRED_NEAR_BEST` x the best and at least :data:`UNCENTRED_FLOOR`):
    meaning adds the records close to the query to the keyword matches, not every record of a library."""
    import numpy as np

    ids, s = scores(raw, query)
    if facets:
        index = _index_for(raw, embedder())
        keep_rows = None
        for token in facets:
            arr = index.facet_arrays.get(token)
            if arr is None:
                arr = index.facet_arrays[token] = np.asarray(index.facets.get(token, []), np.int64)
            mask = np.zeros(len(s), bool)
            mask[arr[arr < len(s)]] = True
            keep_rows = mask if keep_rows is None else keep_rows & mask
        s = np.where(keep_rows, s, -np.inf)
    floor = MIN_SCORE
    if near_best and len(s):
        best = float(s.max())
        if _index_for(raw, embedder()).built_n < MIN_CENTRE_ROWS:
            floor = max(floor, UNCENTRED_NEAR_BEST * best, UNCENTRED_FLOOR)
        else:
            floor = max(floor, NEAR_BEST * best)
    out: list[tuple[int, float]] = []
    start, step, n = 0, depth + 16, len(s)
    while len(out) < depth and start < n:
        k = min(n, start + step)
        part = np.argpartition(-s, k - 1)[:k] if k < n else np.arange(n)
        part = part[s[part] > floor]
        chunk = part[np.lexsort((-ids[part], -s[part]))][start:]
        if not len(chunk):
            break
        keep = allowed(ids[chunk].tolist())
        out.extend((aid, score) for aid, score in zip(ids[chunk].tolist(), s[chunk].tolist(), strict=True)
                   if aid in keep)
        start = k
        step *= 4
    return out[:depth]


def reset_cache() -> None:
    """Forget every process cache (tests)."""
    with _indexes_lock:
        _indexes.clear()


__all__ = [
    "MODEL", "MODES", "Embedder", "EmbedSummary", "SemanticUnavailable", "embed_missing", "embedder", "installed",
    "model_version", "ready", "record_fields", "reset_cache", "scores", "top", "write_embeddings",
]
