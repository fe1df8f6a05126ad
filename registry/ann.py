"""Approximate nearest neighbours for semantic search: an HNSW graph (``usearch``, extra ``[semantic]``).

The semantic index (:mod:`.vectorindex`) asks the graph for the positions nearest to a query once it holds
more than :data:`lorahub.registry.vectorindex.ANN_MIN_ROWS` vectors, instead of scoring every vector; it
then scores those candidates exactly. Keys are the index's row positions; vectors are stored as float16 in
the graph (inner product of the centred, normalised vectors). Why usearch and not hnswlib or faiss
(measured: build time, query time, recall@10 against exact search, wheel size): docs/registry.md,
"Scale".

A graph is built from the matrix (:meth:`Ann.build`), changed in place (:meth:`Ann.add`,
:meth:`Ann.remove`), saved as bytes into the vector cache file and read back from it, either copied
(:meth:`Ann.load`: a process that will change it) or viewed in place (:meth:`Ann.view`: a one-shot command's
memory map). Not thread-safe: the caller holds its index's lock.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from typing import Any

PACKAGE = "usearch"
#: Graph degree and search breadths (usearch's connectivity, expansion_add, expansion_search): recall@10
#: 0.99 against exact search on the 100k benchmark vectors (docs/registry.md).
CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 128


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether usearch is installed (looked up, not imported)."""
    return importlib.util.find_spec(PACKAGE) is not None


class Ann:
    """One HNSW graph over float16 copies of the vectors; keys are row positions."""

    def __init__(self, index: Any, *, viewed: bool = False) -> None:
        self.index = index
        self.viewed = viewed

    @staticmethod
    def _new(dim: int) -> Any:
        from usearch.index import Index

        return Index(ndim=dim, metric="ip", dtype="f16", connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD,
                     expansion_search=EXPANSION_SEARCH)

    @classmethod
    def build(cls, vectors: Any, keys: Any, *, threads: int = 0) -> Ann:
        import numpy as np

        index = cls._new(int(vectors.shape[1]))
        if len(keys):
            index.add(np.asarray(keys, np.uint64), np.ascontiguousarray(vectors, np.float32), threads=threads)
        return cls(index)

    @classmethod
    def load(cls, buffer: Any) -> Ann:
        """A graph copied from ``buffer`` (bytes written by :meth:`to_bytes`), to be changed."""
        return cls._restore(buffer, view=False)

    @classmethod
    def view(cls, buffer: Any) -> Ann:
        """A graph read in place from ``buffer`` (kept alive by the caller); read-only."""
        return cls._restore(buffer, view=True)

    @classmethod
    def _restore(cls, buffer: Any, *, view: bool) -> Ann:
        from usearch.index import Index

        index = Index.restore(buffer, view=view)
        if index is None:
            raise ValueError("not a usearch index")
        index.expansion_search = EXPANSION_SEARCH
        return cls(index, viewed=view)

    def writable(self) -> Ann:
        """This graph, or a copy that can be changed when it is a view."""
        return Ann.load(self.to_bytes()) if self.viewed else self

    def to_bytes(self) -> bytes:
        return bytes(self.index.save())

    def __len__(self) -> int:
        return int(self.index.size)

    def add(self, keys: Any, vectors: Any) -> None:
        import numpy as np

        if len(keys):
            self.index.add(np.asarray(keys, np.uint64), np.ascontiguousarray(vectors, np.float32), threads=1)

    def remove(self, keys: Any) -> None:
        import numpy as np

        if len(keys):
            self.index.remove(np.asarray(keys, np.uint64))

    def search(self, query: Any, k: int) -> Any:
        """Positions of the ``k`` nearest vectors to ``query`` (int64), nearest first."""
        import numpy as np

        if k <= 0 or not len(self):
            return np.zeros(0, np.int64)
        found = self.index.search(np.asarray(query, np.float32), int(k), threads=1)
        return np.asarray(found.keys, np.int64)


__all__ = ["Ann", "available"]
