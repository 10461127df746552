"""``al round``: one turn of the tagging loop of a real project, driven by a YAML config.

State lives in the work folder (default: the config's folder): ``round-K/tiles.gpkg`` (the tiles picked for
round K), ``round-K/{tags,dataset,run,eval}`` (what round K trained on, its model, its evaluation) and
``rounds.jsonl`` (one line per trained round: labelled tiles, annotations, metrics) with ``rounds.png``.
Each call does what the state asks for, then stops:

1. the newest tiles layer still has ``to_tag`` tiles → stop with one line saying how many and where
   (exit code 2: a person has work to do);
2. its round is not trained yet → ingest every tagged tile so far (:mod:`.tags`), build the dataset,
   train (warm start from the previous round's model unless ``warm_start: false``), evaluate on the
   held-out area, append to ``rounds.jsonl``;
3. select the next ``n`` tiles with the newest model (random for the very first round when no starting
   ``model`` is given), never offering tiles already picked or inside the evaluation area.

Config::

    rasters: [scene.tif]
    annotations: {path: annotations.gpkg, layer: annotations, class_field: class}
    n: 20                                   # tiles per round
    select: {strategy: entropy, diversity: kcenter, min_distance: 100}
    model: seed_run/                        # optional: first selection and warm start
    classes: {names: [building]}
    chips: {label_mode: fill}               # size defaults to the tile size
    train: {model: {architecture: unet}, max_steps: 300, batch_size: 8}   # a TrainConfig without dataset
    evaluate: {raster: scene.tif, truth: truth.gpkg, aoi: test_area.gpkg}

This stage imports datasets (build), training (train) and prediction/evaluation (the held-out score):
a round is exactly that chain.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from aifactory.active.options import SelectOptions
from aifactory.config import StrictModel, load_yaml, validate
from aifactory.datasets.config import ChipConfig, ClassConfig
from aifactory.errors import AIFactoryError, ConfigError
from aifactory.io.atomic import write_text_atomic
from aifactory.io.raster import check_file
from aifactory.progress import reporter
from aifactory.training.config import TrainConfig

ROUNDS_FILE = "rounds.jsonl"
TILES_FILE = "tiles.gpkg"


class WaitingForTags(AIFactoryError):
    """The current round still has tiles to tag: nothing to do until a person tags them."""


class AnnotationLayer(StrictModel):
    path: Path
    layer: str | None = None
    class_field: str = "class"


class EvaluateConfig(StrictModel):
    """A labelled area never offered for tagging, where each round's model is scored."""

    raster: Path
    truth: Path
    layer: str | None = None
    class_field: str = "class"
    aoi: Path | None = Field(default=None, description="the held-out area (default: the whole raster)")
    iou: float = Field(default=0.5, gt=0, le=1, description="object match threshold")
    min_score: float = Field(default=0.5, ge=0, le=1, description="detections counted for object metrics")
    metric: Literal["pixel_f1", "object_f1"] = Field(default="pixel_f1", description="what rounds.png plots")


class RoundConfig(StrictModel):
    rasters: list[Path] = Field(min_length=1)
    annotations: AnnotationLayer
    n: int = Field(ge=1, description="tiles to pick per round")
    select: SelectOptions = Field(default_factory=SelectOptions)
    tile_size: int | None = Field(default=None, ge=16, description="default: the model's tile size")
    exclude: list[Path] = Field(default_factory=list, description="labelled ground never offered (layers, catalogs)")
    model: Path | None = Field(default=None, description="a trained run for the first selection and warm start")
    warm_start: bool = True
    classes: ClassConfig = Field(default_factory=ClassConfig)
    chips: ChipConfig | None = None
    train: dict[str, Any] = Field(description="a training config without 'dataset'")
    evaluate: EvaluateConfig | None = None
    workdir: Path | None = Field(default=None, description="default: the config's folder")

    @model_validator(mode="after")
    def _first_round(self) -> RoundConfig:
        if self.model is None and self.tile_size is None:
            raise ValueError("tile_size is required when no starting model is given")
        return self


@dataclass
class RoundResult:
    round: int
    tiles: Path
    record: dict[str, Any] | None
    message: str


