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

from aifactory.catalog.hierarchy import MAX_LEVEL
from aifactory.config import StrictModel, validate
from aifactory.datasets.config import DatasetConfig
from aifactory.io.atomic import write_text_atomic
from aifactory.pipeline import TASKS
from aifactory.pipeline.runner import TaskContext
from aifactory.prediction.blending import BlendWindow
from aifactory.prediction.model_source import Precision
from aifactory.training.config import TrainConfig


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


class RegionTask(StrictModel):
    """Polygons from WKT into a GeoPackage (hold-out regions, geofences, AOIs written inline in a pipeline)."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ("path",)
    wkt: list[str] = Field(min_length=1, description="polygons as WKT")
    crs: str | None = Field(None, description="CRS of the coordinates; none = pixel space")
    name: str = "region"


@TASKS.register("region", RegionTask)
def region_task(params: RegionTask, context: TaskContext) -> dict[str, Any]:
    """Write the polygons to region.gpkg (layer 'region', field 'name')."""
    import geopandas as gpd
    import shapely

    from aifactory.errors import ConfigError
    from aifactory.io.vector import write_vector

    try:
        geoms = shapely.from_wkt(params.wkt)
    except shapely.errors.GEOSException as exc:
        raise ConfigError(f"tasks.{context.name}.params.wkt: invalid WKT: {exc}") from None
    frame = gpd.GeoDataFrame({"name": [params.name] * len(geoms)}, geometry=list(geoms), crs=params.crs)
    path = write_vector(frame, context.workdir / "region.gpkg", layer="region")
    return {"path": path}


class NeonDataTask(StrictModel):
    """The demo's real imagery: NEON tiles with tree-crown boxes (pinned deepforest wheel, sha256-checked)."""

    OUTPUTS: ClassVar[tuple[str, ...]] = (
        "osbs_raster", "osbs_labels", "yell_raster", "yell_labels", "yell2_raster", "yell2_labels",
        "soap_raster", "soap_labels", "folder")
    folder: str | None = Field(None, description="where to keep the data (default: the user cache)")


@TASKS.register("neon_data", NeonDataTask)
def neon_data_task(params: NeonDataTask, context: TaskContext) -> dict[str, Any]:
    """Fetch the NEON sample imagery and write its annotation layers (GeoPackage, layer 'labels')."""
    from aifactory.demo.neon import prepare_scenes

    folder = context.resolve(params.folder) if params.folder else None
    scenes = {scene.name: scene for scene in prepare_scenes(folder)}
    keys = {"osbs": "OSBS_029", "yell": "2019_YELL_2_541000_4977000_image_crop",
            "yell2": "2019_YELL_2_528000_4978000_image_crop2", "soap": "SOAP_061"}
    outputs: dict[str, Any] = {"folder": str(scenes["OSBS_029"].raster.parent)}
    for key, name in keys.items():
        outputs[f"{key}_raster"] = scenes[name].raster
        outputs[f"{key}_labels"] = scenes[name].labels
    return outputs


class DatasetBuildTask(StrictModel):
    """Build a dataset folder (chips, masks, boxes, statistics, manifest, balance chart)."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ("dataset",)
    config: DatasetConfig


@TASKS.register("dataset_build", DatasetBuildTask)
def dataset_build_task(params: DatasetBuildTask, context: TaskContext) -> dict[str, Any]:
    """Plan and export a dataset (see `aifactory dataset build`)."""
    from aifactory.datasets.config import resolve_paths
    from aifactory.datasets.export import build_dataset

    output = context.workdir / "dataset"
    build_dataset(resolve_paths(params.config, context.base_dir), output)
    return {"dataset": output}


class TrainTask(StrictModel):
    """Train a model (see `aifactory train`); resumes from its last checkpoint after a failure."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ("run",)
    config: TrainConfig
    device: str = Field("auto", pattern="^(auto|cpu|cuda(:[0-9]+)?)$")
    tracking_uri: str | None = None


@TASKS.register("train", TrainTask)
def train_task(params: TrainTask, context: TaskContext) -> dict[str, Any]:
    """Train into the task folder's run/ directory."""
    from aifactory.training.loop import train

    run_dir = context.workdir / "run"
    resume = context.resume and (run_dir / "manifest.json").is_file()
    train(params.config.resolved(context.base_dir), run_dir, resume=resume, device=params.device,
          tracking_uri=params.tracking_uri, source=f"tasks.{context.name}.params.config")
    return {"run": run_dir}


