"""The dataset build config: where labels come from, classes, chips and splits.

Sources are either listed directly (raster + label layer + class field; what the demo and the QGIS plugin
use) or selected from a catalog with a selection (see :mod:`aifactory.catalog.selection`)::

    sources:
      - raster: scene.tif
        labels: truth.gpkg        # any OGR format, or CSV with WKT (crs: for its coordinates)
        layer: truth
        class_field: class
        extent: area.gpkg         # optional labelled extent; outside it masks get the ignore index
    # or: catalog: {path: catalog.gpkg, select: {classes: [vehicle], context: {cloud: [null, 20]}}}
    classes: {level: 1, names: [building, vegetation], map: {}}
    chips: {size: 256, overlap: 32, label_mode: fill, max_nodata: 0.5, negative_ratio: 0.25}
    split: {method: blocks, fractions: {train: 0.7, val: 0.15, test: 0.15}, guard: 16, seed: 0,
            holdout: [{source: scene.tif, wkt: "POLYGON ((...))"}]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from aifactory.catalog.hierarchy import MAX_LEVEL, config_path
from aifactory.catalog.selection import Selection, load_selection
from aifactory.catalog.splits import SplitConfig
from aifactory.config import CrsText, StrictModel, load_yaml, validate


class SourceEntry(StrictModel):
    """One raster and its label layer."""

    raster: Path
    labels: Path
    layer: str | None = None
    class_field: str = "class"
    where: str | None = Field(default=None, description="attribute filter on the labels (OGR SQL, as a QGIS layer "
                                                        "filter), e.g. \"status\" = 'checked'")
    crs: CrsText | None = Field(default=None, description="CRS of a label file that has none (CSV with WKT)")
    extent: Path | None = Field(default=None, description="labelled extent (vector file); default: the whole raster")
    name: str | None = Field(default=None, description="default: the raster's file name without suffix")


class CatalogEntry(StrictModel):
    """Observations from a catalog (GeoPackage path or postgresql:// URL), filtered by a selection."""

    path: str
    select: Selection | Path = Field(default_factory=Selection, description="inline selection or a YAML file")


class ClassConfig(StrictModel):
    level: int | None = Field(default=None, ge=1, le=MAX_LEVEL, description="train at this hierarchy level")
    names: list[str] = Field(default_factory=list, description="classes in index order (1..N); default: all")
    map: dict[str, str] = Field(default_factory=dict, description="rename subtrees before cutting at level")

    @field_validator("names")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        names = [config_path(v) for v in value]
        if len(set(names)) != len(names):
            raise ValueError("class names must be unique")
        return names

    @field_validator("map")
    @classmethod
    def _map(cls, value: dict[str, str]) -> dict[str, str]:
        return {config_path(k): config_path(v) for k, v in value.items()}


class ChipConfig(StrictModel):
    size: int = Field(default=256, ge=16, le=4096, description="chip side in pixels")
    overlap: int = Field(default=0, ge=0, description="pixels shared by neighbouring chips")
    label_mode: Literal["fill", "core", "boundary"] = "fill"
    core_factor: float = Field(default=0.5, gt=0, le=1, description="core mode: objects shrunk around their centre")
    max_nodata: float = Field(default=0.5, ge=0, le=1, description="skip chips with a larger nodata fraction")
    negative_ratio: float = Field(default=0.25, ge=0, description="chips without objects kept per chip with objects")
    bands: list[int] = Field(default_factory=list, description="1-based source bands to export; default all")
    compress: Literal["none", "deflate", "lzw", "zstd"] = "none"
    workers: int = Field(default=0, ge=0, description="chip-writing threads; 0 = one per CPU (at most 4)")
    seed: int = 0

    @model_validator(mode="after")
    def _overlap(self) -> ChipConfig:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        return self


class DatasetConfig(StrictModel):
    sources: list[SourceEntry] = Field(default_factory=list)
    catalog: CatalogEntry | None = None
    classes: ClassConfig = Field(default_factory=ClassConfig)
    chips: ChipConfig = Field(default_factory=ChipConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)

    @model_validator(mode="after")
    def _one_origin(self) -> DatasetConfig:
        if bool(self.sources) == (self.catalog is not None):
            raise ValueError("give either sources or catalog (exactly one)")
        return self


def _absolute(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()


def load_dataset_config(path: str | Path) -> DatasetConfig:
    """Load and validate a dataset config; relative paths become relative to the config's folder."""
    path = Path(path)
    config = validate(DatasetConfig, load_yaml(path), str(path))
    return resolve_paths(config, path.resolve().parent)


def resolve_paths(config: DatasetConfig, base: Path) -> DatasetConfig:
    """A copy of ``config`` whose file paths are absolute (selection files are loaded inline)."""
    data = config.model_copy(deep=True)
    for source in data.sources:
        source.raster = _absolute(source.raster, base)
        source.labels = _absolute(source.labels, base)
        if source.extent is not None:
            source.extent = _absolute(source.extent, base)
    for region in data.split.holdout:
        if region.path is not None:
            region.path = _absolute(region.path, base)
    if data.catalog is not None:
        if not data.catalog.path.startswith(("postgresql", "postgres:")):
            data.catalog.path = str(_absolute(Path(data.catalog.path), base))
        if isinstance(data.catalog.select, Path):
            data.catalog.select = load_selection(_absolute(data.catalog.select, base))
        aoi = data.catalog.select.aoi
        if aoi is not None and aoi.path is not None:
            aoi.path = _absolute(aoi.path, base)
    return data
