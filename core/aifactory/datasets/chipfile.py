"""Chip GeoTIFFs written fast: one GDAL-made header per chip layout, patched per chip, hashed as written.

Why not one GDAL dataset per chip: creating, writing and closing a GeoTIFF through rasterio costs about
2.5 ms per file, more than decoding the chip from the source, and hashing the file afterwards reads it
again. An uncompressed, band-interleaved GeoTIFF with one strip per band is a header followed by the
array's bytes in C order, and the headers of all chips of one layout (shape, dtype, CRS, nodata, pixel
size) differ only in two doubles: the map position of the chip's corner. So GDAL writes one header per
layout (in memory), this module patches those two doubles per chip, appends the pixels and computes the
BLAKE3 digest of exactly the bytes it writes. Each template proves itself once when built: a chip made from it
at another position must read back through GDAL with the same pixels, transform, CRS and nodata, or the
layout is written by GDAL instead (as are compressed chips). Templates (a few hundred bytes each) are kept
for the life of the process. No TIFF is parsed beyond the first directory's strip and georeferencing tags.
"""

from __future__ import annotations

import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from blake3 import blake3
from rasterio.io import MemoryFile

STRIP_OFFSETS, STRIP_BYTE_COUNTS = 273, 279
MODEL_TIEPOINT, MODEL_TRANSFORMATION = 33922, 34264
#: TIFF field type -> struct code of one value (SHORT, LONG, DOUBLE: the types of the tags read here)
FIELD_TYPES = {3: "H", 4: "I", 12: "d"}
#: TIFF field type -> bytes per value (values of at most 4 bytes in all sit in the entry itself)
FIELD_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
#: templates are byte-exact copies of arrays in memory, so only on little-endian hosts (GeoTIFFs GDAL writes there)
LITTLE_ENDIAN = sys.byteorder == "little"


def encode_gdal(array: np.ndarray, crs: Any, transform: Affine, nodata: float | None,
                compress: str = "none", **options: Any) -> bytes:
    """The GeoTIFF bytes of ``array`` ((bands, h, w) or (h, w)) written by GDAL in memory."""
    bands = array.reshape(-1, *array.shape[-2:])
    profile: dict[str, Any] = {"driver": "GTiff", "height": bands.shape[1], "width": bands.shape[2],
                               "count": bands.shape[0], "dtype": array.dtype.name, "crs": crs,
                               "transform": transform, "nodata": nodata, **options}
    if compress != "none":
        profile.update(compress=compress, predictor=2 if array.dtype.kind in "iu" else 1)
    with MemoryFile() as memory:
        with memory.open(**profile) as ds:
            ds.write(bands)
        return bytes(memory.getbuffer())


def _tags(data: bytes) -> dict[int, tuple[int, int, int]] | None:
    """First-directory tags of a little-endian classic TIFF: tag -> (type, count, offset of its values)."""
    if data[:4] != b"II*\x00":
        return None
    ifd = struct.unpack_from("<I", data, 4)[0]
    tags = {}
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        tag, kind, count = struct.unpack_from("<HHI", data, entry)
        size = FIELD_SIZES.get(kind, 8) * count
        tags[tag] = (kind, count, entry + 8 if size <= 4 else struct.unpack_from("<I", data, entry + 8)[0])
    return tags


def _values(data: bytes, tags: dict[int, tuple[int, int, int]], tag: int) -> tuple[Any, ...]:
    kind, count, offset = tags[tag]
    return struct.unpack_from(f"<{count}{FIELD_TYPES[kind]}", data, offset)