class PredictTask(StrictModel):
    """Predict a raster with one or more trained runs (see `aifactory predict`)."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ("scores", "detections", "summary")
    models: list[str] = Field(min_length=1)
    raster: str
    geofence: str | None = None
    exclude: str | None = None
    geofence_rule: str = "keep"
    tta: bool | str = False
    batch_size: int = Field(4, ge=1)
    device: str = "auto"
    score_floor: float = Field(0.1, ge=0, le=1)
    ensemble: str = "mean"
    weights: list[float] | None = Field(None, description="one weight per model, for ensemble: weighted")
    overlap: int | None = Field(None, ge=0)
    blend: BlendWindow = "cosine"
    precision: Precision = "auto"
    instance_h: float = Field(2.0, ge=0, description="neck depth (px) that separates touching objects; 0: whole")
    postprocess: str | None = Field(None, description="post-processing chain YAML applied to the detections")
    workers: int = Field(1, ge=1, description="Ray tasks the tile rows are fanned out to (see predict --workers)")
    ray_address: str | None = None
    worker_cpus: float = Field(1.0, ge=0)
    worker_gpus: float = Field(0.0, ge=0)


@TASKS.register("predict", PredictTask)
def predict_task(params: PredictTask, context: TaskContext) -> dict[str, Any]:
    """Streamed tiled prediction to scores.tif + detections.gpkg."""
    from aifactory.prediction.fanout import FanOut
    from aifactory.prediction.predict import predict

    def optional(path: str | None) -> Path | None:
        return context.resolve(path) if path else None

    result = predict([context.resolve(m) for m in params.models], context.resolve(params.raster), context.workdir,
                     geofence=optional(params.geofence), exclude=optional(params.exclude),
                     geofence_rule=params.geofence_rule, tta=params.tta, batch_size=params.batch_size,
                     device=params.device, score_floor=params.score_floor, ensemble=params.ensemble,
                     weights=params.weights, overlap=params.overlap, blend=params.blend, precision=params.precision,
                     instance_h=params.instance_h, postprocess=optional(params.postprocess), workers=params.workers,
                     fan_out=FanOut(params.ray_address, params.worker_cpus, params.worker_gpus))
    return {"scores": result.scores, "detections": result.detections, "summary": result.summary}


class PostprocessTask(StrictModel):
    """Apply a chain of post-processing ops to a vector layer."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ("detections",)
    input: str
    layer: str | None = "detections"
    NESTED: ClassVar[str] = "ops"  # checked when the pipeline is loaded: check_nested
    ops: list[Any] = Field(min_length=1, description="op specs, as in a chain file's 'ops' list")

    def check_nested(self, where: str, base_dir: Path) -> None:
        """The chain, validated when the pipeline is loaded (a dry run tells its mistakes)."""
        from aifactory.postprocess.chain import resolve_chain

        resolve_chain(self.ops, where, base_dir=base_dir)


@TASKS.register("postprocess", PostprocessTask)
def postprocess_task(params: PostprocessTask, context: TaskContext) -> dict[str, Any]:
    """Run the ops in order and write detections.gpkg (layer 'detections')."""
    from aifactory.io.vector import read_vector, write_vector
    from aifactory.postprocess import apply_chain

    frame = read_vector(context.resolve(params.input), layer=params.layer)
    result = apply_chain(frame, params.ops, f"tasks.{context.name}.params.ops", base_dir=context.base_dir)
    output = context.workdir / "detections.gpkg"
    write_vector(result, output, layer="detections")
    return {"detections": output}


