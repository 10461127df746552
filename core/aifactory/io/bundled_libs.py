"""The C libraries bundled in rasterio's and pyogrio's wheels (each has a GDAL of its own; rasterio also libtiff),
for the few calls those packages do not offer.

Importing the package loads them from ``{package}.libs``; opening the same file again through ctypes gives the
instance already in the process (the dynamic loader matches it by its soname), so settings made here are the
ones the package works with. They cannot be opened before the package is imported (their own dependencies are
found through its extension modules), hence the import here. Where a package runs on a GDAL of its own build
(no ``{package}.libs``), :func:`bundled_library` returns None and callers fall back to what the package offers.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
from pathlib import Path

#: the wheels that bundle a GDAL
GDAL_WHEELS = ("rasterio", "pyogrio")


@functools.cache
def bundled_library(stem: str, package: str = "rasterio") -> ctypes.CDLL | None:
    """The library ``{package}.libs/{stem}-*.so*`` (``libgdal``, ``libtiff``) as ``package`` loaded it, or None."""
    module = importlib.import_module(package)
    found = sorted((Path(str(module.__file__)).parent.parent / f"{package}.libs").glob(f"{stem}-*.so*"))
    return ctypes.CDLL(str(found[0])) if len(found) == 1 else None