@dataclass(frozen=True)
class Template:
    """A chip header whose corner position sits at two known byte offsets."""

    header: bytes
    x_at: int
    y_at: int

    def header_for(self, transform: Affine) -> bytes:
        patched = bytearray(self.header)
        struct.pack_into("<d", patched, self.x_at, transform.c)
        struct.pack_into("<d", patched, self.y_at, transform.f)
        return bytes(patched)

    @classmethod
    def build(cls, array: np.ndarray, crs: Any, transform: Affine, nodata: float | None) -> Template | None:
        """A proven template for chips shaped like ``array`` with ``transform``'s pixel size, else None."""
        height = array.shape[-2]
        corner = Affine(transform.a, transform.b, 1000.5, transform.d, transform.e, 2000.5)  # never identity
        probe = (np.arange(array.size) % 251).astype(array.dtype).reshape(array.shape)
        data = encode_gdal(probe, crs, corner, nodata, interleave="band", blockysize=height)
        tags = _tags(data)
        if tags is None or STRIP_OFFSETS not in tags or STRIP_BYTE_COUNTS not in tags:
            return None
        offsets, counts = _values(data, tags, STRIP_OFFSETS), _values(data, tags, STRIP_BYTE_COUNTS)
        start = offsets[0]
        contiguous = all(o == start + sum(counts[:i]) for i, o in enumerate(offsets))
        if not contiguous or start + sum(counts) != len(data) or data[start:] != probe.tobytes():
            return None
        if MODEL_TIEPOINT in tags and tags[MODEL_TIEPOINT][1] == 6:
            base, x_index, y_index = tags[MODEL_TIEPOINT][2], 3, 4
            ok = _values(data, tags, MODEL_TIEPOINT)[:2] == (0.0, 0.0)
        elif MODEL_TRANSFORMATION in tags and tags[MODEL_TRANSFORMATION][1] == 16:
            base, x_index, y_index, ok = tags[MODEL_TRANSFORMATION][2], 3, 7, True
        else:
            return None
        template = cls(data[:start], base + 8 * x_index, base + 8 * y_index)
        return template if ok and template._proves(probe, crs, corner, nodata) else None

    def _proves(self, probe: np.ndarray, crs: Any, corner: Affine, nodata: float | None) -> bool:
        """A chip made from this template elsewhere reads back through GDAL exactly as intended."""
        moved = corner * Affine.translation(-37, 53)
        with MemoryFile(self.header_for(moved) + probe.tobytes()) as memory, memory.open() as ds:
            pixels = ds.read() if probe.ndim == 3 else ds.read(1)
            return bool(ds.transform == moved and ds.crs == crs and ds.nodata == nodata
                        and pixels.shape == probe.shape and (pixels == probe).all())


#: proven templates (or None: GDAL writes that layout) by layout, shared by threads and builds of a process
_TEMPLATES: dict[tuple[Any, ...], Template | None] = {}
_TEMPLATES_LOCK = threading.Lock()


def _template(array: np.ndarray, crs: Any, transform: Affine, nodata: float | None) -> Template | None:
    key = (array.shape, array.dtype.str, str(crs), nodata, transform.a, transform.b, transform.d, transform.e)
    with _TEMPLATES_LOCK:
        if key not in _TEMPLATES:
            _TEMPLATES[key] = Template.build(array, crs, transform, nodata)
        return _TEMPLATES[key]


def write_chip(path: Path, array: np.ndarray, crs: Any, transform: Affine, nodata: float | None = None,
               compress: str = "none") -> str:
    """Write ``array`` ((bands, h, w) or (h, w)) as a GeoTIFF at ``path``; returns its BLAKE3 digest (hex)."""
    template = None
    if compress == "none" and LITTLE_ENDIAN and array.dtype.isnative and array.flags.c_contiguous:
        template = _template(array, crs, transform, nodata)
    # BLAKE3 takes byte buffers only: the array's memory is viewed as bytes (C-contiguous here), not copied
    parts: list[Any] = [template.header_for(transform), array.reshape(-1).view(np.uint8)] if template is not None \
        else [encode_gdal(array, crs, transform, nodata, compress)]
    digest = blake3()
    with open(path, "wb") as handle:
        for part in parts:
            digest.update(part)
            handle.write(part)
    return digest.hexdigest()
