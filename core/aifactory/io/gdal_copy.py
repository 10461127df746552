"""GDAL's CreateCopy with a progress function: a long conversion shows its progress and stops when asked.

``rasterio.shutil.copy`` calls ``GDALCreateCopy`` without one: converting a large raster to a COG is a single C
call (15 s for the bench's 20000² scene, which has its overviews already; longer when they are computed),
during which the progress bar stands still and Ctrl-C, SIGTERM and the plugin's Cancel wait. A job runner's
grace period can run out meanwhile (Ray and the local runner give 10 s, then SIGKILL). No library in use offers
a progress function here, and GDAL's own Python bindings would load a second GDAL beside rasterio's. This
module therefore calls the GDAL that rasterio's wheel loaded, through ctypes, with a progress function. The
function reports progress and answers "stop" once a SIGINT or SIGTERM has come in. GDAL then removes what it
wrote, and the signal goes to the handler that was there before (the CLI's raises KeyboardInterrupt or
Terminated). Where rasterio runs on another GDAL (a source build), ``rasterio.shutil.copy`` does the work as
before.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import rasterio
import rasterio.shutil
from rasterio.errors import RasterioIOError

from aifactory.io.bundled_libs import bundled_library
from aifactory.progress import reporter

_PROGRESS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_double, ctypes.c_char_p, ctypes.c_void_p)
_CE_FAILURE = 3  # CPLErr: None 0, Debug 1, Warning 2, Failure 3, Fatal 4


@functools.cache
def _rasterio_gdal() -> ctypes.CDLL | None:
    """The GDAL library bundled with rasterio's wheel (already loaded: the same instance), or None."""
    lib = bundled_library("libgdal")
    if lib is None:
        return None
    lib.GDALOpen.restype, lib.GDALOpen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    lib.GDALGetDriverByName.restype, lib.GDALGetDriverByName.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.GDALCreateCopy.restype = ctypes.c_void_p
    lib.GDALCreateCopy.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int,
                                   ctypes.POINTER(ctypes.c_char_p), _PROGRESS, ctypes.c_void_p]
    lib.GDALClose.restype, lib.GDALClose.argtypes = ctypes.c_int, [ctypes.c_void_p]  # CPLErr since GDAL 3.7
    lib.CPLGetLastErrorMsg.restype, lib.CPLGetLastErrorMsg.argtypes = ctypes.c_char_p, []
    lib.CPLErrorReset.restype, lib.CPLErrorReset.argtypes = None, []
    return lib


@contextlib.contextmanager
def _stops_held() -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM back while GDAL works: the list fills with the signals that came in, which are
    handed on to their previous handlers (so raised as usual) when the block ends. Only the main thread gets
    signals in Python; elsewhere nothing is held."""
    caught: list[int] = []
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for stop in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(stop) not in (signal.SIG_IGN, None):
                previous[stop] = signal.signal(stop, lambda received, _frame: caught.append(received))
    try:
        yield caught
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            handler = previous[caught[0]]
            if callable(handler):
                handler(caught[0], None)
            else:  # SIG_DFL: what the signal would have done
                signal.raise_signal(caught[0])


def copy_raster(source: str | os.PathLike[str], target: str | os.PathLike[str], driver: str,
                options: dict[str, Any], task: str = "convert") -> None:
    """``rasterio.shutil.copy(source, target, driver=driver, **options)`` that reports progress under ``task``
    and stops (removing what it wrote) on SIGINT or SIGTERM. Call it inside a rasterio environment."""
    message = Path(target).name
    lib = _rasterio_gdal()
    if lib is None:
        rasterio.shutil.copy(source, target, driver=driver, **options)
        return
    progress = reporter()
    encoded = [f"{key}={value}".encode() for key, value in options.items()]
    option_list = (ctypes.c_char_p * (len(encoded) + 1))(*encoded, None)
    with _stops_held() as stops:
        def report(done: float, _message: bytes | None, _data: int | None) -> int:
            if stops:
                return 0
            progress.progress(task, done, message)
            return 1

        callback = _PROGRESS(report)
        writer = lib.GDALGetDriverByName(driver.encode())
        if not writer:
            raise ValueError(f"GDAL has no {driver} driver")
        lib.CPLErrorReset()
        handle = lib.GDALOpen(os.fsencode(source), 0)
        if not handle:
            raise RasterioIOError(f"{source}: cannot open for conversion: {_last_error(lib)}")
        try:
            strict = 1  # as rasterio.shutil.copy
            made = lib.GDALCreateCopy(writer, os.fsencode(target), handle, strict, option_list, callback, None)
            failed = not made or lib.GDALClose(made) >= _CE_FAILURE
        finally:
            lib.GDALClose(handle)
        if failed and not stops:
            raise RasterioIOError(f"{target}: conversion to {driver} failed: {_last_error(lib)}")


def _last_error(lib: ctypes.CDLL) -> str:
    text: bytes | None = lib.CPLGetLastErrorMsg()
    return (text or b"").decode(errors="replace") or "GDAL gave no reason"
