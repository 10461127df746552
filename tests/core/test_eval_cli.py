"""``aifactory evaluate`` as a user runs it: JSON schema, CSV+WKT input, pixel mode, and bad inputs that
end in one line on stderr with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from aifactory.io.vector import write_vector


@pytest.fixture(scope="module")
def detections(small_scene: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GeoPackage with a 'detections' layer (first layer 'other', so the layer choice matters) and
    an 'aoi' field for grouping."""
    _, truth_path = small_scene
    truth = gpd.read_file(truth_path)
    pred = truth.iloc[2:].copy()
    pred["score"] = 0.9
    pred["aoi"] = ["north" if g.centroid.y > truth.total_bounds[1] + 120 else "south" for g in pred.geometry]
    path = tmp_path_factory.mktemp("det") / "pred.gpkg"
    write_vector(truth.iloc[:1], path, layer="other")
    pred.to_file(path, layer="detections", engine="pyogrio", mode="a")
    return path


def test_evaluate_json_schema_and_groups(cli, small_scene, detections: Path, tmp_path: Path) -> None:
    _, truth_path = small_scene
    truth = gpd.read_file(truth_path)
    truth["aoi"] = ["north" if g.centroid.y > truth.total_bounds[1] + 120 else "south" for g in truth.geometry]
    truth_file = tmp_path / "truth.gpkg"
    write_vector(truth, truth_file)
    out = tmp_path / "m.json"
    run = cli("evaluate", "--pred", str(detections), "--truth", str(truth_file), "--by", "aoi", "--json", str(out),
              "--events", "none")
    assert run.returncode == 0, run.stderr
    assert "precision" in run.stdout and "class building" in run.stdout
    data = json.loads(out.read_text())
    assert {"tp", "fp", "fn", "precision", "recall", "f1", "ap50", "ap"} <= set(data["overall"])
    assert data["overall"]["fn"] == 2 and data["overall"]["fp"] == 0  # the first two objects were not detected
    assert set(data["groups"]) == {"north", "south"}
    assert sum(g["tp"] for g in data["groups"].values()) == data["overall"]["tp"]
    assert set(data["classes"]) == set(truth["class"])
    by_class = cli("evaluate", "--pred", str(detections), "--truth", str(truth_file), "--by", "class", "--events",
                   "none")
    assert by_class.returncode == 0 and by_class.stdout.count("class building ") == 1, by_class.stdout


def test_evaluate_csv_wkt_predictions(cli, small_scene, tmp_path: Path) -> None:
    _, truth_path = small_scene
    truth = gpd.read_file(truth_path)
    csv = tmp_path / "pred.csv"
    frame = truth.assign(score=0.8, wkt=truth.geometry.to_wkt()).drop(columns="geometry")
    frame.to_csv(csv, index=False)
    run = cli("evaluate", "--pred", str(csv), "--truth", str(truth_path), "--pred-crs", "EPSG:32631",
              "--json", str(tmp_path / "m.json"), "--events", "none")
    assert run.returncode == 0, run.stderr
    overall = json.loads((tmp_path / "m.json").read_text())["overall"]
    assert overall["tp"] == len(truth) and overall["f1"] == 1.0


def test_evaluate_jsonl_events_keep_stdout_clean(cli, small_scene, detections: Path) -> None:
    _, truth_path = small_scene
    run = cli("evaluate", "--pred", str(detections), "--truth", str(truth_path), "--events", "jsonl")
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert events[-1] == {"event": "done", "status": "ok"}
    assert any(e["event"] == "progress" and e["task"] == "evaluate" for e in events)


def test_bad_inputs_exit_2_with_one_line(cli, small_scene, detections: Path, tmp_path: Path) -> None:
    _, truth_path = small_scene
    points = tmp_path / "points.geojson"
    gpd.GeoDataFrame({"score": [0.5]}, geometry=[shapely.Point(0, 0)], crs="EPSG:32631").to_file(points)
    no_wkt = tmp_path / "bad.csv"
    no_wkt.write_text("a,b\n1,2\n")
    cases = {
        "not found": ["--pred", str(tmp_path / "missing.gpkg"), "--truth", str(truth_path)],
        "no group field": ["--pred", str(detections), "--truth", str(truth_path), "--by", "image"],
        "points": ["--pred", str(points), "--truth", str(truth_path)],
        "no WKT": ["--pred", str(no_wkt), "--truth", str(truth_path)],
        "iou": ["--pred", str(detections), "--truth", str(truth_path), "--iou", "0"],
    }
    for name, args in cases.items():
        run = cli("evaluate", *args, "--events", "none")
        assert run.returncode == 2, (name, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("aifactory: error: "), (name, run.stderr)
        assert "Traceback" not in run.stderr
