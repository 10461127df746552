"""Context attributes computed from the pixels where a simple, well-known rule exists.

- ``vegetation``: % of valid pixels with NDVI = (NIR − red) / (NIR + red) > 0.3 (needs ``red`` and ``nir``);
- ``snow``: % of valid pixels with NDSI = (green − SWIR) / (green + SWIR) > 0.4 (Hall et al. 1995; needs
  ``green`` and ``swir``).

Cloud and fog have no rule that is right often enough on arbitrary sensors: they are imported from fields.
The raster is read window by window (only the bands a rule needs), so memory is one window whatever the
size; per-tile values come out of the same pass as the per-image value.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rasterio.windows import Window

from aifactory.io.raster import open_raster, read_valid_mask
from aifactory.progress import reporter

#: rule name -> (band names it needs, function of those bands returning a boolean "positive" mask)
RULES: dict[str, tuple[tuple[str, ...], Any]] = {
    "vegetation": (("red", "nir"), lambda red, nir: (nir - red) > 0.3 * (nir + red)),
    "snow": (("green", "swir"), lambda green, swir: (green - swir) > 0.4 * (green + swir)),
}
ALIASES = {"swir1": "swir", "swir16": "swir", "nir08": "nir", "b": "blue", "g": "green", "r": "red"}


def band_index(band_names: Sequence[str]) -> dict[str, int]:
    """Canonical band name → 1-based band number."""
    out: dict[str, int] = {}
    for number, name in enumerate(band_names, start=1):
        key = name.strip().lower()
        out.setdefault(ALIASES.get(key, key), number)
    return out


def computable(band_names: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """The rules of ``wanted`` whose bands are all declared."""
    index = band_index(band_names)
    return [rule for rule in wanted if rule in RULES and all(b in index for b in RULES[rule][0])]


def compute_context(path: str | Path, band_names: Sequence[str], rules: Sequence[str],
                    tile_size: int | None = None) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Per-image percentages and (with ``tile_size``) per-tile rows for ``rules`` (see :func:`computable`)."""
    rules = computable(band_names, rules)
    if not rules:
        return {}, []
    index = band_index(band_names)
    needed = sorted({index[b] for rule in rules for b in RULES[rule][0]})
    position = {number: i for i, number in enumerate(needed)}
    totals = dict.fromkeys(rules, 0)
    valid_total = 0
    tiles: list[dict[str, Any]] = []
    with open_raster(path) as ds:
        size = tile_size or max(512, ds.block_shapes[0][0])
        windows = [Window(col, row, min(size, ds.width - col), min(size, ds.height - row))
                   for row in range(0, ds.height, size) for col in range(0, ds.width, size)]
        for window in reporter().track(windows, task="context", message=Path(path).name):
            data = ds.read(needed, window=window).astype("float32")
            valid = read_valid_mask(ds, window)
            count = int(valid.sum())
            valid_total += count
            tile: dict[str, Any] = {"col_off": int(window.col_off), "row_off": int(window.row_off),
                                    "width": int(window.width), "height": int(window.height)}
            for rule in rules:
                bands = [data[position[index[b]]] for b in RULES[rule][0]]
                hits = int((RULES[rule][1](*bands) & valid).sum())
                totals[rule] += hits
                tile[rule] = 100.0 * hits / count if count else None
            tiles.append(tile)
    image = {rule: 100.0 * totals[rule] / valid_total for rule in rules} if valid_total else {}
    return image, tiles if tile_size else []