def load_round_config(path: str | Path) -> tuple[RoundConfig, TrainConfig]:
    """The round config with absolute paths, and its training config checked (with a placeholder dataset)."""
    path = Path(path)
    config = validate(RoundConfig, load_yaml(path), str(path))
    if "dataset" in config.train:
        raise ConfigError(f"{path}: train.dataset: the dataset is built by each round; remove the key")
    train = validate(TrainConfig, {**config.train, "dataset": "."}, str(path), prefix="train")
    base = path.resolve().parent

    def absolute(value: Path) -> Path:
        return value if value.is_absolute() else (base / value).resolve()

    update: dict[str, Any] = {
        "rasters": [absolute(r) for r in config.rasters], "exclude": [absolute(e) for e in config.exclude],
        "annotations": config.annotations.model_copy(update={"path": absolute(config.annotations.path)}),
        "model": absolute(config.model) if config.model else None,
        "workdir": absolute(config.workdir) if config.workdir else base,
    }
    if config.evaluate is not None:
        ev = config.evaluate
        update["evaluate"] = ev.model_copy(update={"raster": absolute(ev.raster), "truth": absolute(ev.truth),
                                                   "aoi": absolute(ev.aoi) if ev.aoi else None})
    if config.evaluate is not None and config.evaluate.aoi is None and update["evaluate"].raster in update["rasters"]:
        raise ConfigError(f"{path}: evaluate.aoi: required when the evaluation raster is also tagged (the held-out "
                          "area must never be offered for tagging)")
    if train.model.weights:
        train = train.model_copy(update={"model": train.model.model_copy(
            update={"weights": str(absolute(Path(train.model.weights)))})})
    config = config.model_copy(update=update)
    check_round_config(config, train, str(path))
    return config, train


def check_round_config(config: RoundConfig, train: TrainConfig, source: str) -> None:
    """What the second call would find too late (after the analyst has tagged): the training config as ``train``
    checks it and the acquisition."""
    from aifactory.active import ACQUISITIONS
    from aifactory.training.loop import check_config

    check_config(train, source, "train.")
    ACQUISITIONS.resolve(config.select.strategy, f"{source}: select.strategy")


def check_round_files(config: RoundConfig, source: str) -> None:
    """The files of the config: rasters, the annotation layer (which may not exist before the first tiles are
    tagged: the analyst may create it then; a file that is there must be usable) and the evaluation files."""
    for number, raster in enumerate(config.rasters):
        _located(f"{source}: rasters.{number}", check_file, raster, "raster")
    if config.annotations.path.exists():
        check_annotations(config.annotations, source)
    if config.evaluate is not None:
        ev = config.evaluate
        for key, file in (("raster", ev.raster), ("truth", ev.truth), ("aoi", ev.aoi)):
            if file is not None:
                _located(f"{source}: evaluate.{key}", check_file, file)


def _located(where: str, check: Callable[..., Any], *args: Any) -> Any:
    """``check(*args)``, its one-line error prefixed with the YAML key it came from."""
    try:
        return check(*args)
    except AIFactoryError as exc:
        exc.args = (f"{where}: {exc}",)
        raise


def check_annotations(annotations: AnnotationLayer, source: str) -> None:
    """The annotation layer exists, opens, has the layer and the class field (read at the end of each round)."""
    import pyogrio

    from aifactory.io.vector import list_layers

    layers = _located(f"{source}: annotations.path", list_layers, annotations.path)
    if annotations.layer is not None and annotations.layer not in layers:
        raise ConfigError(f"{source}: annotations.layer: no layer {annotations.layer!r} in {annotations.path} "
                          f"(layers: {', '.join(layers) or 'none'})")
    fields = list(pyogrio.read_info(annotations.path, layer=annotations.layer)["fields"])
    if annotations.class_field not in fields:
        raise ConfigError(f"{source}: annotations.class_field: no field {annotations.class_field!r} in "
                          f"{annotations.path} (fields: {', '.join(fields) or 'none'})")


