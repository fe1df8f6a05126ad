"""Start ``lorahub serve`` in a child process and wait until it listens: the one way the demo, the tests
and the benchmarks run a hub of their own.

``lorahub serve`` prints ``lorahub serve: listening on URL`` (:data:`READY_PREFIX`) on stderr once its
socket accepts connections; :func:`start_serve` sends the child's output to a log file and reads it
until that line comes, the child exits or the time is up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from lorahub.registry.server.run import READY_PREFIX

#: How the child runs the CLI (the console script works as well: pass ``program=[path]``).
DEFAULT_PROGRAM = (sys.executable, "-m", "lorahub.cli")


def start_serve(
    args: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    program: Sequence[str] = DEFAULT_PROGRAM,
    wrap: Sequence[str] = (),
    timeout: float = 90,
) -> tuple[subprocess.Popen, str]:
    """Run ``[*wrap, *program, "serve", *args]`` with its output in ``log``; ``(process, URL)`` once it listens.

    ``env``: the child's whole environment (default: this one). Raises :class:`RuntimeError` with the
    end of the log when the child exits first or does not listen within ``timeout`` seconds (it is
    killed then)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.Popen([*wrap, *program, "serve", *args], stdout=fh, stderr=subprocess.STDOUT,
                                env=dict(env) if env is not None else None, cwd=cwd)
    return proc, wait_listening(proc, log, timeout=timeout)


def wait_listening(proc: subprocess.Popen, log: Path, *, timeout: float = 90) -> str:
    """The URL a started ``lorahub serve`` prints once it listens (see :func:`start_serve`)."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith(READY_PREFIX):
                return line[len(READY_PREFIX):].strip()
        if proc.poll() is not None:
            raise RuntimeError(f"lorahub serve exited with {proc.returncode}:\n{text[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=15)
            raise RuntimeError(f"lorahub serve did not start in {timeout:g} s:\n{text[-3000:]}")
        time.sleep(0.05)


def stop_serve(proc: subprocess.Popen, *, timeout: float = 15) -> None:
    """Terminate the child (SIGTERM, then SIGKILL after ``timeout`` seconds) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


__all__ = ["DEFAULT_PROGRAM", "READY_PREFIX", "start_serve", "stop_serve", "wait_listening"]
