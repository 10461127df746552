"""Per-band percentile stretch to 8 bits, with statistics saved as a JSON sidecar.

Statistics come from a decimated read of the whole raster (at most ``max_pixels`` pixels: GDAL serves it
from the overviews of a COG, so it costs little and sees the whole scene instead of a corner). The same
sidecar is reused by prediction and bundles so that a model sees the values it was trained on.
Valid pixels map to 1..255; 0 is kept for nodata.

Validity is per band: a pixel is valid in a band when the dataset mask says so, the band's value is not the
band's nodata and it is a finite number. A band nodata where the others are valid (a sensor's band that does
not reach the scene edge, a NaN in a float band that declares no nodata) is left out of that band's statistics
and stays nodata (0) in that band, rather than pulling its low percentile to the nodata value and becoming 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator
from rasterio.errors import RasterioError

from aifactory.config import StrictModel, validate
from aifactory.errors import InputError
from aifactory.io.atomic import write_text_atomic
from aifactory.io.raster import gdal_message

SIDECAR_SUFFIX = ".stretch.json"


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

    def apply(self, data: np.ndarray, valid: np.ndarray, nodata: float | None = None) -> np.ndarray:
        """(bands, h, w) source values → uint8 in 1..255; 0 where not ``valid`` (h, w), where a band holds the
        source's ``nodata`` or a non-finite value. In float64: the sidecar's float64 bounds stay exact (float32
        steps are 8 at 1e8, and shifted rounding of uint16 values at .5)."""
        low = np.asarray(self.low, dtype="float64")[:, None, None]
        span = np.maximum(np.asarray(self.high, dtype="float64")[:, None, None] - low, 1e-12)
        values = data.astype("float64")
        scaled = np.clip((values - low) / span, 0.0, 1.0) * 254.0 + 1.0
        out = np.rint(np.nan_to_num(scaled, nan=0.0)).astype("uint8")
        out[~band_valid(values, valid, nodata)] = 0
        return out


def band_valid(data: np.ndarray, valid: np.ndarray, nodata: float | None) -> np.ndarray:
    """(bands, h, w) validity: ``valid`` (h, w), and each band's value neither ``nodata`` nor non-finite."""
    ok = np.broadcast_to(valid, data.shape) & np.isfinite(data)
    if nodata is not None and not math.isnan(nodata):
        ok &= data != nodata
    return ok


def sidecar_path(raster: str | Path) -> Path:
    raster = Path(raster)
    return raster.with_name(raster.stem + SIDECAR_SUFFIX)


def compute_stretch(ds: Any, bands: list[int], percentiles: tuple[float, float],
                    max_pixels: int = 1 << 20) -> Stretch:
    """Percentiles of each band's valid pixels on a decimated read of the whole raster."""
    low_p, high_p = percentiles
    if not 0 <= low_p < high_p <= 100:
        raise InputError(f"--percentiles: expected 0 <= low < high <= 100, got {low_p}, {high_p}")
    factor = max(1.0, math.sqrt(ds.width * ds.height / max_pixels))
    shape = (max(1, round(ds.height / factor)), max(1, round(ds.width / factor)))
    try:
        data = ds.read(bands, out_shape=(len(bands), *shape))
        valid = ds.dataset_mask(out_shape=shape) > 0
    except RasterioError as exc:
        raise InputError(f"{ds.name}: raster is truncated or corrupt: {gdal_message(exc)}") from None
    if not valid.any():
        raise InputError(f"{ds.name}: no valid pixel to compute stretch statistics from")
    values = data.astype("float64")
    ok = band_valid(values, valid, ds.nodata)
    low, high = [], []
    for band, band_values, band_ok in zip(bands, values, ok, strict=True):
        if not band_ok.any():
            raise InputError(f"{ds.name}: band {band} has no valid pixel to compute stretch statistics from")
        band_low, band_high = np.percentile(band_values[band_ok], [low_p, high_p])
        low.append(float(band_low))
        high.append(float(band_high))
    return Stretch(bands=bands, percentiles=(low_p, high_p), low=low, high=high, source=str(ds.name),
                   source_dtype=ds.dtypes[bands[0] - 1])


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
