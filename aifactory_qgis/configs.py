"""YAML configs the plugin writes for the worker and the JSON answers it reads back, without Qt.

Like :mod:`aifactory_qgis.worker`, this is the one place to adjust when the dataset stage changes its
config keys or its ``dataset preview --json`` answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

#: context attributes of the catalog (aifactory.catalog.schema.CONTEXT_FIELDS), in percent
CONTEXT_FIELDS = ("cloud", "snow", "vegetation", "fog")
SPLIT_STRATEGIES = ("random", "spatial", "raster")


def dataset_config(rasters: Iterable[str], labels: Iterable[dict[str, str]], class_field: str, level: int,
                   context: dict[str, tuple[float | None, float | None]], split: str, val: float, test: float,
                   tile_size: int, seed: int) -> dict[str, Any]:
    """The dataset build/preview config for the layers and options chosen in the Dataset dock."""
    return {
        "rasters": list(rasters),
        "labels": [{**label, "class_field": class_field} for label in labels],
        "select": {"level": level, "context": {k: list(v) for k, v in context.items()}},
        "split": {"strategy": split, "val": val, "test": test, "seed": seed},
        "tile_size": tile_size,
    }


def dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def preview_counts(data: Any) -> dict[str, dict[str, int]]:
    """``{class: {split: count}}`` from a ``dataset preview --json`` answer.

    Accepts a mapping of class → split → count (at the top level or under ``counts``), or a list of rows
    with ``class``, ``split`` and ``count``/``objects``/``n_objects``.
    """
    if isinstance(data, dict):
        for key in ("counts", "per_class", "classes"):
            if isinstance(data.get(key), (dict, list)):
                return preview_counts(data[key])
        if all(isinstance(v, dict) for v in data.values()):
            return {str(c): {str(s): int(n) for s, n in row.items() if isinstance(n, (int, float))}
                    for c, row in data.items()}
        raise ValueError("unexpected preview answer: no per-class counts")
    if isinstance(data, list):
        counts: dict[str, dict[str, int]] = {}
        for row in data:
            number = next((row[k] for k in ("count", "objects", "n_objects") if k in row), 0)
            split = counts.setdefault(str(row["class"]), {})
            split[str(row.get("split", "all"))] = split.get(str(row.get("split", "all")), 0) + int(number)
        return counts
    raise ValueError("unexpected preview answer")
