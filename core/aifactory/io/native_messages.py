"""What GDAL and libtiff print by themselves, held back while a CLI command runs.

rasterio routes GDAL's messages to Python only in a thread that entered a ``rasterio.Env``. Everywhere else (the
prediction's writer threads, GDAL's own worker threads) GDAL's default handler prints ``ERROR 1: …`` on stderr,
and so does pyogrio's GDAL (a second copy, from its own wheel) when the detections writer's thread fills a disk.
libtiff's process-wide handler prints the errors that GDAL 3.10's TIFF I/O functions raise through libtiff's old
API, past GDAL's per-file handler (``_tiffSeekProc: No space left on device.``). A prediction that filled its
disk printed 54 such lines above the one line that said what happened.

:func:`held` points both GDALs' log at an unnamed file of this process (the ``CPL_LOG`` option, which GDAL reads
at its first message and keeps for the process's life, hence one file per process) and switches libtiff's
process-wide error printer off while it lasts (GDAL reports the same failures in its own words). The CLI then
decides (:mod:`aifactory.cli`): a command that ends in a one-line error or a stop drops them, since that line
says what happened; one that succeeds, or fails with a bug, shows each distinct line once. From the first block
on, GDAL writes its log to that file for the process's life, so a line it writes outside any block is not shown:
in the CLI a process runs one command, all of it inside the block.

Why not a Python function as GDAL's error handler: GDAL's worker threads would call into Python while the
thread that waits for them may hold the GIL (rasterio does not release it in every call), and both would wait
for ever. Where the user set ``CPL_LOG`` or turned ``CPL_DEBUG`` on, where the libraries are not the wheels'
own, or where ``/proc/self/fd`` does not exist (not Linux), GDAL's lines print as they come, as before.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import tempfile
from collections.abc import Iterator

from aifactory.io.bundled_libs import GDAL_WHEELS, bundled_library

_log_file: int | None = None  # the unnamed file GDAL writes its log to, once this process has chosen it


class NativeMessages:
    """The lines GDAL logged during a :func:`held` block (up to now while it lasts)."""

    def __init__(self, log_file: int | None) -> None:
        self._log_file = log_file
        self._start = self._size()
        self._end: int | None = None

    def _size(self) -> int:
        return os.fstat(self._log_file).st_size if self._log_file is not None else 0

    def close(self) -> None:
        self._end = self._size()

    def lines(self) -> list[str]:
        """Each distinct line once, in order of first appearance, with its count when it came more than once."""
        if self._log_file is None:
            return []
        end = self._size() if self._end is None else self._end
        text = os.pread(self._log_file, end - self._start, self._start).decode(errors="replace")
        counts = collections.Counter(line for line in text.splitlines() if line.strip())
        return [line if count == 1 else f"{line} ({count} times)" for line, count in counts.items()]


def _gdal_log_file() -> int | None:
    """This process's GDAL log, chosen at the first call for every bundled GDAL; None where it cannot be held."""
    global _log_file
    if _log_file is not None:
        return _log_file
    gdals = [_with_config_functions(gdal) for gdal in (bundled_library("libgdal", wheel) for wheel in GDAL_WHEELS)
             if gdal is not None]
    if not gdals or not os.path.isdir("/proc/self/fd") or any(_user_chose_the_log(gdal) for gdal in gdals):
        return None
    try:
        handle, path = tempfile.mkstemp(prefix="aifactory-gdal-", suffix=".log")
        os.unlink(path)  # nothing is left behind, whatever happens to this process
    except OSError:  # a full or read-only temporary folder must not stop a command that writes elsewhere
        return None
    for gdal in gdals:  # each appends to the same file through its own handle
        gdal.CPLSetConfigOption(b"CPL_LOG", f"/proc/self/fd/{handle}".encode())
        gdal.CPLSetConfigOption(b"CPL_LOG_APPEND", b"YES")
    _log_file = handle
    return handle


def _with_config_functions(gdal: ctypes.CDLL) -> ctypes.CDLL:
    gdal.CPLGetConfigOption.restype = ctypes.c_char_p
    gdal.CPLGetConfigOption.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    gdal.CPLSetConfigOption.restype, gdal.CPLSetConfigOption.argtypes = None, [ctypes.c_char_p, ctypes.c_char_p]
    return gdal


def _user_chose_the_log(gdal: ctypes.CDLL) -> bool:
    """Whether the user set where GDAL logs (``CPL_LOG``) or wants to see it all as it comes (``CPL_DEBUG``)."""
    debugging = (gdal.CPLGetConfigOption(b"CPL_DEBUG", b"OFF") or b"").upper() not in (b"OFF", b"NO", b"FALSE", b"0")
    return debugging or gdal.CPLGetConfigOption(b"CPL_LOG", None) is not None


@contextlib.contextmanager
def held() -> Iterator[NativeMessages]:
    """Hold GDAL's and libtiff's own messages back for the duration of the block (see the module's docstring)."""
    messages = NativeMessages(_gdal_log_file())
    tiff = bundled_library("libtiff")
    if tiff is not None:
        tiff.TIFFSetErrorHandler.restype, tiff.TIFFSetErrorHandler.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
        previous = tiff.TIFFSetErrorHandler(None)
    try:
        yield messages
    finally:
        messages.close()
        if tiff is not None:
            tiff.TIFFSetErrorHandler(previous)
