"""``aifactory demo``: run the main job's pipeline on real NEON imagery and print a summary."""

from __future__ import annotations

import json
from pathlib import Path

import click

from aifactory.cli import with_events
from aifactory.errors import InputError

#: the demo pipeline ships with the source tree (make install installs the checkout in editable mode)
PIPELINE = Path(__file__).resolve().parents[3] / "resources" / "pipelines" / "neon_demo.yaml"


def summary_rows(outputs: dict[str, dict[str, str]]) -> list[tuple[str, str]]:
    """The figures worth a glance: data, training, prediction, operating point, held-out metrics, files."""
    rows: list[tuple[str, str]] = []
    meta = json.loads((Path(outputs["dataset"]["dataset"]) / "dataset.json").read_text())
    rows.append(("dataset chips", ", ".join(f"{k} {v}" for k, v in meta["splits"].items())
                 + " (test = the held-out strip)"))
    card = json.loads((Path(outputs["train"]["run"]) / "model.json").read_text())
    extra = card["extra"]
    rows.append(("training", f"{card['architecture']}, {extra['steps']} steps, best validation "
                             f"{extra['monitor']} {extra['best']:.3f} at step {extra['best_step']}"))
    prediction = json.loads(Path(outputs["predict"]["summary"]).read_text())
    rows.append(("held-out tiles predicted", f"{prediction['tiles_predicted']} of {prediction['tiles_total']} "
                                             f"({prediction['tiles_skipped_outside']} outside the geofence)"))
    point = json.loads(Path(outputs["rps"]["operating_point"]).read_text())
    chosen = ", ".join([f"score ≥ {point['score']:.2f}", f"NMS IoU {point['nms_iou']}",
                        f"min area {point['min_area']:g} px²",
                        *(f"{k} {v:g}" for k, v in point.get("postprocess", {}).items())])
    rows.append(("operating point (tune half)", f"{chosen}: F1 {point['f1']:.3f}"))
    metrics = json.loads(Path(outputs["evaluate"]["metrics"]).read_text())["overall"]
    rows.append(("test half: TP / FP / FN", f"{metrics['tp']} / {metrics['fp']} / {metrics['fn']}"))
    rows.append(("test half: P / R / F1", f"{metrics['precision']:.3f} / {metrics['recall']:.3f} / "
                                          f"{metrics['f1']:.3f}  (IoU ≥ 0.5, at the operating point)"))
    if metrics.get("ap50") is not None:
        rows.append(("test half: AP@0.5", f"{metrics['ap50']:.3f} (all scores)"))
    rows.append(("detections", outputs["final"]["detections"]))
    rows.append(("report", outputs["evaluate"]["report"]))
    return rows


@click.command()
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("demo_output"), show_default=True,
              help="Run folder (re-running skips what is already done).")
@click.option("--dry-run", is_flag=True, help="Print the plan and stop.")
@with_events
def demo(output: Path, dry_run: bool) -> None:
    """The main job: NEON tree crowns → dataset → training → held-out prediction → evaluation and report."""
    from aifactory.pipeline.runner import plan, run
    from aifactory.pipeline.spec import load_pipeline

    if not PIPELINE.is_file():
        raise InputError(f"{PIPELINE}: demo pipeline not found (run aifactory from its source checkout)")
    pipeline = load_pipeline(PIPELINE)
    pipeline.workdir = output.expanduser().resolve()
    if dry_run:
        for step in plan(pipeline):
            click.echo(f"{step.action:<4}  {step.name}: {step.reason}")
        return
    outputs = run(pipeline)
    rows = summary_rows(outputs)
    width = max(len(name) for name, _ in rows)
    click.echo("\nAI Factory demo — NEON tree crowns, held-out strip of 2019_YELL_2_528000_4978000_image_crop2")
    for name, value in rows:
        click.echo(f"  {name:<{width}}  {value}")
