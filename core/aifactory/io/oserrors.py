"""Refusals of the machine that a user can fix, told in one line: no space left, a read-only device, no permission.

GDAL, SQLite and torch report them in their own words and wrap them in their own exceptions, sometimes without the
cause: on a full disk, a streamed GeoTIFF fails with "Write failed. See previous exception for details." over
"TIFFAppendToStrip:Write error at scanline 512". :func:`device_error` reads the whole chain of an exception
for the operating system's error (its errno, or its text inside a library's message) and, failing that, asks
whether a temporary output was just removed from a nearly full device
(:func:`aifactory.io.atomic.take_nearly_full_folders`).
The CLI turns what it finds into a :class:`~aifactory.errors.DeviceError`: one line, exit 2, no traceback.
Anything else keeps its traceback: it is a bug to report.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

from aifactory.errors import DeviceError
from aifactory.io.atomic import public_names, take_nearly_full_folders

#: errno values a user can remedy (free space, write elsewhere, fix permissions)
USER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)

#: how those causes read inside a library's message: the system's own words, and SQLite's (GeoPackage writes)
_CAUSE_TEXTS = (*(os.strerror(code) for code in USER_ERRNOS), "database or disk is full")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _one_line(text: str) -> str:
    return " ".join(public_names(text).split())


def _size(free: int) -> str:
    return f"{free / 2**20:.1f} MB" if free >= 2**20 else f"{free // 1024} KB"


def device_error(exc: BaseException) -> DeviceError | None:
    """The :class:`DeviceError` that ``exc`` amounts to, or None when it is not such a refusal."""
    for link in _chain(exc):
        if isinstance(link, OSError) and link.errno in USER_ERRNOS:
            where = " -> ".join(str(name) for name in (link.filename, link.filename2) if name is not None)
            return DeviceError(_one_line(f"{link.strerror}: {where}" if where else str(link.strerror)))
        message = str(link)
        if any(text in message for text in _CAUSE_TEXTS):
            return DeviceError(_one_line(message))
    full = take_nearly_full_folders()
    if full:
        folder, free = min(full.items(), key=lambda item: item[1])
        return DeviceError(f"no space left on the device of {folder} ({_size(free)} free when the unfinished "
                           f"output was removed): free some space or write elsewhere")
    return None
