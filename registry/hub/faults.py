"""Fault injection for crash tests: inert unless ``$LORAHUB_TEST_FAULT`` is set.

``LORAHUB_TEST_FAULT=<point>[@<n>][,<point>...]`` makes the server stop dead at those points (with
``@n``: from the n-th time the process reaches it, the earlier ones pass): it writes
``<point>.reached`` (holding the process id) into ``$LORAHUB_TEST_FAULT_DIR`` (default: the
current folder) and then blocks that request forever, so that a test can SIGKILL the process at a
precise moment (``tests/server/test_server_faults.py``). Points:

* ``commit-before-land``: a commit whose regular files are stored as blobs and whose LFS objects
  are checked, before the database transaction that inserts the commit and moves the branch;
* ``commit-after-land``: right after that transaction committed, before the response is sent;
* ``upload-before-record``: an LFS upload whose blob was renamed into place, before its
  ``hub_blobs``/``hub_repo_objects`` rows are written (a Xet shard's files pass here too);
* ``xet-xorb-before-row``: a Xet xorb whose chunk files are in place, before its row is written.

Unset (always, outside tests), :func:`fault_point` is one dictionary lookup.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

ENV = "LORAHUB_TEST_FAULT"
ENV_DIR = "LORAHUB_TEST_FAULT_DIR"
POINTS = ("commit-before-land", "commit-after-land", "upload-before-record", "xet-xorb-before-row")


_hits: dict[str, int] = {}
_hits_lock = threading.Lock()


def fault_point(name: str) -> None:
    """Block forever at ``name`` when ``$LORAHUB_TEST_FAULT`` names it (after writing the marker)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    points = dict((p.strip().partition("@")[0], p.strip().partition("@")[2]) for p in spec.split(","))
    if name not in points:
        return
    with _hits_lock:
        _hits[name] = n = _hits.get(name, 0) + 1
    if points[name].isdigit() and n < int(points[name]):
        return
    marker = Path(os.environ.get(ENV_DIR) or ".") / f"{name}.reached"
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, marker)
    while True:  # until the test kills the process
        time.sleep(3600)


__all__ = ["ENV", "ENV_DIR", "POINTS", "fault_point"]
