"""Per-band percentile stretch to 8 bits, with statistics saved as a JSON sidecar.

Statistics come from a decimated read of the whole raster (at most ``max_pixels`` pixels: GDAL serves it
from the overviews of a COG, so it costs little and sees the whole scene instead of a corner). The same
sidecar is reused by prediction and bundles so that a model sees the values it was trained on.
Valid pixels map to 1..255; 0 is kept for nodata.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
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

    def apply(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(bands, h, w) source values → uint8 in 1..255, 0 where not ``valid``."""
        low = np.asarray(self.low, dtype="float32")[:, None, None]
        span = np.maximum(np.asarray(self.high, dtype="float32")[:, None, None] - low, 1e-12)
        scaled = np.clip((data.astype("float32") - low) / span, 0.0, 1.0) * 254.0 + 1.0
        out = np.rint(scaled).astype("uint8")
        out[:, ~valid] = 0
        return out


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
    values = data[:, valid].astype("float64")
    low, high = np.percentile(values, [low_p, high_p], axis=1)
    return Stretch(bands=bands, percentiles=(low_p, high_p), low=low.tolist(), high=high.tolist(),
                   source=str(ds.name), source_dtype=ds.dtypes[0])


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
