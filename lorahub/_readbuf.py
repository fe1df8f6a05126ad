"""Buffers that large reads copy into at full speed.

``bytearray(n)`` of a megabyte lives in a block of its own from the C allocator, whose first byte sits 16
bytes past a page boundary. Page-cache pages begin on one, and the kernel's copy into user memory
(``rep movsb``) runs several times slower on AMD Zen cores when the destination is a few bytes ahead of the
source modulo 4 KiB: reading a cached 1 GiB file in 1 MiB ``readinto`` calls took 0.45-0.7 s of system time
into such a buffer and 0.09-0.1 s into a page-aligned one, on the 2-core benchmark machine (a destination
8, 16 or 24 bytes past a page: slow; 0 or 32 and more: fast). An anonymous ``mmap`` is page-aligned, so
every read into it is the fast case, whatever the CPU (benchmarks/README.md, "Read buffers").

A fresh mapping costs a page fault per 4 KiB page on first use (about 2 ms of CPU for the fingerprint's
8 MiB ring), so :func:`read_buffers` lends buffers of up to :data:`POOLED_SIZE` from a small pool and takes
them back. A borrower must not keep a view of a buffer after giving it back.
"""

from __future__ import annotations

import contextlib
import mmap
import threading
from collections.abc import Iterator

#: Buffers of at most this many bytes are lent from the pool (and are this big).
POOLED_SIZE = 1 << 20
#: Buffers the pool keeps between loans (16 MiB at most stay mapped).
MAX_POOLED = 16

_pool: list[mmap.mmap] = []
_lock = threading.Lock()


def read_buffer(size: int) -> mmap.mmap:
    """A zeroed, writable, page-aligned buffer of ``size`` bytes (at least 1) for ``readinto``/``preadv``.

    It supports the buffer protocol like a ``bytearray`` (``memoryview(buf)``, ``len(buf)``); it is unmapped
    when collected, or by ``close()`` once no view of it is left."""
    return mmap.mmap(-1, max(1, size))


@contextlib.contextmanager
def read_buffers(count: int, size: int) -> Iterator[list[mmap.mmap]]:
    """``count`` page-aligned buffers of at least ``size`` bytes for the duration of the block.

    Up to :data:`POOLED_SIZE` they come from the pool (each :data:`POOLED_SIZE` bytes, its pages already
    mapped when it was used before) and go back to it; larger ones are mapped for this loan alone. Their
    contents are whatever the last borrower left."""
    if size > POOLED_SIZE:
        yield [read_buffer(size) for _ in range(count)]
        return
    with _lock:
        lent = [_pool.pop() for _ in range(min(count, len(_pool)))]
    lent += [read_buffer(POOLED_SIZE) for _ in range(count - len(lent))]
    try:
        yield lent
    finally:
        with _lock:
            _pool.extend(lent[: max(0, MAX_POOLED - len(_pool))])


__all__ = ["MAX_POOLED", "POOLED_SIZE", "read_buffer", "read_buffers"]
