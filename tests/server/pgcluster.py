"""A private, throw-away PostgreSQL cluster for tests that stop, crash and restart the database.

The shared server on 127.0.0.1:5432 must never be stopped (other tests use it), so fault tests run
their own: ``initdb`` into a fresh folder, ``pg_ctl start`` on a free loopback port with trust
auth, and ``pg_ctl stop -m fast|immediate`` / ``start`` at will. PostgreSQL refuses to run as
root, so when the tests run as root every command runs as the ``postgres`` OS user (``runuser``)
and the folder belongs to that user.

Use :func:`private_cluster` (skips with the reason when the binaries or an unprivileged user are
missing; fails under ``CI=true``) or the ``pg_cluster`` fixture of the test modules.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

#: fsync off: a test cluster need not survive an OS crash; a killed postmaster still recovers every
#: acknowledged commit from the WAL in the OS cache. (synchronous_commit must stay on: off, a crash
#: loses commits already acknowledged, which the crash tests would rightly report as lost.)
SETTINGS = "-c fsync=off -c full_page_writes=off -c max_connections=100 -c shared_buffers=16MB"


def pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb and pg_ctl (or the PATH's)."""
    found = sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if (Path(p) / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One PostgreSQL cluster in a temporary folder, on 127.0.0.1:``port``, superuser ``postgres``, trust auth."""

    def __init__(self, bindir: Path, os_user: str | None) -> None:
        self.bindir = bindir
        self.os_user = os_user  # run the binaries as this user (None: as ourselves)
        self.root = Path(tempfile.mkdtemp(prefix="lorahub-pgc-"))
        self.datadir = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()
        if os_user:
            pw = pwd.getpwnam(os_user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.datadir), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "--no-instructions")

    def _run(self, tool: str, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / tool), *args]
        if self.os_user:
            cmd = ["runuser", "-u", self.os_user, "--", *cmd]
        # stdin/stdout never inherited: the postmaster started by pg_ctl must not hold pytest's pipes.
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, cwd=str(self.root))
        if check and proc.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} {SETTINGS}"
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60", "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` (clean shutdown, clients disconnected), ``immediate`` (a crash: no checkpoint, recovery on start)."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.datadir), "status", check=False).returncode == 0

    def destroy(self) -> None:
        if self.datadir.exists() and self.running():
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def createdb(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""


def _unprivileged_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return name
    raise LookupError("running as root, and no 'postgres' user (or runuser) to run PostgreSQL as")


def private_cluster() -> PgCluster:
    """Create and start a cluster; skips (fails under ``CI=true``) when PostgreSQL's binaries are missing."""
    import pytest
    from testkit import on_ci

    bindir = pg_bindir()
    try:
        if bindir is None:
            raise LookupError("PostgreSQL's server binaries (initdb, pg_ctl) are not installed (/usr/lib/postgresql/*/bin)")
        user = _unprivileged_user()
        cluster = PgCluster(bindir, user)
    except (LookupError, RuntimeError, OSError) as exc:
        reason = f"cannot run a private PostgreSQL cluster: {exc}"
        if on_ci():
            pytest.fail(f"{reason}; CI=true requires it")
        pytest.skip(reason)
    try:
        cluster.start()
    except Exception:
        log = cluster.log_text()[-2000:]
        cluster.destroy()
        raise RuntimeError(f"the private PostgreSQL cluster did not start:\n{log}") from None
    return cluster
