"""The main job's pipeline on the real NEON imagery, with a tiny training budget.

The imagery comes from the pinned deepforest wheel (PyPI, cached in $AIFACTORY_CACHE). The test checks the
chain end to end — dataset with a held-out region, training, held-out prediction through a geofence, boxes,
evaluation, report, operating point — and that no training or validation chip touches the held-out region.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import shapely
import yaml

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "resources" / "pipelines" / "neon_demo.yaml"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, str]]]:
    from aifactory.pipeline.runner import run
    from aifactory.pipeline.spec import load_pipeline

    folder = tmp_path_factory.mktemp("demo")
    spec = yaml.safe_load(DEMO.read_text())
    train = spec["tasks"]["train"]["params"]["config"]
    train.update(max_steps=3, epochs=1, checkpoint_every=2, num_workers=0, batch_size=4)
    train["tracking"] = {"enabled": False}
    path = folder / "demo.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    pipeline = load_pipeline(path)
    return folder, run(pipeline)


def test_every_output_is_there(demo_run):
    _, outputs = demo_run
    metrics = json.loads(Path(outputs["evaluate"]["metrics"]).read_text())["overall"]
    assert {"tp", "fp", "fn", "precision", "recall", "f1"} <= set(metrics)
    assert metrics["tp"] + metrics["fn"] > 50  # the test half of the held-out strip holds 77 annotated crowns
    report = Path(outputs["evaluate"]["report"])
    html = report.read_text()
    for picture in ("pr_curve.png", "overview.png"):
        assert picture in html and (report.parent / picture).stat().st_size > 1000
    operating = json.loads(Path(outputs["rps"]["operating_point"]).read_text())
    assert 0 <= operating["f1"] <= 1 and "scale.factor" in operating["postprocess"]
    from aifactory.io.vector import read_vector

    final = read_vector(outputs["final"]["detections"], layer="detections")
    assert (final["score"] >= operating["score"]).all()
    card = json.loads((Path(outputs["train"]["run"]) / "model.json").read_text())
    assert card["extra"]["label_mode"] == "core" and card["classes"] == ["background", "tree"]


def test_held_out_region_is_never_trained_on(demo_run):
    _, outputs = demo_run
    from aifactory.io.vector import read_vector

    holdout = read_vector(outputs["holdout"]["path"]).union_all()
    chips = pd.read_csv(Path(outputs["dataset"]["dataset"]) / "chips.csv")
    yell2 = Path(outputs["neon"]["yell2_raster"]).stem
    seen = chips[(chips["source"] == yell2) & chips["split"].isin(["train", "val"])]
    assert len(seen) > 0
    footprints = shapely.from_wkt(seen["footprint_wkt"].to_numpy())
    assert not shapely.intersects(footprints, holdout).any()


def test_prediction_stays_inside_the_geofence(demo_run):
    _, outputs = demo_run
    from aifactory.io.vector import read_vector

    holdout = read_vector(outputs["holdout"]["path"]).union_all()
    summary = json.loads(Path(outputs["predict"]["summary"]).read_text())
    assert summary["tiles_skipped_outside"] > 0 and summary["tiles_predicted"] > 0
    detections = read_vector(outputs["predict"]["detections"], layer="detections")
    if len(detections):
        assert shapely.intersects(detections.geometry.array, holdout.buffer(1)).all()


def test_demo_command_plans_the_pipeline(cli, tmp_path):
    result = cli("demo", "--dry-run", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert [line.split()[1].rstrip(":") for line in result.stdout.splitlines()] == [
        "neon", "holdout", "tune", "test", "dataset", "train", "predict", "boxes", "rps", "evaluate", "final"]