def read_records(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / ROUNDS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_record(workdir: Path, record: dict[str, Any]) -> None:
    records = [r for r in read_records(workdir) if r["round"] != record["round"]] + [record]
    write_text_atomic(workdir / ROUNDS_FILE, "".join(json.dumps(r) + "\n" for r in records))
    plot_rounds(records, workdir / "rounds.png")


def plot_rounds(records: list[dict[str, Any]], path: Path) -> None:
    """The project's learning curve: the evaluation metric against labelled tiles."""
    from aifactory.active.plots import curve_figure, save

    points = [(r["labelled_tiles"], r["metrics"].get(r.get("metric", "pixel_f1"))) for r in records if r.get("metrics")]
    points = [(x, y) for x, y in points if y is not None]
    if points:
        metric = records[-1].get("metric", "pixel_f1")
        series = {"this project": ([x for x, _ in points], [y for _, y in points], None)}
        save(curve_figure(series, metric.replace("_", " "), "active-learning rounds"), path)


def round_folders(workdir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in workdir.glob("round-*") if (p / TILES_FILE).is_file()
                  and p.name.split("-")[1].isdigit())


def evaluate_round(run: Path, ev: EvaluateConfig, out: Path, device: str) -> dict[str, float]:
    """Pixel and object metrics of ``run`` on the held-out area (prediction → scores + detections)."""
    from aifactory.evaluation import evaluate_objects, evaluate_pixels
    from aifactory.io.vector import align_to_crs, read_vector
    from aifactory.prediction.predict import predict

    result = predict([run], ev.raster, out, geofence=ev.aoi, device=device, score_floor=0.1)
    truth = read_vector(ev.truth, layer=ev.layer)
    detections = read_vector(result.detections, layer="detections")
    if ev.aoi is not None:
        area = align_to_crs(read_vector(ev.aoi), truth.crs, str(ev.aoi)).union_all()
        truth = truth[truth.geometry.representative_point().within(area)]
        area = align_to_crs(read_vector(ev.aoi), detections.crs, str(ev.aoi)).union_all()
        detections = detections[detections.geometry.representative_point().within(area)]
    pixels = evaluate_pixels(result.scores, truth, class_field=ev.class_field).per_class()
    foreground = [v for k, v in pixels.items() if k != "background" and (v["support"] or v["predicted"])]
    objects = evaluate_objects(detections, truth.rename(columns={ev.class_field: "class"}), iou=ev.iou,
                               min_score=ev.min_score).overall

    def mean(key: str) -> float:
        return float(sum(v[key] for v in foreground) / len(foreground)) if foreground else 0.0

    return {"pixel_f1": mean("f1"), "pixel_iou": mean("iou"), "object_f1": float(objects["f1"]),
            "object_precision": float(objects["precision"]), "object_recall": float(objects["recall"])}


def train_round(config: RoundConfig, train: TrainConfig, workdir: Path, number: int, device: str,
                previous: Path | None) -> dict[str, Any]:
    """Ingest every tagged tile so far, build the dataset, train, evaluate; the ``rounds.jsonl`` record."""
    from aifactory.active.tags import ingest_tags, tagged_tiles
    from aifactory.datasets.export import build_dataset
    from aifactory.training.loop import train as run_training

    started = time.monotonic()
    folder = workdir / f"round-{number}"
    layers = [workdir / f"round-{k}" / TILES_FILE for k in round_folders(workdir) if k <= number]
    tiles = tagged_tiles(layers)
    ingested = ingest_tags(tiles, config.annotations.path, folder / "tags", layer=config.annotations.layer,
                           class_field=config.annotations.class_field, classes=config.classes, chips=config.chips)
    build_dataset(ingested.config, folder / "dataset")
    model = train.model
    if config.warm_start and previous is not None:
        model = model.model_copy(update={"weights": str(previous / "model.pt")})
    round_train = train.model_copy(update={"dataset": str(folder / "dataset"), "model": model})
    run = folder / "run"
    run_training(round_train, run, resume=(run / "manifest.json").is_file(), device=device,
                 source=f"round {number}: train")
    record: dict[str, Any] = {"round": number, "labelled_tiles": ingested.tiles, "annotations": ingested.annotations,
                              "new_tiles": int((tiles["round"] == number).sum()), "run": str(run)}
    if config.evaluate is not None:
        record["metrics"] = evaluate_round(run, config.evaluate, folder / "eval", device)
        record["metric"] = config.evaluate.metric
    record["seconds"] = round(time.monotonic() - started, 1)
    return record


def run_round(path: str | Path, device: str = "auto") -> RoundResult:
    """Advance the project of the config at ``path`` by one round (see the module docstring)."""
    from aifactory.active.select import read_tiles, select_tiles, write_tiles

    config, train = load_round_config(path)
    assert config.workdir is not None
    workdir = config.workdir
    rep = reporter()
    numbers = round_folders(workdir)
    check_round_files(config, str(path))
    current = numbers[-1] if numbers else 0
    records = {r["round"]: r for r in read_records(workdir)}
    record = None
    if current:
        tiles_path = workdir / f"round-{current}" / TILES_FILE
        status = read_tiles(tiles_path)["status"]
        pending = int((status == "to_tag").sum())
        if pending:
            raise WaitingForTags(f"round {current} is waiting for tags: {pending} of {len(status)} tiles in "
                                 f"{tiles_path} are still to_tag; tag or skip them (QGIS Tagging dock), then run "
                                 "al round again")
        if current not in records:
            check_annotations(config.annotations, str(path))
            previous = Path(records[max(records)]["run"]) if records else config.model
            record = train_round(config, train, workdir, current, device, previous)
            append_record(workdir, record)
            records[current] = record
            metrics = ", ".join(f"{k} {v:.3f}" for k, v in record.get("metrics", {}).items())
            rep.log(f"round {current}: trained on {record['labelled_tiles']} tagged tiles"
                    + (f"; {metrics}" if metrics else ""))
    model = Path(records[max(records)]["run"]) if records else config.model
    options = config.select
    if model is None:
        rep.log("first round without a model: the tiles are picked at random")
        options = options.model_copy(update={"strategy": "random", "diversity": "none"})
    exclude = [*config.exclude, *(workdir / f"round-{k}" / TILES_FILE for k in numbers)]
    if config.evaluate is not None and config.evaluate.aoi is not None:
        exclude.append(config.evaluate.aoi)
    number = current + 1
    tiles = select_tiles(model, config.rasters, config.n, options, tile_size=config.tile_size, exclude=exclude,
                         round_number=number, device=device)
    out = write_tiles(tiles, workdir / f"round-{number}" / TILES_FILE)
    message = f"round {number}: {len(tiles)} tiles to tag in {out}"
    rep.log(message)
    return RoundResult(number, out, record, message)
