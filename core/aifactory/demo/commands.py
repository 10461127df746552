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
    """The figures worth a glance: data, training, prediction, metrics, where the report is."""
    rows: list[tuple[str, str]] = []
    meta = json.loads((Path(outputs["dataset"]["dataset"]) / "dataset.json").read_text())
    rows.append(("dataset chips", ", ".join(f"{k} {v}" for k, v in meta["splits"].items())))
    prediction = json.loads(Path(outputs["predict"]["summary"]).read_text())
    rows.append(("held-out tiles predicted", f"{prediction['tiles_predicted']} of {prediction['tiles_total']} "
                                             f"({prediction['tiles_skipped_outside']} outside the geofence)"))
    metrics = json.loads(Path(outputs["evaluate"]["metrics"]).read_text())["overall"]
    rows.append(("truth / detections", f"{metrics['tp'] + metrics['fn']} / {metrics['tp'] + metrics['fp']}"))
    rows.append(("TP / FP / FN", f"{metrics['tp']} / {metrics['fp']} / {metrics['fn']}"))
    rows.append(("precision / recall / F1", f"{metrics['precision']:.3f} / {metrics['recall']:.3f} / "
                                            f"{metrics['f1']:.3f}  (IoU ≥ 0.5, all scores ≥ floor)"))
    if metrics.get("ap50") is not None:
        rows.append(("AP@0.5 / AP@0.5:0.95", f"{metrics['ap50']:.3f} / {metrics['ap']:.3f}"))
    operating = json.loads(Path(outputs["rps"]["operating_point"]).read_text())
    rows.append(("operating point (max F1)", f"score ≥ {operating['score']:.2f}: P {operating['precision']:.3f} "
                                             f"R {operating['recall']:.3f} F1 {operating['f1']:.3f}"))
    rows.append(("detections", outputs["predict"]["detections"]))
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
    click.echo("\nAI Factory demo — NEON tree crowns, held-out region of 2019_YELL_2_528000_4978000_image_crop2")
    for name, value in rows:
        click.echo(f"  {name:<{width}}  {value}")