class EvaluateTask(StrictModel):
    """Object metrics (P/R/F1, mAP) of detections against truth, with an HTML report."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ("metrics", "report")
    pred: str
    truth: str
    pred_layer: str | None = None
    truth_layer: str | None = None
    aoi: str | None = Field(None, description="evaluate only objects whose centre lies in these polygons")
    iou: float = Field(0.5, gt=0, le=1)
    min_area: float = Field(0.0, ge=0)
    min_score: float = Field(0.0, ge=0, le=1)
    class_field: str = "class"
    by: str | None = None
    level: int | None = Field(None, ge=1, le=MAX_LEVEL,
                              description="cut truth and predicted classes to this hierarchy level before matching")
    raster: str | None = Field(None, description="imagery under the report's thumbnails")
    operating_point: str | None = Field(None, description="operating_point.json: its post-processing, NMS and "
                                                          "minimum area are applied and its score is min_score")


@TASKS.register("evaluate", EvaluateTask)
def evaluate_task(params: EvaluateTask, context: TaskContext) -> dict[str, Any]:
    """Evaluate and write metrics.json and report/report.html."""
    from aifactory.evaluation import evaluate_objects, write_report
    from aifactory.io.vector import read_vector

    pred = read_vector(context.resolve(params.pred), layer=params.pred_layer)
    truth = read_vector(context.resolve(params.truth), layer=params.truth_layer)
    min_score = params.min_score
    if params.operating_point:
        from aifactory.evaluation.rps import apply_operating_point, read_operating_point

        point = read_operating_point(context.resolve(params.operating_point))
        pred = apply_operating_point(pred, {**point, "score": 0.0})  # every score, for the curves
        min_score = point["score"]
    if params.aoi:
        pred, truth = within_aoi(pred, truth, read_vector(context.resolve(params.aoi)))
    result = evaluate_objects(pred, truth, iou=params.iou, min_area=params.min_area, by=params.by,
                              class_field=params.class_field, min_score=min_score,
                              pred_source=params.pred, truth_source=params.truth, level=params.level)
    metrics = write_text_atomic(context.workdir / "metrics.json", json.dumps(result.to_dict(), indent=2))
    report = write_report(result, context.workdir / "report",
                          raster=context.resolve(params.raster) if params.raster else None)
    return {"metrics": Path(metrics), "report": report}


def within_aoi(pred: Any, truth: Any, aoi: Any) -> tuple[Any, Any]:
    """Keep the objects of both frames whose representative point lies inside ``aoi`` (any CRS)."""
    from aifactory.io.vector import align_to_crs

    def keep(frame: Any) -> Any:
        area = align_to_crs(aoi, frame.crs, "aoi").union_all()
        return frame[frame.geometry.representative_point().within(area)]

    return keep(pred), keep(truth)


class OperatingPointTask(StrictModel):
    """Apply an operating point (from the rps task) to raw detections: the deliverable detections."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ("detections",)
    input: str
    layer: str | None = "detections"
    operating_point: str


@TASKS.register("apply_operating_point", OperatingPointTask)
def apply_operating_point_task(params: OperatingPointTask, context: TaskContext) -> dict[str, Any]:
    """Post-processing, NMS, minimum area and score of the operating point, to detections.gpkg."""
    from aifactory.evaluation.rps import apply_operating_point
    from aifactory.io.vector import read_vector, write_vector

    frame = read_vector(context.resolve(params.input), layer=params.layer)
    kept = apply_operating_point(frame, context.resolve(params.operating_point))
    return {"detections": write_vector(kept, context.workdir / "detections.gpkg", layer="detections")}


class RpsTask(StrictModel):
    """Operating-point search over stored raw detections (no model re-run)."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ("operating_point", "points")
    pred: str
    truth: str
    aoi: str | None = None
    NESTED: ClassVar[str] = "sweep"  # checked when the pipeline is loaded: check_nested
    sweep: list[str] = Field(default_factory=lambda: ["score=0.05:0.95:0.05"])
    iou: float = Field(0.5, gt=0, le=1)
    target_precision: float | None = Field(None, ge=0, le=1)
    by_class: bool = False
    level: int | None = Field(None, ge=1, le=MAX_LEVEL,
                              description="cut truth and predicted classes to this hierarchy level before matching")

    def check_nested(self, where: str, base_dir: Path) -> None:
        from aifactory.evaluation import parse_sweeps

        parse_sweeps(self.sweep, [f"{where}.sweep.{i}" for i in range(len(self.sweep))])


@TASKS.register("rps", RpsTask)
def rps_task(params: RpsTask, context: TaskContext) -> dict[str, Any]:
    """Sweep thresholds and write operating_point.json, points.csv and the curves."""
    from aifactory.evaluation import parse_sweeps, run_rps
    from aifactory.io.vector import read_vector

    pred = read_vector(context.resolve(params.pred))
    truth = read_vector(context.resolve(params.truth))
    if params.aoi:
        pred, truth = within_aoi(pred, truth, read_vector(context.resolve(params.aoi)))
    out = context.workdir / "rps"
    run_rps(pred, truth, parse_sweeps(params.sweep), out, iou=params.iou,
            target_precision=params.target_precision, by_class=params.by_class, level=params.level)
    return {"operating_point": out / "operating_point.json", "points": out / "points.csv"}


class AlSelectTask(StrictModel):
    """Pick the tiles most worth annotating (see `aifactory al select`)."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ("tiles",)
    model: str | None = Field(None, description="trained run directory (none: random selection)")
    rasters: list[str] = Field(min_length=1)
    n: int = Field(ge=1)
    NESTED: ClassVar[str] = "select"  # checked when the pipeline is loaded: check_nested
    select: dict[str, Any] = Field(default_factory=dict, description="selection options (strategy, diversity, …)")
    tile_size: int | None = Field(None, ge=16)
    exclude: list[str] = Field(default_factory=list, description="labelled layers or catalogs to skip")
    round: int = Field(1, ge=1)
    device: str = "auto"

    def check_nested(self, where: str, base_dir: Path) -> None:
        from aifactory.active.options import SelectOptions

        validate(SelectOptions, self.select, f"{where}.select")


