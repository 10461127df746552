"""Atomic writes: a killed job leaves either nothing or a complete file (DESIGN.md, "Writes are atomic").

Outputs are written to a hidden temporary path in the destination folder (same filesystem, so the final
``os.replace`` is atomic) and renamed only when the writer finished without error. A temporary's name says
which process owns it (:mod:`aifactory.io.owner`): writing an output first removes the temporaries that a
killed process left for that same output.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aifactory.errors import InputError
from aifactory.io.output_paths import (
    absolute,
    check_file_output,
    check_folder_output,
    file_output,
    make_parent,
    refuse_foreign_entries,
    write_listing,
)
from aifactory.io.owner import TOKEN_PATTERN, owner_is_gone, owner_token


def temporary_sibling(final: str | os.PathLike[str], tag: str = "part") -> Path:
    """A unique hidden path next to ``final`` keeping its suffix (GDAL picks drivers by suffix).

    The temporaries that dead processes left for the same ``final`` are removed first.
    """
    final = Path(final)
    remove_abandoned_temporaries(final)
    return final.with_name(f".{final.stem}.{owner_token()}-{uuid.uuid4().hex[:8]}.{tag}{final.suffix}")


#: what :func:`temporary_sibling` puts between ``.{stem}.`` and the suffix: the owner, 8 random hex digits, the tag
_TEMPORARY_TAIL = rf"{TOKEN_PATTERN}-[0-9a-f]{{8}}\.[a-z]+"
_TEMPORARY_NAME = re.compile(rf"(^|[/\\'\" ])\.(?P<stem>[^/\\'\"]+?)\.{_TEMPORARY_TAIL}")


def public_names(text: str) -> str:
    """``text`` with the temporaries' names replaced by the outputs they stand for, for messages to users."""
    return _TEMPORARY_NAME.sub(r"\1\g<stem>", text)


def remove_abandoned_temporaries(final: Path) -> list[Path]:
    """Remove the temporaries (and their sidecars) of ``final`` whose owner process is gone; return them, sorted."""
    own = re.compile(rf"\.{re.escape(final.stem)}\.{_TEMPORARY_TAIL}{re.escape(final.suffix)}")
    removed = []
    with contextlib.suppress(OSError):  # a clean-up on the way: the write itself tells what is wrong with the folder
        for entry in os.scandir(final.parent):
            match = own.match(entry.name)
            if match and owner_is_gone(match):
                remove_path(Path(entry.path))
                removed.append(Path(entry.path))
    return sorted(removed)


#: A device with less free space than this when a temporary is removed is taken for full (see
#: :func:`take_nearly_full_folders`): libraries often fail a write on a full disk without saying why.
NEARLY_FULL_BYTES = 16 * 2**20

_nearly_full: dict[Path, int] = {}


def take_nearly_full_folders() -> dict[Path, int]:
    """Folders whose device had under :data:`NEARLY_FULL_BYTES` free when a temporary there was removed since
    the last call, with the free bytes then."""
    taken = dict(_nearly_full)
    _nearly_full.clear()
    return taken


def remove_path(path: Path) -> None:
    with contextlib.suppress(OSError):  # measured before the removal frees the space again
        if path.exists() and (free := shutil.disk_usage(path.parent).free) < NEARLY_FULL_BYTES:
            _nearly_full[path.parent] = free
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    # sidecars GDAL/SQLite may leave next to a temporary file
    for sidecar in (path.with_name(path.name + ext) for ext in (".aux.xml", "-journal", "-wal", "-shm", ".ovr")):
        with contextlib.suppress(FileNotFoundError):
            sidecar.unlink()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``final`` atomically.

    Works for files and for folders (``folder=True``: a folder destination is replaced whole, but never over
    what it did not write: :mod:`aifactory.io.output_paths`). On any exception, including KeyboardInterrupt,
    the temporary output is removed and ``final`` is untouched.
    """
    final = absolute(final)
    if folder:
        check_folder_output(final)
        make_parent(final)
    else:
        file_output(final)
    tmp = temporary_sibling(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer produced no output at {tmp}")
        if tmp.is_dir():
            _publish_folder(tmp, final)
        else:
            check_file_output(final)
            os.replace(tmp, final)
    except BaseException:
        remove_path(tmp)
        raise


def _publish_folder(tmp: Path, final: Path) -> None:
    """Put the finished folder ``tmp`` in place of ``final`` (os.replace cannot replace a non-empty folder)."""
    write_listing(tmp)
    if not final.is_dir():
        if final.exists():
            raise InputError(f"{final}: is a file, not a folder")
        os.replace(tmp, final)
        return
    refuse_foreign_entries(final, written={entry.name for entry in tmp.iterdir()})
    old = temporary_sibling(final, "old")
    os.replace(final, old)
    os.replace(tmp, final)
    remove_path(old)


class AtomicWriter:
    """Base of streamed writers: ``close()`` publishes the output, ``abort()`` drops it.

    As a context manager the output is published only when the block exits without an exception.
    """

    def close(self) -> Any:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_text_atomic(final: str | os.PathLike[str], text: str) -> Path:
    """Write a small text file atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(final)


def write_bytes_atomic(final: str | os.PathLike[str], data: bytes) -> Path:
    """Write a small binary file atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)
