"""Buffers that large reads copy into at full speed.

``bytearray(n)`` of a megabyte lives in a block of its own from the C allocator, whose first byte sits 16
bytes past a page boundary. Page-cache pages begin on one, and the kernel's copy into user memory
(``rep movsb``) runs several times slower on AMD Zen cores when the destination is a few bytes ahead of the
source modulo 4 KiB: reading a cached 1 GiB file in 1 MiB ``readinto`` calls took 0.45-0.7 s of system time
into such a buffer and 0.09-0.1 s into a page-aligned one, on the 2-core benchmark machine (a destination
8, 16 or 24 bytes past a page: slow; 0 or 32 and more: fast). An anonymous ``mmap`` is page-aligned, so
every read into it is the fast case, whatever the CPU (benchmarks/README.md, "Read buffers").
"""

from __future__ import annotations

import mmap


def read_buffer(size: int) -> mmap.mmap:
    """A zeroed, writable, page-aligned buffer of ``size`` bytes (at least 1) for ``readinto``/``preadv``.

    It supports the buffer protocol like a ``bytearray`` (``memoryview(buf)``, ``len(buf)``); it is unmapped
    when collected, or by ``close()`` once no view of it is left."""
    return mmap.mmap(-1, max(1, size))


__all__ = ["read_buffer"]
