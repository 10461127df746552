"""The job ledger: one SQLite file that remembers every job across restarts of the client and the cluster.

SQLite because the history is small, must survive without a server, and several processes (a CLI call,
the QGIS plugin polling, a ``--wait`` loop) write it at once: WAL mode lets readers run beside one
writer, ``busy_timeout`` makes concurrent writers queue instead of failing, and every write is a single
short statement in autocommit mode, so no transaction is ever held across a network call.

Location: ``--ledger``, else ``$AIFACTORY_LEDGER``, else ``$XDG_DATA_HOME/aifactory/jobs.db``
(``~/.local/share/aifactory/jobs.db``). Local job folders live next to it in ``jobs/<id>/``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from aifactory.errors import ConfigError, InputError
from aifactory.jobs.base import STATUSES
from aifactory.jobs.security import check_job_id

SCHEMA_VERSION = 1
JSON_FIELDS = ("resources", "artifacts", "extra")
BOOL_FIELDS = ("shared", "settled", "stop_requested")


@dataclass
class JobRecord:
    """One job as the ledger keeps it. Times are Unix seconds; ``workdir`` is the worker's path."""

    id: str
    runner: str
    address: str
    pipeline_path: str
    pipeline_text: str
    workdir: str
    resources: dict[str, Any] = field(default_factory=dict)
    code_ref: str | None = None
    code_commit: str | None = None
    shared: bool = False
    status: str = "pending"
    message: str = ""
    remote_status: str | None = None
    settled: bool = False
    stop_requested: bool = False
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    updated: float = field(default_factory=time.time)
    progress: float | None = None
    progress_text: str = ""
    artifacts: list[dict[str, str]] = field(default_factory=list)
    pid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, with_pipeline: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not with_pipeline:
            data.pop("pipeline_text")
        return data


COLUMNS = tuple(f.name for f in fields(JobRecord))
_EMPTY: dict[str, type] = {"resources": dict, "artifacts": list, "extra": dict}
_SQL_TYPES = {"pid": "INTEGER", "shared": "INTEGER", "settled": "INTEGER", "stop_requested": "INTEGER",
              "created": "REAL", "started": "REAL", "finished": "REAL", "updated": "REAL", "progress": "REAL"}


def default_path() -> Path:
    if os.environ.get("AIFACTORY_LEDGER"):
        return Path(os.environ["AIFACTORY_LEDGER"]).expanduser()
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "aifactory" / "jobs.db"


def _encode(name: str, value: Any) -> Any:
    if name in JSON_FIELDS:
        return json.dumps(value, sort_keys=True)
    if name in BOOL_FIELDS:
        return int(bool(value))
    return value


def _decode(row: sqlite3.Row) -> JobRecord:
    values = {name: row[name] for name in COLUMNS}
    for name in JSON_FIELDS:
        values[name] = json.loads(values[name]) if values[name] else _EMPTY[name]()
    for name in BOOL_FIELDS:
        values[name] = bool(values[name])
    return JobRecord(**values)


class Ledger:
    """The jobs table of one SQLite file; use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout = 30000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._create()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path}: not a usable job ledger ({exc})") from None
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot open the job ledger ({exc.strerror})") from None

    @property
    def jobs_dir(self) -> Path:
        """Folder of the local runner's per-job files."""
        return self.path.parent / "jobs"

    def _create(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")  # one process at a time creates or upgrades the table
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(f"{self.path}: job ledger format {version} is newer than supported "
                                  f"({SCHEMA_VERSION})")
            self._db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY)")
            # columns added by later versions of JobRecord are added to older ledgers in place
            present = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for name in COLUMNS:
                if name not in present:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {_SQL_TYPES.get(name, 'TEXT')}")
            self._db.execute("CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created)")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add(self, record: JobRecord) -> JobRecord:
        check_job_id(record.id)
        placeholders = ", ".join("?" for _ in COLUMNS)
        try:
            self._db.execute(f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                             [_encode(name, getattr(record, name)) for name in COLUMNS])
        except sqlite3.IntegrityError:
            raise InputError(f"{self.path}: job {record.id!r} already exists") from None
        return record

    def update(self, job_id: str, **values: Any) -> JobRecord:
        """Set some fields of a job (one statement) and return the stored record."""
        unknown = (set(values) - set(COLUMNS)) | ({"id"} & set(values))
        if unknown:
            raise ValueError(f"cannot update ledger fields {sorted(unknown)}")
        if "status" in values and values["status"] not in STATUSES:
            raise ValueError(f"unknown job status {values['status']!r}")
        values["updated"] = time.time()
        assignments = ", ".join(f"{name} = ?" for name in values)
        self._db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?",
                         [*(_encode(name, value) for name, value in values.items()), job_id])
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
        self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def get(self, job_id: str) -> JobRecord:
        """The job ``job_id``, or the only job whose id starts with it."""
        check_job_id(job_id)
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            escaped = job_id.replace("_", r"\_")
            rows = self._db.execute(r"SELECT * FROM jobs WHERE id LIKE ? ESCAPE '\' LIMIT 2",
                                    (escaped + "%",)).fetchall()
            if len(rows) != 1:
                why = "is ambiguous" if rows else "is not"
                raise InputError(f"job {job_id!r} {why} in the ledger {self.path}")
            row = rows[0]
        return _decode(row)

    def list(self, status: str | None = None, limit: int | None = None) -> list[JobRecord]:
        """Jobs, newest first."""
        query, args = "SELECT * FROM jobs", []
        if status:
            query, args = query + " WHERE status = ?", [status]
        query += " ORDER BY created DESC"
        if limit:
            query += f" LIMIT {int(limit)}"
        return [_decode(row) for row in self._db.execute(query, args)]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
