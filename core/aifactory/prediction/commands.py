"""CLI of the prediction stage: ``aifactory predict``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from aifactory.cli import with_events
from aifactory.heap import POLICIES
from aifactory.heap import VARIABLE as HEAP_VARIABLE


@click.command()
@click.option("--model", "models", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Run directory of a trained model (model.json + model.pt; repeat to ensemble), a bundle "
                   "(model.zip, runs without torch) or models:/NAME@ALIAS from the model registry.")
@click.option("--raster", required=True, type=click.Path(path_type=Path), help="Raster to predict.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder for scores.tif and detections.gpkg.")
@click.option("--geofence", type=click.Path(path_type=Path), help="Polygons to predict inside (any CRS).")
@click.option("--exclude", type=click.Path(path_type=Path), help="Polygons never to predict (any CRS).")
@click.option("--geofence-rule", type=click.Choice(["keep", "clip", "drop-partial"]), default="keep",
              show_default=True, help="Detections crossing the geofence border: keep whole, clip, or drop.")
@click.option("--tta", "tta", flag_value="d4", default=None,
              help="Test-time augmentation: the 8 flips and rotations of each tile, averaged.")
@click.option("--tta-mode", type=click.Choice(["none", "flips", "d4"]), default=None,
              help="Choose the TTA transforms explicitly (flips = 4 passes, d4 = 8).")
@click.option("--ensemble", type=click.Choice(["mean", "weighted", "max", "vote"]), default="mean",
              show_default=True, help="How several --model outputs are combined.")
@click.option("--weights", help="Comma-separated per-model weights for --ensemble weighted.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1, 1024),
              help="Tiles the model holds at once (on the CPU, two batches of half as many run side by side).")
@click.option("--overlap", type=click.IntRange(0), help="Overlap between tiles in pixels [tile/8].")
@click.option("--blend", type=click.Choice(["cosine", "hann", "crop"]), default="cosine", show_default=True,
              help="Blending window for overlapping tiles.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "bf16"]),
              help="auto uses bf16 only where the hardware has it and it matches fp32 on the first batch.")
@click.option("--score-floor", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Detections with a lower mean score are not written.")
@click.option("--instance-h", default=2.0, show_default=True, type=click.FloatRange(0),
              help="Neck depth in pixels that splits touching objects (0: never split).")
@click.option("--postprocess", type=click.Path(path_type=Path),
              help="YAML chain of post-processing ops applied to the detections.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Fan tile rows out to N Ray tasks (same output as one process): the Ray cluster this runs in, "
                   "--ray-address, or a local Ray started for the call.")
@click.option("--ray-address", help="Ray cluster for --workers (e.g. 10.0.0.5:6379) [RAY_ADDRESS or local].")
@click.option("--worker-cpus", default=1.0, show_default=True, type=click.FloatRange(0),
              help="CPUs each --workers task asks Ray for.")
@click.option("--worker-gpus", default=0.0, show_default=True, type=click.FloatRange(0),
              help="GPUs each --workers task asks Ray for (1 on a GPU cluster).")
@click.option("--heap", type=click.Choice(POLICIES),
              help="How freed memory is kept [AIFACTORY_HEAP, else lean]: lean keeps the peak flat whatever the "
                   "raster, the model's own blocks reused within a cap (AIFACTORY_TENSOR_POOL_MB, 512); reuse keeps "
                   "all freed memory, and its peak grows with the run (aifactory.heap).")
@with_events
def predict(models: tuple[Path, ...], raster: Path, out_dir: Path, geofence: Path | None, exclude: Path | None,
            geofence_rule: str, tta: str | None, tta_mode: str | None, ensemble: str, weights: str | None,
            batch_size: int, overlap: int | None, blend: str, device: str, precision: str, score_floor: float,
            instance_h: float, postprocess: Path | None, workers: int, ray_address: str | None,
            worker_cpus: float, worker_gpus: float, heap: str | None) -> None:
    """Predict RASTER with one or more trained models: OUT/scores.tif and OUT/detections.gpkg."""
    from aifactory.errors import ConfigError
    from aifactory.prediction.fanout import FanOut
    from aifactory.prediction.predict import predict as run_predict

    if tta and tta_mode == "none":
        raise ConfigError("--tta asks for test-time augmentation and --tta-mode none for none: give one of them")
    if heap is not None:  # read when predict sets up its process, before torch allocates anything
        os.environ[HEAP_VARIABLE] = heap
    member_weights = None
    if weights:
        try:
            member_weights = [float(w) for w in weights.split(",")]
        except ValueError:
            raise ConfigError(f"--weights: expected comma-separated numbers, got {weights!r}") from None
    try:
        result = run_predict(list(models), raster, out_dir, geofence=geofence, exclude=exclude,
                             geofence_rule=geofence_rule, tta=tta_mode or tta or False, batch_size=batch_size,
                             device=device, score_floor=score_floor, ensemble=ensemble, weights=member_weights,
                             overlap=overlap, blend=blend, precision=precision,  # type: ignore[arg-type]
                             instance_h=instance_h, postprocess=postprocess, workers=workers,
                             fan_out=FanOut(ray_address, worker_cpus, worker_gpus))
    except ConfigError as exc:  # the library names its argument "tta"; here the user typed an option
        if str(exc).startswith("tta: "):
            exc.args = (f"{'--tta-mode' if tta_mode else '--tta'}: {str(exc).removeprefix('tta: ')}",)
        raise
    click.echo(f"predicted {result.tiles_predicted}/{result.tiles_total} tiles on {result.device} "
               f"({result.precision}): {result.detections_count} detections -> {result.detections}", err=True)
