"""RPS: a synthetic case with a known optimum (score × min_area × NMS), the incremental sweep equal to
re-matching from scratch, NMS equal to the post-processing op, post-processing sweeps, per class,
per geofence, target precision, and the CLI's outputs and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from aifactory.errors import ConfigError
from aifactory.evaluation.matching import nms_keep, rank_order, self_pairs
from aifactory.evaluation.objects import evaluate_objects
from aifactory.evaluation.rps import choose_operating_point, load_rps_config, parse_sweeps, run_rps, sweep

UTM = "EPSG:32631"
X0, Y0 = 500_000.0, 5_000_000.0


def detections_case(seed: int = 0) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, dict]:
    """Truth: 30 squares of 10 m. Detections, each of a known kind:
    hit (exact copy, score 0.45–0.95), far false positive (score 0.05–0.6), tiny false positive
    (2 × 2 m, score 0.7–0.95), duplicate of a hit (shifted 2 m: IoU 0.67 with it, lower score)."""
    rng = np.random.default_rng(seed)
    squares = [shapely.box(X0 + 30 * i, Y0, X0 + 30 * i + 10, Y0 + 10) for i in range(30)]
    truth = gpd.GeoDataFrame({"class": ["roof"] * len(squares)}, geometry=squares, crs=UTM)
    rows = []
    for i, sq in enumerate(squares[:26]):
        score = float(rng.uniform(0.45, 0.95))
        rows.append(("hit", score, sq))
        if i % 3 == 0:
            rows.append(("dup", score - 0.01, shapely.affinity.translate(sq, 2, 0)))
    for i in range(12):
        rows.append(("far", float(rng.uniform(0.05, 0.6)), shapely.box(X0 + 30 * i, Y0 + 100, X0 + 30 * i + 10,
                                                                          Y0 + 110)))
    for i in range(6):
        rows.append(("tiny", float(rng.uniform(0.7, 0.95)), shapely.box(X0 + 30 * i, Y0 + 200, X0 + 30 * i + 2,
                                                                           Y0 + 202)))
    pred = gpd.GeoDataFrame({"kind": [r[0] for r in rows], "score": [r[1] for r in rows], "class": "roof"},
                            geometry=[r[2] for r in rows], crs=UTM)
    return pred, truth, {"n_truth": len(truth)}


def oracle(pred: gpd.GeoDataFrame, n_truth: int, score: float, min_area: float, nms: float | None) -> tuple:
    """TP/FP/FN from the construction: hits are TPs; duplicates are suppressed by NMS at IoU < 0.67."""
    kept = pred[(pred["score"] >= score) & (pred.geometry.area >= min_area)]
    if nms is not None and nms < 2 / 3:
        kept = kept[kept["kind"] != "dup"]
    tp = int((kept["kind"] == "hit").sum())
    return tp, len(kept) - tp, n_truth - tp


def test_sweep_matches_the_oracle_and_finds_the_known_optimum(tmp_path: Path) -> None:
    pred, truth, meta = detections_case()
    grid = parse_sweeps(["score=0.05:0.95:0.05", "min_area=0,5", "nms_iou=0.5,0.8"])
    op = run_rps(pred, truth, grid, tmp_path / "rps")
    points = pd.read_csv(tmp_path / "rps" / "points.csv")
    pooled = points[(points["zone"] == "all") & (points["class"] == "all")]
    assert len(pooled) == 19 * 2 * 2
    for row in pooled.itertuples():
        assert (row.tp, row.fp, row.fn) == oracle(pred, meta["n_truth"], row.score, row.min_area, row.nms_iou)
    best = max(pooled.itertuples(), key=lambda r: (r.f1, r.precision, r.score))
    assert op["min_area"] == 5 and op["nms_iou"] == 0.5  # tiny boxes and duplicates removed
    assert (op["score"], op["f1"]) == (best.score, pytest.approx(best.f1))
    assert op["criterion"] == "max_f1" and op["target_met"] is True
    saved = json.loads((tmp_path / "rps" / "operating_point.json").read_text())
    assert saved == json.loads(json.dumps(op))
    assert {"pr_curve.png", "f1_curve.png", "points.csv", "operating_point.json"} <= {
        p.name for p in (tmp_path / "rps").iterdir()}
    assert saved["per_class"]["roof"]["score"] == op["score"]  # one class: its metrics at the global point


def test_incremental_sweep_equals_matching_from_scratch() -> None:
    rng = np.random.default_rng(5)
    centers = rng.uniform(0, 300, (60, 2))
    truth = gpd.GeoDataFrame({"class": rng.choice(["a", "b"], 60)},
                             geometry=[shapely.box(x, y, x + 12, y + 12) for x, y in centers], crs=UTM)
    jitter = centers[rng.integers(0, 60, 150)] + rng.normal(0, 3, (150, 2))
    pred = gpd.GeoDataFrame({"class": rng.choice(["a", "b"], 150, p=[0.6, 0.4]), "score": rng.random(150)},
                            geometry=[shapely.box(x, y, x + 12, y + 12) for x, y in jitter], crs=UTM)
    points = sweep(pred, truth, {"score": [0.2, 0.5, 0.8], "nms_iou": [0.3]}, iou=0.5)
    rank = np.argsort(rank_order(pred["score"].to_numpy()))
    codes = pd.factorize(pred["class"])[0]
    kept = pred[nms_keep(self_pairs(pred.geometry.to_numpy(), codes), rank, len(pred), 0.3)]
    for s in (0.2, 0.5, 0.8):
        scratch = evaluate_objects(kept[kept["score"] >= s], truth)
        for name, expected in [("all", scratch.overall), *scratch.classes.items()]:
            row = points[(points["class"] == name) & (points["score"] == s)].iloc[0]
            assert (row.tp, row.fp, row.fn) == (expected["tp"], expected["fp"], expected["fn"]), (s, name)


def test_nms_equals_the_postprocess_op() -> None:
    postprocess = pytest.importorskip("aifactory.postprocess")
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (200, 2))
    frame = gpd.GeoDataFrame({"class": rng.choice(["a", "b"], 200), "score": rng.random(200)},
                             geometry=[shapely.box(x, y, x + rng.uniform(5, 15), y + 10) for x, y in xy], crs=UTM)
    rank = np.argsort(rank_order(frame["score"].to_numpy()))
    codes = pd.factorize(frame["class"])[0]
    pairs = self_pairs(frame.geometry.to_numpy(), codes)
    for t in (0.2, 0.5):
        ours = nms_keep(pairs, rank, len(frame), t)
        theirs = postprocess.apply_chain(frame, [{"name": "nms", "iou_threshold": t}])
        assert sorted(theirs.index) == list(np.flatnonzero(ours)), t
        assert 0 < ours.sum() < len(frame)


def test_postprocessing_parameters_are_swept() -> None:
    pytest.importorskip("aifactory.postprocess")
    pred, truth, _ = detections_case()
    shrunk = pred[pred["kind"] == "hit"].copy()
    shrunk["geometry"] = shrunk.geometry.buffer(-1.5, join_style="mitre")  # 7 × 7: IoU 0.49 with the truth
    grid = parse_sweeps(["score=0.4", "buffer.distance=0,1.5"])
    points = sweep(shrunk, truth, grid, iou=0.5)
    pooled = points[points["class"] == "all"].set_index("buffer.distance")
    assert pooled.loc[0.0, "tp"] == 0 and pooled.loc[1.5, "tp"] == len(shrunk)
    op = choose_operating_point(points)
    assert op["postprocess"] == {"buffer.distance": 1.5}


def test_by_class_geofence_and_target_precision(tmp_path: Path) -> None:
    pred, truth, _ = detections_case()
    # class "b" is the same case moved north with scores halved: its own best threshold is lower
    pred_b = pred.assign(**{"class": "b", "score": pred["score"] * 0.5}).set_geometry(pred.translate(0, 1000))
    truth_b = truth.assign(**{"class": "b"}).set_geometry(truth.translate(0, 1000))
    pred_all = gpd.GeoDataFrame(pd.concat([pred, pred_b], ignore_index=True), crs=UTM)
    truth_all = gpd.GeoDataFrame(pd.concat([truth, truth_b], ignore_index=True), crs=UTM)
    zones = gpd.GeoDataFrame({"name": ["south", "north"]}, geometry=[
        shapely.box(X0 - 50, Y0 - 50, X0 + 1000, Y0 + 500), shapely.box(X0 - 50, Y0 + 950, X0 + 1000, Y0 + 1500)],
        crs=UTM)
    grid = parse_sweeps(["score=0.05:0.95:0.05", "min_area=5"])
    op = run_rps(pred_all, truth_all, grid, tmp_path / "o", by_class=True, geofence=zones)
    assert op["per_class"]["b"]["score"] < op["per_class"]["roof"]["score"]
    assert set(op["per_geofence"]) == {"south", "north"}
    assert set(op["per_geofence"]["south"]["per_class"]) == {"roof"}  # class b lies in the north only
    assert op["per_geofence"]["north"]["per_class"]["b"]["score"] == op["per_class"]["b"]["score"]
    strict = run_rps(pred_all, truth_all, grid, tmp_path / "p", target_precision=0.8)
    assert strict["criterion"] == "max_recall_at_precision" and strict["precision"] >= 0.8
    assert strict["recall"] <= op["recall"]
    impossible = run_rps(pred_all, truth_all, {"score": [0.05]}, tmp_path / "q", target_precision=0.99)
    assert impossible["target_met"] is False and impossible["criterion"] == "max_precision"


@pytest.mark.parametrize(("spec", "message"), [
    ("score=0.9:0.1:0.1", "no points"),
    ("score=0.1:0.9", "start:stop:step"),
    ("score=0.1:0.9:0", "step must be a positive"),
    ("nms_iou=0,0.5", r"\(0, 1\]"),
    ("threshold=0.5", "unknown parameter"),
    ("score", "NAME="),
])
def test_malformed_sweeps_are_config_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_sweeps([spec])


def test_rps_cli_outputs_and_one_line_errors(cli, tmp_path: Path) -> None:
    pred, truth, _ = detections_case()
    pred.to_file(tmp_path / "det.gpkg", layer="detections", engine="pyogrio")
    truth.to_file(tmp_path / "truth.gpkg", engine="pyogrio")
    args = ["rps", "--pred", str(tmp_path / "det.gpkg"), "--truth", str(tmp_path / "truth.gpkg")]
    run = cli(*args, "--sweep", "score=0.1:0.9:0.1", "--sweep", "min_area=0,5", "-o", str(tmp_path / "out"),
              "--events", "none")
    assert run.returncode == 0, run.stderr
    assert "operating point (max_f1)" in run.stdout
    assert json.loads((tmp_path / "out" / "operating_point.json").read_text())["min_area"] == 5
    for bad in (["--sweep", "score=0.9:0.1:0.1"], ["--sweep", "foo=1"], ["--sweep", "simplify.tolerance=x"]):
        run = cli(*args, *bad, "-o", str(tmp_path / "bad"), "--events", "none")
        assert run.returncode == 2, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1 and "aifactory: error:" in run.stderr
    assert not (tmp_path / "bad").exists()


def test_shipped_example_config_validates() -> None:
    example = Path(__file__).resolve().parents[2] / "resources" / "examples" / "rps_buildings.yaml"
    config = load_rps_config(example)
    grid = parse_sweeps(config.sweep_specs())
    assert set(grid) == {"score", "min_area", "nms_iou", "regularize.tolerance"}
    assert len(grid["score"]) == 19 and config.target_precision == 0.9
    assert Path(str(config.pred)).is_absolute()


def test_rps_cli_config_file_with_flag_override(cli, tmp_path: Path) -> None:
    pred, truth, _ = detections_case()
    pred.to_file(tmp_path / "det.gpkg", layer="detections", engine="pyogrio")
    truth.to_file(tmp_path / "truth.gpkg", engine="pyogrio")
    (tmp_path / "rps.yaml").write_text(
        "pred: det.gpkg\ntruth: truth.gpkg\noutput: out\nsweep:\n  score: '0.1:0.9:0.1'\n  min_area: [0]\n")
    run = cli("rps", "--config", str(tmp_path / "rps.yaml"), "--sweep", "min_area=0,5", "--events", "none")
    assert run.returncode == 0, run.stderr
    op = json.loads((tmp_path / "out" / "operating_point.json").read_text())
    assert op["min_area"] == 5  # the command line's sweep replaced the file's
    (tmp_path / "bad.yaml").write_text("pred: det.gpkg\ntruth: truth.gpkg\niou: 2\n")
    run = cli("rps", "--config", str(tmp_path / "bad.yaml"), "-o", str(tmp_path / "x"), "--events", "none")
    assert run.returncode == 2 and "iou" in run.stderr and len(run.stderr.strip().splitlines()) == 1
