"""Built-in pipeline tasks: thin adapters from a typed parameter model to each stage's Python API.

Each adapter resolves relative paths against the pipeline file's folder, writes into its own task folder
and returns its declared ``OUTPUTS``. Stage modules are imported inside the adapters so that listing the
tasks stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from aifactory.config import StrictModel
from aifactory.io.atomic import write_text_atomic
from aifactory.pipeline import TASKS
from aifactory.pipeline.runner import TaskContext


class SynthTask(StrictModel):
    """Generate a synthetic scene with known objects."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ("raster", "truth")
    width: int = Field(1024, gt=0, le=100_000)
    height: int = Field(1024, gt=0, le=100_000)
    bands: int = Field(4, gt=0, le=64)
    dtype: str = "uint16"
    crs: str | None = "EPSG:32631"
    gsd: float = Field(0.5, gt=0)
    density: float = Field(0.8, ge=0)
    seed: int = 0


@TASKS.register("synth", SynthTask)
def synth_task(params: SynthTask, context: TaskContext) -> dict[str, Any]:
    """Write a synthetic raster (COG) and its truth GeoPackage."""
    from aifactory.io.synthetic import SceneSpec, generate_scene

    raster, truth = context.workdir / "scene.tif", context.workdir / "truth.gpkg"
    spec = SceneSpec(width=params.width, height=params.height, bands=params.bands, dtype=params.dtype,
                     crs=params.crs, gsd=params.gsd, density=params.density, seed=params.seed)
    generate_scene(spec, raster, truth)
    return {"raster": raster, "truth": truth}


class RasterInfoTask(StrictModel):
    """Check a raster and record its metadata (a cheap gate in front of expensive tasks)."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ("info",)
    raster: str


@TASKS.register("raster_info", RasterInfoTask)
def raster_info_task(params: RasterInfoTask, context: TaskContext) -> dict[str, Any]:
    """Read a raster's metadata (first and last blocks decoded) into info.json."""
    from aifactory.io.raster import raster_info

    meta = raster_info(context.resolve(params.raster))
    path = write_text_atomic(context.workdir / "info.json", json.dumps(meta.to_dict(), indent=2))
    return {"info": Path(path)}