@TASKS.register("al_select", AlSelectTask)
def al_select_task(params: AlSelectTask, context: TaskContext) -> dict[str, Any]:
    """Write tiles.gpkg (layer 'tiles': score, rank, status, strategy, round) for the Tagging dock."""
    from aifactory.active.options import SelectOptions
    from aifactory.active.select import select_tiles, write_tiles

    options = validate(SelectOptions, params.select, f"tasks.{context.name}.params.select")
    tiles = select_tiles(context.resolve(params.model) if params.model else None,
                         [context.resolve(r) for r in params.rasters], params.n, options, tile_size=params.tile_size,
                         exclude=[context.resolve(e) for e in params.exclude], round_number=params.round,
                         device=params.device)
    return {"tiles": write_tiles(tiles, context.workdir / "tiles.gpkg")}


class AlSimulateTask(StrictModel):
    """Label-efficiency simulation on a fully labelled dataset (see `aifactory al simulate`)."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ("summary", "curve", "plot")
    NESTED: ClassVar[str] = "config"  # checked when the pipeline is loaded: check_nested
    config: dict[str, Any] = Field(description="dataset, train and simulation sections of a simulation config")
    device: str = "auto"

    def check_nested(self, where: str, base_dir: Path) -> None:
        from aifactory.active.simulate import prepare_simulation

        prepare_simulation(self.config, f"{where}.config", base_dir)


@TASKS.register("al_simulate", AlSimulateTask)
def al_simulate_task(params: AlSimulateTask, context: TaskContext) -> dict[str, Any]:
    """Run (or resume) the simulation into the task folder: curve.csv, curve.png, summary.json."""
    from aifactory.active.simulate import prepare_simulation, run_simulation

    config, train = prepare_simulation(params.config, f"tasks.{context.name}.params.config", context.base_dir)
    run_simulation(config, train, context.workdir, device=params.device)
    return {"summary": context.workdir / "summary.json", "curve": context.workdir / "curve.csv",
            "plot": context.workdir / "curve.png"}


class BundleTask(StrictModel):
    """Package a trained run as a deployable bundle (see `aifactory bundle`)."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ("bundle",)
    run: str
    operating_point: str | None = Field(None, description="operating_point.json applied by predictions")
    postprocess: str | None = Field(None, description="post-processing chain YAML applied by predictions")
    report: str | None = Field(None, description="evaluation report folder to include")
    sample: str | None = Field(None, description="raster verifying the export (default: the run's dataset)")
    opset: int = Field(18, ge=18, le=23)
    overlap: int | None = Field(None, ge=0)


@TASKS.register("bundle", BundleTask)
def bundle_task(params: BundleTask, context: TaskContext) -> dict[str, Any]:
    """ONNX export verified against torch, bundle.json, config, report and Dockerfile in model.zip."""
    from aifactory.bundle.build import build_bundle

    def optional(path: str | None) -> Path | None:
        return context.resolve(path) if path else None

    output = context.workdir / "model.zip"
    build_bundle(context.resolve(params.run), output, operating_point=optional(params.operating_point),
                 postprocess=optional(params.postprocess), report=optional(params.report),
                 sample=optional(params.sample), opset=params.opset, overlap=params.overlap)
    return {"bundle": output}
