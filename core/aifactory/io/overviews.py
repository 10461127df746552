"""Average overviews built while rows are streamed, so that closing a COG does not compute them.

GDAL's COG driver computes overviews after the last row, reading the whole raster back; for a prediction's
scores that was three quarters of closing the file, after the model had finished and with nothing to
overlap it (scores of 20000 × 2304, two classes and a mask: 0.94 s to convert, 0.24 s without overviews).
Rows that arrive top to bottom across the full width can be reduced as they come instead: every level
keeps at most one pending row, so memory is a strip. Each level goes to its own tiled GeoTIFF with its
own mask and :func:`vrt_with_overviews` hands them to the COG driver as the raster's overviews, which it
copies as they are (``OVERVIEWS=AUTO`` uses a source's overviews): the conversion above then takes 0.3 s.
The driver takes each level's mask from the level's own mask, but remakes every mask overview from the
full-resolution mask (0.84 s) unless the source's mask band lists overviews too: the VRT's mask band
lists the levels' first band for that reason only (never read; the tests check the masks, with valid
zero scores).

Why our own code: GDAL builds overviews only from a finished raster and rasterio cannot write into
overview levels. The arithmetic is GDAL's ``AVERAGE`` for 8-bit bands with a mask: each level from the one
below, the mean of the valid pixels of each 2 × 2 block rounded half up, 0 and masked where none is valid
(equal to the COG driver's own overviews, values and masks, to the bit wherever a level halves an even size:
the tests compare them). A level has ``ceil(size / 2)`` pixels (as ``gdaladdo`` makes them), the last row or
column of an odd size averaging the pixels it covers (the COG driver rounds such sizes down and spreads the
remainder over its averaging windows instead). Levels are added until the largest side fits in one block,
as it does.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

from aifactory.io.atomic import remove_path


def overview_sizes(width: int, height: int, blocksize: int) -> list[tuple[int, int]]:
    """(width, height) of each level, halving (rounded up) until the largest side fits in a block."""
    sizes = []
    while max(width, height) > blocksize:
        width, height = (width + 1) // 2, (height + 1) // 2
        sizes.append((width, height))
    return sizes


def halve(values: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """One level down: (bands, h, w) uint8 ``values`` and their (h, w) ``mask`` (None: all valid) to
    (bands, ceil(h / 2), ceil(w / 2)) and its mask (see the module docstring for the arithmetic)."""
    for axis in (1, 2):  # a last row or column stands for itself: doubled, its average is its own
        if values.shape[axis] % 2:
            values = np.concatenate([values, values.take([-1], axis=axis)], axis=axis)
            mask = None if mask is None else np.concatenate([mask, mask.take([-1], axis=axis - 1)], axis=axis - 1)
    if mask is not None and mask.all():
        mask = None
    if mask is not None:
        values = values * mask  # masked pixels count for nothing
    rows = values[:, 0::2].astype("uint16")
    rows += values[:, 1::2]
    sums = rows[:, :, 0::2] + rows[:, :, 1::2]
    if mask is None:  # four valid pixels everywhere: (sum + 2) // 4
        sums += 2
        sums >>= 2
        return sums.astype("uint8"), None
    count = mask[0::2].astype("uint8") + mask[1::2]
    count = count[:, 0::2] + count[:, 1::2]
    sums += count >> 1
    sums //= np.maximum(count, 1)
    return sums.astype("uint8"), count > 0


def _join(first: np.ndarray | None, second: np.ndarray | None, rows: tuple[int, int], width: int) -> np.ndarray | None:
    """Two masks stacked (None: all valid, and stays None when both are)."""
    if first is None and second is None:
        return None
    return np.concatenate([np.ones((rows[0], width), dtype=bool) if first is None else first,
                           np.ones((rows[1], width), dtype=bool) if second is None else second])


@dataclass
class _Level:
    """One overview level: its file, the rows written to it, and a row of the level above waiting for a pair."""

    path: Path
    dataset: Any  # an open rasterio dataset in write mode
    row: int = 0
    pending: tuple[np.ndarray, np.ndarray | None] | None = None

    def reduce(self, values: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None] | None:
        """This level's rows from the next rows of the level above (None: not a whole pair yet)."""
        if self.pending is not None:
            held, held_mask = self.pending
            mask = _join(held_mask, mask, (held.shape[1], values.shape[1]), values.shape[2])
            values = np.concatenate([held, values], axis=1)
            self.pending = None
        even = values.shape[1] // 2 * 2
        if even < values.shape[1]:
            self.pending = values[:, even:].copy(), None if mask is None else mask[even:].copy()
        if not even:
            return None
        return halve(values[:, :even], None if mask is None else mask[:even])

    def flush(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The last row of an odd height, on its own (None when the height was even)."""
        if self.pending is None:
            return None
        last, self.pending = self.pending, None
        return halve(*last)


class RowPyramid:
    """Overview levels of a raster whose rows are given top to bottom, full width (see the module docstring).

    ``prefix``: where the level files go (``{prefix}.ovr{factor}.tif``); ``profile``: the GeoTIFF creation
    options of the levels (size, transform, band count and type are set here).
    """

    def __init__(self, prefix: Path, width: int, height: int, bands: int, blocksize: int, transform: Affine,
                 profile: dict[str, Any]) -> None:
        self.bands = bands
        self.levels: list[_Level] = []
        try:
            for index, (level_width, level_height) in enumerate(overview_sizes(width, height, blocksize), start=1):
                path = prefix.with_name(f"{prefix.name}.ovr{2 ** index}.tif")
                scale = Affine.scale(width / level_width, height / level_height)
                dataset = rasterio.open(path, "w", **{**profile, "width": level_width, "height": level_height,
                                                      "count": bands, "dtype": "uint8",
                                                      "transform": transform * scale})
                self.levels.append(_Level(path, dataset))
        except BaseException:
            self.remove()
            raise

    def add(self, values: np.ndarray, mask: np.ndarray | None) -> None:
        """The next rows: (bands, h, width) uint8 ``values`` and their (h, width) mask (None: all valid)."""
        self._push(0, values, mask)

    def finish(self) -> None:
        """Flush the rows left unpaired at the bottom of each level, then close the level files."""
        for index, level in enumerate(self.levels):
            last = level.flush()
            if last is not None:
                self._write(level, *last)
                self._push(index + 1, *last)
        for level in self.levels:
            level.dataset.close()

    def remove(self) -> None:
        """Close and delete the level files."""
        for level in self.levels:
            if not level.dataset.closed:
                level.dataset.close()
            remove_path(level.path)

    def _push(self, start: int, values: np.ndarray, mask: np.ndarray | None) -> None:
        for level in self.levels[start:]:
            produced = level.reduce(values, mask)
            if produced is None:
                return
            self._write(level, *produced)
            values, mask = produced

    def _write(self, level: _Level, values: np.ndarray, mask: np.ndarray | None) -> None:
        where = Window(0, level.row, values.shape[2], values.shape[1])
        level.dataset.write(values, indexes=list(range(1, self.bands + 1)), window=where)
        valid = np.full(values.shape[1:], 255, "uint8") if mask is None else np.where(mask, np.uint8(255), np.uint8(0))
        level.dataset.write_mask(valid, window=where)
        level.row += values.shape[1]


def vrt_with_overviews(source: Path, vrt: Path, pyramid: RowPyramid) -> None:
    """A VRT of ``source`` (GDAL's own copy: metadata, band names, mask) whose bands have the pyramid's levels
    as overviews, and whose mask band lists them too (see the module docstring); absolute paths, as the
    mask's nested band resolves no relative one."""
    rasterio.shutil.copy(source, vrt, driver="VRT")
    tree = ET.parse(vrt)
    root = tree.getroot()
    bands = root.findall("VRTRasterBand")
    mask_band = root.find("MaskBand/VRTRasterBand")
    if len(bands) != pyramid.bands or mask_band is None:
        raise ValueError(f"{source}: expected {pyramid.bands} bands and a mask to attach overviews to")
    for band_index, element in zip([*range(1, len(bands) + 1), 1], [*bands, mask_band], strict=True):  # 1: see above
        for level in pyramid.levels:
            overview = ET.SubElement(element, "Overview")
            ET.SubElement(overview, "SourceFilename", relativeToVRT="0").text = str(level.path.resolve())
            ET.SubElement(overview, "SourceBand").text = str(band_index)
    tree.write(vrt)
