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
Each process keeps, per database, a :class:`~.vectorindex.VectorIndex`: the vectors in one float32 matrix
(centred on their mean, normalised), the tag vocabulary and the filter tokens' rows; and in a process that
keeps it (:func:`keep_loaded`: ``lorahub serve``, the Space) an HNSW graph above
:data:`~.vectorindex.ANN_MIN_ROWS` vectors. Each search compares the database's change counter
(:func:`generation`: the largest ``seq`` of ``adapter_embeddings`` and ``adapter_embedding_removals``, one
query) with the index's and applies what changed (vectors removed, then vectors written). A process first
maps the cache file beside the database (:func:`cache_path`), made by whichever process last built or
caught up far enough, checked against the database's counter and the model. A query's score against a
record is its cosine plus :data:`TAG_WEIGHT` x the best similarity between the query and one of the
record's tags among the query's :data:`TAG_NEIGHBOURS` nearest tags of the registry's own tag vocabulary:
paraphrases reach the words people tag with ("spooky monsters" -> horror, monster, creature). See
docs/registry.md for the figures at 100k and 1M records.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from lorahub.errors import LorahubError

from . import ann, vectorindex, waits
from . import text as T
from .vectorindex import MIN_TAG_COUNT, TAG_NEIGHBOURS, TAG_WEIGHT, BadCacheFile, VectorIndex

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .database import Raw

log = logging.getLogger(__name__)

PACKAGE = "wordllama"
MODEL = "wordllama/l2_supercat_256"
_WEIGHTS = "weights/l2_supercat_256.safetensors"
_TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
#: How a record's fields become one vector; part of the stored version (a change re-embeds).
RECIPE = "lorahub1"
FIELD_WEIGHTS = (("name", 0.5), ("tags", 1.0), ("words", 0.5), ("description", 0.25))
DESCRIPTION_CHARS = 400
MAX_TOKENS = 256
#: Query vectors kept per process (a vector depends on the text and the model only: nothing to invalidate).
QUERY_CACHE = 4096
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
#: Removals are kept this long in ``adapter_embedding_removals``; an index (or cache file) whose counter is
#: older than STALE_S is rebuilt rather than caught up.
REMOVALS_KEPT_S = 7 * 86400.0
STALE_S = 6 * 86400.0
#: The cache file is rewritten once the changes caught up since it was written exceed this fraction of the
#: vectors (and 1,000).
FILE_LAG = 0.05
#: ``$LORAHUB_VECTOR_CACHE=0``: no cache file (beside a SQLite database: ``registry.sqlite-vectors``,
#: database.VECTOR_CACHE_SUFFIX).
ENV_CACHE = "LORAHUB_VECTOR_CACHE"
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
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = _package_dir()
        if not folder:
            raise SemanticUnavailable("semantic search needs the model", hint="pip install 'lorahub-toolkit[semantic]'")
        self.name = MODEL
        self.version = model_version()
        # float16 as shipped: a text's few rows are widened when averaged (widening the whole table cost a
        # one-shot command 0.1 s)
        self.table = load_file(os.path.join(folder, _WEIGHTS))["embedding.weight"]
        self.dim = int(self.table.shape[1])
        tok = Tokenizer.from_file(os.path.join(folder, _TOKENIZER))
        tok.no_padding()
        tok.no_truncation()
        self.tokenizer = tok
        self._lock = threading.Lock()
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()  # text -> its vector (read-only), newest last

    def means(self, texts: list[str]) -> np.ndarray:
        """The mean token vector of each text (zeros for an empty one), float32."""
        import numpy as np

        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        with waits.held(self._lock):  # encode_batch of an import holds it a while
            if len(texts) == 1:  # a query: no batch (its thread pool costs more than the text)
                encoded = [self.tokenizer.encode(texts[0], add_special_tokens=False)]
            else:
                encoded = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        last = self.table.shape[0] - 1
        for i, enc in enumerate(encoded):
            ids = enc.ids[:MAX_TOKENS]
            if ids:
                out[i] = self.table[np.clip(np.asarray(ids, np.int64), 0, last)].mean(axis=0, dtype=np.float32)
        return out

    def query(self, text: str) -> np.ndarray:
        """The normalised vector of a query (read-only; the last :data:`QUERY_CACHE` texts are kept)."""
        with waits.held(self._lock):
            found = self._queries.get(text)
            if found is not None:
                self._queries.move_to_end(text)
                return found
        vector = _normalised(self.means([text]))[0]
        vector.setflags(write=False)
        with waits.held(self._lock):
            self._queries[text] = vector
            while len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)
        return vector

    def terms(self, texts: list[str]) -> np.ndarray:
        return _normalised(self.means(texts))

    def records(self, fields: list[dict[str, str]]) -> np.ndarray:
        """Normalised record vectors from their fields (``name``, ``tags``, ``words``, ``description``)."""
        import numpy as np

        total = np.zeros((len(fields), self.dim), np.float32)
        for key, weight in FIELD_WEIGHTS:
            total += weight * _normalised(self.means([f.get(key) or "" for f in fields]))
        return _normalised(total)


