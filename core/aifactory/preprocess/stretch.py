"""Per-band percentile stretch to 8 bits, with statistics saved as a JSON sidecar.

Statistics come from full-resolution pixels: the whole raster when it holds at most ``max_pixels`` pixels,
else a fixed sample of at most ``max_pixels`` pixels (:func:`sample_windows`: square windows on an even grid
over the whole scene, so memory is bounded and the same raster always gives the same statistics). Never from a
decimated read: GDAL serves those from a COG's overviews, whose averages shrink the tails (a 2 % percentile of
uint16 noise came out at 2489 instead of 1980) and the stretch then clips real dark and bright pixels. The same
sidecar is reused by prediction and bundles so that a model sees the values it was trained on.
Valid pixels map to 1..255; 0 is kept for nodata.

Validity is per band: a pixel is valid in a band when the dataset mask says so, the band's value is not the
band's nodata and it is a finite number. A band nodata where the others are valid (a sensor's band that does
not reach the scene edge, a NaN in a float band that declares no nodata) is left out of that band's statistics
and stays nodata (0) in that band, rather than pulling its low percentile to the nodata value and becoming 1.
Each band is checked against its own nodata (a VRT may give each band another one).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from pydantic import Field, model_validator
from rasterio.errors import RasterioError
from rasterio.windows import Window

from aifactory.config import StrictModel, validate
from aifactory.errors import InputError
from aifactory.io.atomic import write_text_atomic
from aifactory.io.raster import gdal_message

SIDECAR_SUFFIX = ".stretch.json"
#: Side of the square full-resolution windows a large raster's statistics are sampled from: small enough for a
#: few hundred windows spread over the scene (1 Mpx: a 16 × 16 grid), large enough that each read decodes one
#: block for 4096 pixels rather than a block per pixel
SAMPLE_SIDE = 64

#: A nodata value: one for every band, or one per band (None: the band declares none)
Nodata: TypeAlias = float | Sequence[float | None] | None


class Stretch(StrictModel):
    """Contents of the ``*.stretch.json`` sidecar."""

    bands: list[int] = Field(description="1-based source bands, in output order")
    percentiles: tuple[float, float]
    low: list[float]
    high: list[float]
    source: str = ""
    source_dtype: str = ""

    @model_validator(mode="after")
    def _one_low_and_high_per_band(self) -> Stretch:
        """A hand-edited sidecar must still give one ``low <= high`` per band (else a broadcasting traceback)."""
        if not len(self.low) == len(self.high) == len(self.bands):
            raise ValueError(f"expected one low and one high per band: {len(self.bands)} bands, "
                             f"{len(self.low)} low, {len(self.high)} high")
        if any(lo > hi for lo, hi in zip(self.low, self.high, strict=True)):
            raise ValueError("expected low <= high for every band")
        return self

    def apply(self, data: np.ndarray, valid: np.ndarray, nodata: Nodata = None) -> np.ndarray:
        """(bands, h, w) source values → uint8 in 1..255; 0 where not ``valid`` (h, w), where a band holds its
        ``nodata`` (one for all bands or one per band) or a non-finite value. In float64: the sidecar's float64
        bounds stay exact (float32 steps are 8 at 1e8, and shifted rounding of uint16 values at .5)."""
        low = np.asarray(self.low, dtype="float64")[:, None, None]
        span = np.maximum(np.asarray(self.high, dtype="float64")[:, None, None] - low, 1e-12)
        values = data.astype("float64")
        scaled = np.clip((values - low) / span, 0.0, 1.0) * 254.0 + 1.0
        out = np.rint(np.nan_to_num(scaled, nan=0.0)).astype("uint8")
        out[~band_valid(values, valid, nodata)] = 0
        return out


def band_valid(data: np.ndarray, valid: np.ndarray, nodata: Nodata) -> np.ndarray:
    """(bands, h, w) validity: ``valid`` (h, w), and each band's value neither its nodata nor non-finite.

    ``nodata``: one value for every band, or one per band (a VRT's bands may each have their own)."""
    ok = np.broadcast_to(valid, data.shape) & np.isfinite(data)
    per_band = list(nodata) if isinstance(nodata, Sequence) else [nodata] * len(data)
    for band, value in enumerate(per_band):
        if value is not None and not math.isnan(value):
            ok[band] &= data[band] != value
    return ok


def sample_windows(width: int, height: int, block_shape: tuple[int, int], max_pixels: int) -> list[Window]:
    """The full-resolution windows a raster's statistics are taken from, at most ``max_pixels`` pixels in all.

    The rule, fixed so that a raster always gives the same statistics: the whole raster when it holds at most
    ``max_pixels`` pixels; else ``SAMPLE_SIDE``² windows (smaller on a raster thinner than that), as many as
    ``max_pixels`` allows, on a grid of rows × columns shaped like the raster, one window at the centre of each
    cell. A window is moved (less than its side) to lie inside the ``block_shape`` (rows, columns) block under
    the cell's centre, so that each read decodes one block: neighbours may then overlap by a few pixels.
    """
    if width * height <= max_pixels:
        return [Window(0, 0, width, height)]
    side = max(1, min(SAMPLE_SIDE, width, height, math.isqrt(max_pixels)))
    count = max(1, max_pixels // side ** 2)
    rows = min(max(1, round(math.sqrt(count * height / width))), height // side, count)
    cols = min(max(1, count // rows), width // side)
    row_offsets = [_offset((index + 0.5) * height / rows, height, side, block_shape[0]) for index in range(rows)]
    col_offsets = [_offset((index + 0.5) * width / cols, width, side, block_shape[1]) for index in range(cols)]
    return [Window(col, row, side, side) for row in row_offsets for col in col_offsets]


def _offset(centre: float, size: int, side: int, block: int) -> int:
    """Start of a ``side``-px window centred on ``centre``, inside ``[0, size)`` and, where the ``block`` under the
    centre is at least ``side`` long, inside that block."""
    start = min(max(0, int(centre - side / 2)), size - side)
    first = int(centre) // block * block
    last = min(first + block, size)
    if last - first >= side:
        start = min(max(start, first), last - side)
    return start


def sidecar_path(raster: str | Path) -> Path:
    raster = Path(raster)
    return raster.with_name(raster.stem + SIDECAR_SUFFIX)


def compute_stretch(ds: Any, bands: list[int], percentiles: tuple[float, float],
                    max_pixels: int = 1 << 20) -> Stretch:
    """Percentiles of each band's valid pixels at full resolution, on the :func:`sample_windows` of the raster.

    On a sample of n independent pixels the rank of a p % percentile is off by about ``sqrt(p (100 - p) / n)`` %
    (0.014 % for 2 % on 1 Mpx); spatially correlated imagery varies more, which the grid over the whole scene
    keeps small. A scene mostly nodata (a small valid island, a thin swath) can fall between the windows: when a
    band gets fewer than ``max_pixels / 64`` valid pixels from them, the sample is taken again from every k-th
    pixel of every k-th row instead (:func:`_strided_sample`), which reads the whole raster once."""
    low_p, high_p = percentiles
    if not 0 <= low_p < high_p <= 100:
        raise InputError(f"--percentiles: expected 0 <= low < high <= 100, got {low_p}, {high_p}")
    nodatas = [ds.nodatavals[band - 1] for band in bands]
    try:
        windows = sample_windows(ds.width, ds.height, ds.block_shapes[0], max_pixels)
        values, valid = _window_sample(ds, bands, windows)
        ok = band_valid(values, valid, nodatas)
        if len(windows) > 1 and ok.sum(axis=1).min() < max_pixels // 64:
            values, valid = _strided_sample(ds, bands, max_pixels)
            ok = band_valid(values, valid, nodatas)
    except RasterioError as exc:
        raise InputError(f"{ds.name}: raster is truncated or corrupt: {gdal_message(exc)}") from None
    if not valid.any():
        raise InputError(f"{ds.name}: no valid pixel to compute stretch statistics from")
    low, high = [], []
    for band, band_values, band_ok in zip(bands, values, ok, strict=True):
        if not band_ok.any():
            raise InputError(f"{ds.name}: band {band} has no valid pixel to compute stretch statistics from")
        band_low, band_high = np.percentile(band_values[band_ok], [low_p, high_p])
        low.append(float(band_low))
        high.append(float(band_high))
    return Stretch(bands=bands, percentiles=(low_p, high_p), low=low, high=high, source=str(ds.name),
                   source_dtype=ds.dtypes[bands[0] - 1])


def _window_sample(ds: Any, bands: list[int], windows: list[Window]) -> tuple[np.ndarray, np.ndarray]:
    """(bands, n) float64 values and (n,) dataset validity of the pixels of ``windows``."""
    pixels = sum(int(window.width * window.height) for window in windows)
    values = np.empty((len(bands), pixels), dtype="float64")
    valid = np.empty(pixels, dtype=bool)
    at = 0
    for window in windows:
        size = int(window.width * window.height)
        values[:, at:at + size] = ds.read(bands, window=window).reshape(len(bands), size)
        valid[at:at + size] = (ds.dataset_mask(window=window) > 0).ravel()
        at += size
    return values, valid


def _strided_sample(ds: Any, bands: list[int], max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_window_sample` of the pixels at the centre of each k × k cell, k the smallest step that keeps them
    within ``max_pixels``: read row by row at full resolution (never from overviews), one row in memory."""
    step = max(1, math.isqrt(ds.width * ds.height // max(1, max_pixels)))
    while -(-ds.width // step) * -(-ds.height // step) > max_pixels:
        step += 1
    first = step // 2
    rows = range(min(first, ds.height - 1), ds.height, step)
    cols = slice(min(first, ds.width - 1), ds.width, step)
    per_row = len(range(ds.width)[cols])
    values = np.empty((len(bands), len(rows) * per_row), dtype="float64")
    valid = np.empty(len(rows) * per_row, dtype=bool)
    for index, row in enumerate(rows):
        window = Window(0, row, ds.width, 1)
        at = slice(index * per_row, (index + 1) * per_row)
        values[:, at] = ds.read(bands, window=window)[:, 0, cols]
        valid[at] = ds.dataset_mask(window=window)[0, cols] > 0
    return values, valid


def save_stretch(stretch: Stretch, path: str | Path) -> Path:
    return write_text_atomic(path, stretch.model_dump_json(indent=2))


def load_stretch(path: str | Path) -> Stretch:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: stretch statistics not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file, expected the JSON of a {SIDECAR_SUFFIX} sidecar") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON: {exc}") from None
    return validate(Stretch, data, str(path))
