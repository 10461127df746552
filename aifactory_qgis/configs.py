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
#: split methods of aifactory.catalog.splits.SplitConfig
SPLIT_METHODS = ("blocks", "image")


def dataset_config(sources: Iterable[dict[str, str]], catalog: dict[str, Any] | None, level: int,
                   chip_size: int, split_method: str, val: float, test: float, seed: int) -> dict[str, Any]:
    """The ``dataset build``/``preview`` config (aifactory.datasets.config.DatasetConfig).

    ``sources`` are ``{raster, labels, layer, class_field}`` pairs; ``catalog`` is
    ``{path, select: {context: {name: [min, max]}}}``; exactly one of the two is used.
    """
    config: dict[str, Any] = {"sources": list(sources)} if catalog is None else {"catalog": catalog}
    config["classes"] = {"level": level}
    config["chips"] = {"size": chip_size, "seed": seed}
    config["split"] = {"method": split_method, "seed": seed,
                       "fractions": {"train": round(1 - val - test, 6), "val": val, "test": test}}
    return config


def dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def preview_counts(data: Any) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """``({class: {split: objects}}, {split: chips})`` from a ``dataset preview --json`` answer."""
    if not isinstance(data, dict) or not isinstance(data.get("objects"), dict):
        raise ValueError("no per-class object counts in the preview answer")
    objects = {str(name): {str(split): int(n) for split, n in row.items()}
               for name, row in data["objects"].items()}
    chips = {str(split): int(n) for split, n in (data.get("chips") or {}).items()}
    return objects, chips
