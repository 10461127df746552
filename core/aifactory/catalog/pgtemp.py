"""A throwaway local PostgreSQL + PostGIS server: try or test the scale-out catalog without a DBA.

``initdb`` into a temporary folder, listen on 127.0.0.1 only (no Unix socket outside the folder), on a
free port, with PostGIS enabled in a fresh database; :meth:`TempPostGIS.stop` (or leaving the ``with``
block) runs ``pg_ctl stop`` and removes the folder. PostgreSQL refuses to run as root, so under root the
server runs as the ``postgres`` system user (created by the Debian package) through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from aifactory.errors import InputError


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` holding initdb and pg_ctl whose PostGIS is installed."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name),
                        reverse=True)
    for candidate in candidates:
        version = Path(candidate).parent.name
        has_postgis = glob.glob(f"/usr/share/postgresql/{version}/extension/postgis.control")
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file() and has_postgis:
            return Path(candidate)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TempPostGIS:
    """A private PostgreSQL cluster with a ``catalog`` database that has the PostGIS extension."""

    def __init__(self, bindir: Path | None = None, database: str = "catalog") -> None:
        found = bindir or find_bindir()
        if found is None:
            raise InputError("PostgreSQL with PostGIS is not installed (no /usr/lib/postgresql/*/bin with "
                             "initdb and the postgis extension); install the postgresql and postgresql-postgis "
                             "packages")
        self.bindir = found
        self.database = database
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="aifactory-pg-"))
        self.datadir = self.folder / "data"
        self._as_postgres = os.geteuid() == 0
        self.user = "postgres" if self._as_postgres else os.environ.get("USER", "postgres")
        self._started = False

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the catalog database (psycopg 3 driver)."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
            raise RuntimeError(f"{args[0]} failed: {last}")
        return result

    def start(self) -> TempPostGIS:
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.datadir), "-U", self.user, "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.folder} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.folder / "server.log"), "-o", options,
                  "-w", "-t", "60", "start")
        self._started = True
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database)
        self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", self.database,
                  "-q", "-c", "CREATE EXTENSION IF NOT EXISTS postgis")
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its folder."""
        try:
            if self._started:
                self._started = False
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "60", "stop")
        finally:
            for _ in range(3):
                shutil.rmtree(self.folder, ignore_errors=True)
                if not self.folder.exists():
                    break
                time.sleep(0.5)

    def __enter__(self) -> TempPostGIS:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