_normalised = vectorindex.normalised


_embedder: Embedder | None = None
_embedder_lock = threading.Lock()


def embedder() -> Embedder | None:
    """The process's model (loaded once), or None when the package is not installed."""
    global _embedder
    if _embedder is None:
        if not installed():
            return None
        waits.check("the embedding model is not loaded yet")
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
        "tags": ", ".join(T.lines(get("tags_text"))),
        "words": ", ".join(T.lines(get("trigger_words_text"))),
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

    from .coretables import ADAPTER_EMBEDDINGS as table
    from .database import chunks, utcnow

    if replace:
        prune_removals(conn)
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


def prune_removals(conn: Any) -> None:
    """Delete, inside the caller's transaction, the notes of removed vectors older than :data:`REMOVALS_KEPT_S`
    (a reader that old reloads everything). The notes themselves are the database's: a trigger adds one for
    every deleted ``adapter_embeddings`` row, whoever deletes it (migration ``0113``)."""
    from sqlalchemy import text

    conn.execute(text("DELETE FROM adapter_embedding_removals WHERE seq < :cut"),
                 {"cut": time.time_ns() // 1000 - int(REMOVALS_KEPT_S * 1e6)})


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
    gone = conn.execute(text("SELECT coalesce(max(seq), 0) FROM adapter_embedding_removals")).scalar_one()
    return max(int(top) + 1, int(gone) + 1, time.time_ns() // 1000)


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
class _Slot:
    """One database's index for one model in this process (``index`` None until first loaded)."""

    key: str
    index: VectorIndex | None = None
    loaded: float = 0.0
    checked: float = 0.0  # when the database's counter was last compared (time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


_slots: dict[str, _Slot] = {}
_slots_lock = threading.Lock()
_keep_loaded = False


def keep_loaded() -> None:
    """This process keeps its indexes between searches (``lorahub serve``, the Space): it builds an HNSW
    graph above :data:`~.vectorindex.ANN_MIN_ROWS` vectors. A one-shot command searches its mapped cache
    file exactly (one product over the mapped matrix costs less than checking and copying a graph)."""
    global _keep_loaded
    _keep_loaded = True


def _slot_for(raw: Raw, model: Embedder) -> _Slot:
    key = f"{raw.key}#{model.name}#{model.version}"
    with _slots_lock:
        slot = _slots.get(key)
        if slot is None:
            slot = _slots[key] = _Slot(key)
    return slot


def counters_sql(postgres: bool) -> str:
    """The statement of :func:`_counters`. Whether any adapter is private is read from the partial index
    ``ix_adapters_private`` (empty in a public registry): SQLite's planner preferred scanning the covering
    index ``ix_adapters_visible`` of every row (2.4 ms at 100k), so it is named there. On PostgreSQL it reads
    the data version of the rows results show too (migration 0116, :func:`~.lookups.results_for`)."""
    private = "adapters" if postgres else "adapters INDEXED BY ix_adapters_private"
    data = "(SELECT version FROM registry_data_version)" if postgres else "NULL"
    return ("SELECT (SELECT max(seq) FROM adapter_embeddings) AS e, "
            "(SELECT max(seq) FROM adapter_embedding_removals) AS r, "
            f"EXISTS (SELECT 1 FROM {private} WHERE private) AS p, {data} AS d")


#: What :func:`counters_sql` reads: the largest ``seq`` of a stored vector, of a removal (0 for none), whether
#: some adapter is private, and the data version (None on SQLite).
Counters = tuple[int, int, bool, "int | None"]


def _counters(raw: Raw) -> Counters:
    """:data:`Counters`: one query of four index lookups."""
    row = raw.all(counters_sql(raw.pg), prepare=True)[0]  # one plan, no values
    return int(row[0] or 0), int(row[1] or 0), bool(row[2]), (int(row[3]) if row[3] is not None else None)


def generation(raw: Raw) -> int:
    """The database's change counter for vectors: the largest ``seq`` of a vector written or removed."""
    stored, removed, _, _ = _counters(raw)
    return max(stored, removed)


_ROWS_SQL = ("SELECT e.adapter_id, e.vector, a.tags_text, a.search_facets FROM adapter_embeddings e "
             "JOIN adapters a ON a.id = e.adapter_id WHERE e.seq > :s AND e.seq <= :g AND e.model = :m "
             "AND e.model_version = :v")


def _vectors(rows: list[Any], dim: int) -> np.ndarray:
    import numpy as np

    if not rows:
        return np.zeros((0, dim), np.float32)
    return np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype=np.float16).reshape(len(rows), dim).astype(np.float32)


def cache_path(raw: Raw) -> Path | None:
    """Where the vector cache file of ``raw``'s database lives: beside a SQLite file (``NAME-vectors``), or
    for PostgreSQL in lorahub's cache folder under a name made from the database's URL (password hidden);
    None for an in-memory database or when ``$LORAHUB_VECTOR_CACHE`` is ``0``."""
    from lorahub import config

    from .database import VECTOR_CACHE_SUFFIX, parse_url

    if os.environ.get(ENV_CACHE, "").strip() == "0":
        return None
    if raw.pg:
        import hashlib

        folder = config.cache_dir() / "vectors"
        return folder / (hashlib.sha256(raw.key.encode()).hexdigest()[:32] + ".lhvec")
    db = parse_url(raw.key).database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    path = Path(db).expanduser()
    return path.with_name(path.name + VECTOR_CACHE_SUFFIX)


def _expect(model: Embedder) -> dict[str, Any]:
    return {"model": model.name, "model_version": model.version, "dim": model.dim}


def _open_file(raw: Raw, model: Embedder) -> VectorIndex | None:
    path = cache_path(raw)
    if path is None or not path.exists():
        return None
    try:
        return VectorIndex.open(path, _expect(model))
    except (OSError, BadCacheFile) as exc:
        log.warning("semantic: the vector cache file %s is not usable (%s); rebuilding it", path, exc)
        return None


def _save_file(raw: Raw, model: Embedder, index: VectorIndex) -> None:
    path = cache_path(raw)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        index.save(path, _expect(model))
    except OSError as exc:
        log.info("semantic: the vector cache file %s was not written: %s", path, exc)


def _full(raw: Raw, model: Embedder, top_seq: int) -> VectorIndex:
    rows = raw.all(_ROWS_SQL, {"s": 0, "g": top_seq, "m": model.name, "v": model.version})
    index = VectorIndex.build(rows, _vectors(rows, model.dim), model.terms, centre_min=MIN_CENTRE_ROWS)
    index.generation = top_seq
    return index


def _catch_up(raw: Raw, model: Embedder, index: VectorIndex, top_seq: int) -> None:
    """Apply what changed between the index's counter and ``top_seq``: removed vectors, then new ones."""
    since = index.generation
    if not _keep_loaded and index.ann is None:
        index.drop_graph()  # a one-shot command does not check and copy the file's graph to change it
    gone = raw.all("SELECT adapter_id FROM adapter_embedding_removals WHERE seq > :s AND seq <= :g",
                   {"s": since, "g": top_seq})
    index.remove([int(r[0]) for r in gone])
    rows = raw.all(_ROWS_SQL, {"s": since, "g": top_seq, "m": model.name, "v": model.version})
    index.add(rows, _vectors(rows, model.dim), model.terms)
    index.generation = top_seq


def _needs_rebuild(index: VectorIndex, top_seq: int) -> bool:
    return (top_seq < index.generation  # the database went back (restored, replaced)
            or index.generation < time.time_ns() // 1000 - int(STALE_S * 1e6)  # removals older are pruned
            or index.n > 2 * max(index.live, 1)  # more dead rows than live ones
            or index.live > 2 * max(index.built_n, MIN_CENTRE_ROWS // 2))  # doubled since the mean was taken


def _refresh(raw: Raw, model: Embedder, slot: _Slot, top_seq: int | None = None) -> VectorIndex:
    """The slot's index brought up to the database's counter (``top_seq``: already read, else read now):
    loaded from the cache file or built from the database the first time, then caught up (rows above its
    counter, removals), rebuilt when it drifted (see :func:`_needs_rebuild`); the cache file is rewritten
    after a rebuild and once it lags by more than :data:`FILE_LAG` of the vectors."""
    if top_seq is None:
        top_seq = generation(raw)
    index = slot.index
    if index is not None and index.generation == top_seq:
        return index
    waits.check("the semantic index is to be loaded or brought up to date")
    with slot.lock:
        index = slot.index
        if index is not None and index.generation == top_seq:
            return index
        write = False
        if index is None:
            index = _open_file(raw, model)
            if index is not None and index.generation != top_seq and _needs_rebuild(index, top_seq):
                index = None
            if index is not None and _keep_loaded and index.has_graph():
                index.ensure_ann()  # checked and copied now, not at the first search
                write = index.graph_rebuilt
        if index is not None and index.generation != top_seq:
            _catch_up(raw, model, index, top_seq)
            if _needs_rebuild(index, top_seq):
                index = None
            else:
                write = index.changes_since_file > max(1000, FILE_LAG * index.live)
        if index is None:
            index = _full(raw, model, top_seq)
            write = True
            slot.loaded = time.monotonic()
        if _keep_loaded and index.live >= vectorindex.ANN_MIN_ROWS and not index.has_graph() and ann.available():
            index.build_ann()
            write = True
        if write:
            _save_file(raw, model, index)
        slot.index = index
        return index


class Current(NamedTuple):
    """What :func:`current` read for a search: the index, whether any adapter was private then, and the data
    version of the rows results show (:func:`~.lookups.results_for`; None on SQLite)."""

    index: VectorIndex
    any_private: bool
    data_version: int | None = None


def current(raw: Raw, counters: Counters | None = None) -> Current | None:
    """This database's index brought up to date, or None when semantic search cannot run on it (no model
    installed, or no adapter has a vector of it). One query when nothing changed: a search checks the
    database's counter here once and hands the index to :func:`top`; the same query says whether any
    adapter is private (where none is, the search's candidates need no visibility check). ``counters``: what
    :func:`counters_sql` gave in a statement of this search that ran before its vector search (the keyword
    tiers' on PostgreSQL), in :func:`_counters`'s form; else read here."""
    stored, removed, private, data = counters if counters is not None else _counters(raw)
    if not stored:
        return None  # nothing stored: the model is not even loaded
    model = embedder()
    if model is None:
        return None
    index = _refresh(raw, model, _slot_for(raw, model), max(stored, removed))
    return Current(index, private, data) if index.live > 0 else None


def ready(raw: Raw) -> bool:
    """Whether semantic search can run on this database: the model is installed and some adapter has a vector
    of it (loads the index)."""
    return current(raw) is not None


def index_for(raw: Raw) -> VectorIndex:
    """This database's index, up to date (benchmarks and tests)."""
    model = embedder()
    if model is None:
        raise SemanticUnavailable("semantic search needs the model", hint="pip install 'lorahub-toolkit[semantic]'")
    return _refresh(raw, model, _slot_for(raw, model))


def top(raw: Raw, query: str, depth: int, allowed: Any, facets: list[str] = (), *,
        near_best: bool = False, exact: bool = False, index: VectorIndex | None = None,
        unchecked: bool = False) -> list[tuple[int, float]]:
    """The best ``depth`` (adapter id, score) pairs with a score above :data:`MIN_SCORE` that ``allowed``
    keeps (a function: ids -> the subset the search's filters and visibility keep; None: every adapter
    with a live vector, for a search without filters that may see every adapter), best first. ``index``:
    the index :func:`current` returned for this search (else the database's counter is read again). A score is
    the cosine of the query's and the record's vectors (centred) plus :data:`TAG_WEIGHT` x the best
    similarity between the query and one of the record's tags among the query's :data:`TAG_NEIGHBOURS`
    nearest tags of the registry. ``facets`` (filter tokens, all required) are applied to the index first;
    candidates are then checked in SQL best first (:class:`~.vectorindex.VectorIndex` ``top``: exactly, or
    from the HNSW graph above :data:`~.vectorindex.ANN_MIN_ROWS` vectors; ``exact`` forces the former).

    ``near_best`` (hybrid search): only scores of at least :data:`NEAR_BEST` x the best one (in a registry
    too small to be centred, :data:`UNCENTRED_NEAR_BEST` x the best and at least :data:`UNCENTRED_FLOOR`):
    meaning adds the records close to the query to the keyword matches, not every record of a library.

    ``unchecked``: the caller read, with the counter it caught ``index`` up to, that no adapter is private;
    ``allowed`` is then skipped while the index holds no private row either (another search of this process
    may have caught the shared index up past that read, with a private adapter written since)."""
    model = embedder()
    if model is None:
        raise SemanticUnavailable("semantic search needs the model", hint="pip install 'lorahub-toolkit[semantic]'")
    slot = _slot_for(raw, model)
    if index is None:
        index = _refresh(raw, model, slot)
    small = index.built_n < MIN_CENTRE_ROWS

    def floor_of(best: float) -> float:
        if not near_best:
            return MIN_SCORE
        if small:
            return max(MIN_SCORE, UNCENTRED_NEAR_BEST * best, UNCENTRED_FLOOR)
        return max(MIN_SCORE, NEAR_BEST * best)

    q = model.query(query)
    with waits.held(slot.lock):  # the graph and the arrays change under catch-ups
        if unchecked and not index.has_private():
            allowed = None
        return index.top(q, depth, allowed, list(facets), floor_of=floor_of, use_ann=_keep_loaded and not exact)


def scores(raw: Raw, query: str) -> tuple[np.ndarray, np.ndarray]:
    """(adapter ids, scores) of every live vector of this database against ``query`` (exact)."""
    import numpy as np

    index = index_for(raw)
    model = embedder()
    q = model.query(query)
    with _slot_for(raw, model).lock:  # scoring lends the index's scratch mask
        live = np.flatnonzero(index.alive[: index.n])
        s = index._score(live, vectorindex.normalised(q - index.mean), index._tag_bonus(q))
        return index.ids[live], s


def reset_cache() -> None:
    """Forget every process cache (tests)."""
    global _keep_loaded
    with _slots_lock:
        _slots.clear()
    _keep_loaded = False


__all__ = [
    "MIN_TAG_COUNT", "MODEL", "MODES", "TAG_NEIGHBOURS", "TAG_WEIGHT", "Embedder", "EmbedSummary", "SemanticUnavailable", "cache_path", "current", "embed_missing", "embedder",
    "generation", "index_for", "installed", "keep_loaded", "model_version", "prune_removals", "ready", "record_fields",
    "reset_cache", "scores", "top", "write_embeddings",
]
