"""The C libraries bundled in rasterio's wheel (GDAL, libtiff), for the few calls rasterio does not offer.

Importing rasterio loads them from ``rasterio.libs``; opening the same file again through ctypes gives the
instance already in the process (the dynamic loader matches it by its soname), so settings made here are the
ones rasterio works with. They cannot be opened before rasterio is imported (their own dependencies are found
through rasterio's extension modules), hence the import here. Where rasterio runs on a GDAL of its own build
(no ``rasterio.libs``), :func:`bundled_library` returns None and callers fall back to what rasterio offers.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import rasterio


@functools.cache
def bundled_library(stem: str) -> ctypes.CDLL | None:
    """The library ``rasterio.libs/{stem}-*.so*`` (``libgdal``, ``libtiff``) as loaded by rasterio, or None."""
    found = sorted((Path(rasterio.__file__).parent.parent / "rasterio.libs").glob(f"{stem}-*.so*"))
    return ctypes.CDLL(str(found[0])) if len(found) == 1 else None
