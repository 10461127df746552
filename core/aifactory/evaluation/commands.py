"""CLI commands of the evaluation stage: ``evaluate``, ``rps`` and ``runs list|compare``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from aifactory.catalog.hierarchy import MAX_LEVEL  # the class hierarchy's depth, for --level (no heavy imports)
from aifactory.cli import echo_json, with_events
from aifactory.io.output_paths import absolute, check_file_output, folder_output
from aifactory.progress import reporter

#: ``--level`` of evaluate and rps: both sides' classes cut to their first N levels of the hierarchy before matching.
LEVEL_OPTION = click.option(
    "--level", type=click.IntRange(1, MAX_LEVEL), metavar="N",
    help=f"Cut truth and predicted classes to their first N hierarchy levels (1–{MAX_LEVEL}) before matching, e.g. "
         "truth annotated deeper than the model's classes.")

TABLE_COLUMNS = ("n_truth", "n_pred", "tp", "fp", "fn", "precision", "recall", "f1", "ap50", "ap")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e4 else f"{value:.3f}"
    return str(value)


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    """A plain aligned text table on stdout."""
    cells = [[str(h) for h in header], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                   strict=True))))
        if k == 0:
            click.echo("  ".join("-" * w for w in widths))


def _write_json(path: Path, data: Any) -> None:
    from aifactory.io.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2, default=str))
    reporter().artifact("metrics", path)


def _load(path: Path, layer: str | None, crs: str | None, prefer: str | None = None) -> Any:
    from aifactory.evaluation.objects import load_objects

    return load_objects(str(path), layer=layer, crs=crs, prefer_layer=prefer)


def _common_vector_options(func: Any) -> Any:
    options = [
        click.option("--pred-layer", help="Layer of the predictions (default: 'detections' if present, else the "
                     "first)."),
        click.option("--truth-layer", help="Layer of the truth (default: the first)."),
        click.option("--pred-crs", help="CRS of predictions that carry none (CSV+WKT)."),
        click.option("--truth-crs", help="CRS of truth that carries none (CSV+WKT)."),
        click.option("--class-field", default="class", show_default=True, help="Field holding the class."),
        click.option("--score-field", default="score", show_default=True, help="Field holding the score (0–1)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command()
@click.option("--pred", "pred_path", required=True, type=click.Path(path_type=Path),
              help="Predictions: vector (any OGR format, CSV+WKT) or a scores/class raster for pixel metrics.")
@click.option("--truth", "truth_path", required=True, type=click.Path(path_type=Path),
              help="Truth: vector, or a class raster on the prediction's grid (pixel metrics).")
@click.option("--iou", default=0.5, show_default=True, help="IoU for a match (objects).")
@click.option("--min-area", default=0.0, show_default=True,
              help="Drop truth and predictions smaller than this (map units², pixels² without CRS).")
@click.option("--by", help="Field grouping objects (image, AOI): metrics per group.")
@click.option("--min-score", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Count detections with score ≥ this (0–1).")
@_common_vector_options
@click.option("--classes", help="Pixel metrics on a class raster: comma-separated names of indices 1..n.")
@click.option("--threshold", type=float,
              help="Pixel metrics on a scores raster: below this best score a pixel is background "
                   "(default: the implied background 255 − Σ scores, as prediction vectorizes).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the metrics as JSON.")
@click.option("--report", "report_dir", type=click.Path(path_type=Path),
              help="Write an HTML report with curves, confusion matrix and thumbnails into this folder.")
@click.option("--raster", type=click.Path(path_type=Path), help="Imagery under the report's thumbnails.")
@LEVEL_OPTION
@with_events
def evaluate(pred_path: Path, truth_path: Path, iou: float, min_area: float, by: str | None, min_score: float,
             pred_layer: str | None, truth_layer: str | None, pred_crs: str | None, truth_crs: str | None,
             class_field: str, score_field: str, classes: str | None, threshold: float | None, json_path: Path | None,
             report_dir: Path | None, raster: Path | None, level: int | None) -> None:
    """Object metrics (P/R/F1, mAP) of PRED against TRUTH, or pixel metrics when PRED is a raster."""
    from aifactory.evaluation.pixels import RASTER_SUFFIXES, evaluate_pixels
    from aifactory.evaluation.report import check_imagery, write_report

    if report_dir is not None:
        folder_output(report_dir)
    if json_path is not None:
        check_file_output(absolute(json_path))
    result: Any
    if pred_path.suffix.lower() in RASTER_SUFFIXES:
        truth: Any = truth_path
        if truth_path.suffix.lower() not in RASTER_SUFFIXES:
            truth = _load(truth_path, truth_layer, truth_crs)
        result = evaluate_pixels(pred_path, truth, class_field=class_field, threshold=threshold,
                                 classes=[c.strip() for c in classes.split(",")] if classes else None,
                                 truth_source=str(truth_path), level=level)
        data = result.to_dict()
        print_table([[name, *(v[c] for c in ("support", "predicted", "iou", "precision", "recall", "f1"))]
                     for name, v in data["classes"].items()],
                    ["class", "support", "predicted", "iou", "precision", "recall", "f1"])
        click.echo("overall: " + ", ".join(f"{k} {_cell(v)}" for k, v in data["overall"].items()))
    else:
        from aifactory.evaluation.objects import evaluate_objects

        pred = _load(pred_path, pred_layer, pred_crs, prefer="detections")
        truth = _load(truth_path, truth_layer, truth_crs)
        if report_dir is not None and raster is not None:
            check_imagery(raster, pred, truth)
        if by == class_field:  # the per-class rows are always there: grouping by class printed each one twice
            by = None
        result = evaluate_objects(pred, truth, iou=iou, min_area=min_area, by=by, class_field=class_field,
                                  score_field=score_field, min_score=min_score, pred_source=str(pred_path),
                                  truth_source=str(truth_path), level=level)
        data = result.to_dict()
        rows = [["all", *(data["overall"][c] for c in TABLE_COLUMNS)]]
        rows += [[f"class {name}", *(v[c] for c in TABLE_COLUMNS)] for name, v in data["classes"].items()]
        rows += [[f"{by} {name}", *(v[c] for c in TABLE_COLUMNS)] for name, v in data["groups"].items()]
        print_table(rows, ["scope", *TABLE_COLUMNS])
    if json_path is not None:
        _write_json(json_path, data)
    if report_dir is not None:
        path = write_report(result, report_dir, raster=raster)
        click.echo(f"report: {path}", err=True)


@click.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="YAML with any of these options (paths relative to it); flags given here win.")
@click.option("--pred", "pred_path", type=click.Path(path_type=Path),
              help="Raw detections (GeoPackage layer 'detections', any OGR format, CSV+WKT).")
@click.option("--truth", "truth_path", type=click.Path(path_type=Path), help="Truth objects.")
@click.option("--sweep", "sweeps", multiple=True, metavar="NAME=START:STOP:STEP|V1,V2",
              help="score, min_area, nms_iou or OP.PARAM (post-processing); repeat for each. "
                   "Default: score=0.05:0.95:0.05.")
@click.option("--target-precision", type=float,
              help="Choose the highest recall with at least this precision (default: the highest F1).")
@click.option("--by-class", is_flag=True, help="Also choose each class's own best parameters.")
@click.option("--geofence", type=click.Path(path_type=Path),
              help="Polygons (zones): count only objects inside, and give an operating point per zone.")
@click.option("--iou", default=0.5, show_default=True, help="IoU for a match.")
@LEVEL_OPTION
@_common_vector_options
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output folder.")
@with_events
def rps(config_path: Path | None, **flags: Any) -> None:
    """Search the operating point (score × min area × NMS IoU × post-processing) over stored detections."""
    from aifactory.config import validate
    from aifactory.errors import ConfigError
    from aifactory.evaluation.rps import RpsConfig, check_zones, load_rps_config, parse_sweeps, run_rps
    from aifactory.io.vector import read_vector

    ctx = click.get_current_context()
    names = {"pred_path": "pred", "truth_path": "truth", "sweeps": "sweep"}
    given = {names.get(k, k): v for k, v in flags.items()
             if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    base = load_rps_config(config_path) if config_path is not None else validate(RpsConfig, {}, "options")
    flags_specs = given.pop("sweep", ())
    specs = [*base.sweep_specs(), *flags_specs]
    origins = [*(f"{config_path}: sweep.{name}" for name in base.sweep), *(f"--sweep {spec}" for spec in flags_specs)]
    merged = {**base.model_dump(), **{k: str(v) if isinstance(v, Path) else v for k, v in given.items()}, "sweep": {}}
    config = validate(RpsConfig, merged, str(config_path or "options"))
    for key in ("pred", "truth", "output"):
        if getattr(config, key) is None:
            raise ConfigError(f"--{key} is required (on the command line or in --config)")
    # later specs of one name (command line) replace earlier ones (file)
    chosen = {spec.partition("=")[0].strip(): (spec, where) for spec, where in zip(specs, origins, strict=True)}
    grid = parse_sweeps([spec for spec, _ in chosen.values()], [where for _, where in chosen.values()])
    folder_output(Path(str(config.output)))  # before the sweep: a folder of the user's is refused at once
    pred = _load(Path(str(config.pred)), config.pred_layer, config.pred_crs, prefer="detections")
    truth = _load(Path(str(config.truth)), config.truth_layer, config.truth_crs)
    zones = check_zones(read_vector(config.geofence), config.geofence) if config.geofence is not None else None
    output = Path(str(config.output))
    op = run_rps(pred, truth, grid, output, iou=config.iou, target_precision=config.target_precision,
                 by_class=config.by_class, geofence=zones, class_field=config.class_field,
                 score_field=config.score_field, pred_source=str(config.pred), truth_source=str(config.truth),
                 level=config.level)
    click.echo(f"operating point ({op['criterion']}): score ≥ {op['score']:g}, min_area {op['min_area']:g}, "
               f"nms_iou {op['nms_iou'] if op['nms_iou'] is not None else 'none'}"
               + "".join(f", {k} {v:g}" for k, v in op["postprocess"].items())
               + f" → precision {op['precision']:.3f}, recall {op['recall']:.3f}, F1 {op['f1']:.3f}")
    if not op["target_met"]:
        reporter().warning(f"no point reaches precision {config.target_precision}; the most precise one was chosen")
    for name, point in op["per_class"].items():
        click.echo(f"  {name}: score ≥ {point['score']:g}, precision {point['precision']:.3f}, "
                   f"recall {point['recall']:.3f}, F1 {point['f1']:.3f}")
    click.echo(f"wrote {output}/operating_point.json, points.csv, pr_curve.png, f1_curve.png", err=True)


@click.group()
def runs() -> None:
    """List and compare training runs (run folders or an MLflow tracking store)."""


def _records(targets: Sequence[str], tracking_uri: str | None, experiment: str | None) -> list[Any]:
    from aifactory.evaluation import runs as runs_mod

    if tracking_uri:
        return runs_mod.mlflow_runs(tracking_uri, experiment=experiment, runs=targets)
    records = [runs_mod.load_run_dir(t) for t in targets]
    if len({r.name for r in records}) < len(records):  # x/best and y/best: name them by the paths given
        for record, target in zip(records, targets, strict=True):
            record.name = target
    return records


@runs.command("list")
@click.argument("root", required=False, default="runs", type=click.Path(path_type=Path))
@click.option("--tracking-uri", help="Read runs from this MLflow store instead of folders.")
@click.option("--experiment", help="Only this MLflow experiment.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def list_runs(root: Path, tracking_uri: str | None, experiment: str | None, as_json: bool) -> None:
    """Runs under ROOT (default ./runs) with their key metrics."""
    from aifactory.evaluation import runs as runs_mod

    records = (runs_mod.mlflow_runs(tracking_uri, experiment=experiment) if tracking_uri
               else runs_mod.list_run_dirs(root))
    metrics = runs_mod.key_metrics(records)
    if as_json:
        echo_json([{"run": r.name, "source": r.source, "created": r.created, "status": r.status,
                    "final": r.final()} for r in records])
        return
    if not records:
        click.echo(f"no runs in {tracking_uri or root}", err=True)
        return
    print_table([[r.name, r.created or "-", r.status or "-", *(r.final().get(m) for m in metrics)] for r in records],
                ["run", "created", "status", *metrics])


@runs.command("compare")
@click.argument("targets", nargs=-1, required=True)
@click.option("--tracking-uri", help="RUNs are MLflow run ids or names in this store.")
@click.option("--experiment", help="Only look in this MLflow experiment.")
@click.option("--metric", "metrics", multiple=True, help="Metric to show (repeatable; default: the key ones).")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Folder for curves.png (overlaid metric series) and compare.json.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def compare_runs(targets: tuple[str, ...], tracking_uri: str | None, experiment: str | None,
                 metrics: tuple[str, ...], output: Path | None, as_json: bool) -> None:
    """Key metrics side by side, the config keys that differ, and overlaid curves of RUN… ."""
    from aifactory.evaluation import runs as runs_mod
    from aifactory.io.atomic import atomic_path

    if output is not None:
        folder_output(output)
    records = _records(targets, tracking_uri, experiment)
    if output is not None:
        with atomic_path(output, folder=True) as tmp:
            tmp.mkdir(parents=True)
            result = runs_mod.compare(records, plot=tmp / "curves.png", metrics=list(metrics) or None)
            if "plot" in result:
                result["plot"] = str(output / "curves.png")
            (tmp / "compare.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    else:
        result = runs_mod.compare(records, metrics=list(metrics) or None)
    if as_json:
        echo_json(result)
        return
    names = result["runs"]
    metric_names = list(next(iter(result["metrics"].values()), {}))
    print_table([[m, *(result["metrics"][n][m] for n in names)] for m in metric_names], ["metric", *names])
    diff = result["config_diff"]
    click.echo("")
    if diff:
        print_table([[k, *(json.dumps(v, default=str) if v is not None else "(absent)" for v in values)]
                     for k, values in diff.items()], ["config", *names])
    else:
        click.echo("configs: identical" if any(r.config for r in records) else "configs: none found")
    if output is not None:
        click.echo(f"wrote {output}: {'curves.png, ' if 'plot' in result else ''}compare.json", err=True)
