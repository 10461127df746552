"""Which MLflow store a tracking URI names, and whether it is one: the one place a user's URI is read.

MLflow takes a bare path as its file store, which it now refuses with a paragraph about maintenance
mode, and hands ``sqlite:///`` of any file to SQLAlchemy, whose "file is not a database" surfaces as a
hundred-line traceback (or, for a GeoPackage, MLflow adds its tables to the user's file). So: a path
ending in ``.db`` (or ``.sqlite``), or an existing file, means ``sqlite:///<absolute path>``; a folder is
refused with the URI to use instead; and an existing SQLite file must be empty or hold MLflow's tables.
Server URLs and other schemes go to MLflow untouched.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

from aifactory.errors import ConfigError, InputError

SQLITE = "sqlite:///"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
#: tables every MLflow SQL store has (``alembic_version`` since its first schema)
MLFLOW_TABLES = {"experiments", "alembic_version"}


def is_path(uri: str) -> bool:
    """Whether ``uri`` is a plain path rather than a URI (``sqlite:///…``, ``http://…``) or ``none``."""
    return "://" not in uri and uri.lower() not in ("none", "databricks")


def normalize_uri(uri: str) -> str:
    """The URI MLflow should get for what the user wrote (see the module docstring)."""
    if not is_path(uri):
        return uri
    path = Path(uri).expanduser().resolve()
    if path.suffix.lower() in SQLITE_SUFFIXES or path.is_file():
        return f"{SQLITE}{path}"
    raise ConfigError(f"{uri}: MLflow folder stores are not supported; use a SQLite file: "
                      f"{SQLITE}{path / 'mlruns.db'} (or a path ending in .db)")


def check_store(uri: str, *, write: bool = False) -> str:
    """``uri`` normalised, after a one-line error if it names a SQLite file that is not an MLflow store, or,
    for a command that writes (``write``), one that cannot be written (SQLite would fail only at the first insert, and
    MLflow logs that failure as a 60-line traceback before raising)."""
    uri = normalize_uri(uri)
    if uri.startswith(SQLITE):
        path = Path(uri.removeprefix(SQLITE).split("?", 1)[0]).resolve()
        _check_sqlite(path)
        if write and path.exists():
            _check_writable(path)
    return uri


def _check_writable(path: Path) -> None:
    """SQLite writes the database file and a journal beside it: both the file and its folder must be writable."""
    for where, what in ((path, "the MLflow store"), (path.parent, f"the MLflow store's folder {path.parent}")):
        if not os.access(where, os.W_OK):
            raise InputError(f"{path}: {what} cannot be written (a read-only file system, or no permission)")


def _check_sqlite(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an MLflow store (a SQLite file such as {path / 'mlruns.db'})")
    if not path.exists():
        if not path.parent.is_dir():
            raise InputError(f"{path.parent}: folder not found (for the MLflow store {path.name})")
        if not os.access(path.parent, os.W_OK):  # MLflow would create it: SQLite's "unable to open database file"
            raise InputError(f"{path}: cannot create the MLflow store: {path.parent} is not writable (a read-only "
                             "file system, or no permission)")
        return  # MLflow creates a new store
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path}: not an MLflow store ({exc})") from None
    if tables and not tables & MLFLOW_TABLES:
        raise InputError(f"{path}: not an MLflow store (a SQLite database without MLflow's tables)")
