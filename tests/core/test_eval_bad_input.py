"""Evaluation, RPS and post-processing refuse what they cannot judge, in one line with exit code 2, instead of
tracebacks or silent zeros: truncated and wrong rasters, text or 0–100 scores, inputs that do not overlap or
lack a CRS, misspelt options, points as geofences, and outputs that would destroy the input or be left half done.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from aifactory.errors import ConfigError, InputError
from aifactory.evaluation.objects import evaluate_objects, load_objects
from aifactory.evaluation.pixels import evaluate_pixels
from aifactory.evaluation.rps import choose_operating_point, parse_sweeps, sweep
from aifactory.io.vector import write_vector
from aifactory.progress import CallbackReporter, use_reporter
from rasterio.transform import from_origin
from test_eval_pixels import _write

UTM = "EPSG:32631"
X0, Y0 = 500_000.0, 5_000_000.0


@pytest.fixture(scope="module")
def files(small_scene: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The scene's truth, perfect predictions of it, and broken variants of them."""
    raster, truth_path = small_scene
    folder = tmp_path_factory.mktemp("bad")
    pred = gpd.read_file(truth_path).assign(score=0.9)
    paths = {"raster": raster, "truth": truth_path}
    for name, frame in {"pred": pred, "text_score": pred.assign(score="high"),
                        "labelled_3857": pred.set_crs("EPSG:3857", allow_override=True),
                        "undefined_crs": pred.set_crs(None, allow_override=True),
                        "points": pred.set_geometry(pred.centroid)}.items():
        paths[name] = write_vector(frame, folder / f"{name}.gpkg", layer="detections")
    with sqlite3.connect(paths["undefined_crs"]) as db:  # srs_id 0: GDAL reads "Undefined geographic SRS"
        db.execute("UPDATE gpkg_contents SET srs_id = 0")
        db.execute("UPDATE gpkg_geometry_columns SET srs_id = 0")
    return paths


def error_line(run: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused command (exit code 2), without the prefix (progress lines aside)."""
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if not line.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith("aifactory: error: "), run.stderr
    return lines[0].removeprefix("aifactory: error: ")


def box(x: float, y: float, size: float = 10) -> shapely.Polygon:
    return shapely.box(X0 + x, Y0 + y, X0 + x + size, Y0 + y + size)


def test_truncated_prediction_raster_is_one_line(cli, tmp_path: Path) -> None:
    path = tmp_path / "classes.tif"
    profile = {"driver": "GTiff", "width": 256, "height": 256, "count": 1, "dtype": "uint8", "crs": UTM,
               "transform": from_origin(X0, Y0, 1, 1), "tiled": True, "blockxsize": 64, "blockysize": 64,
               "nodata": 255}  # the valid mask is read first: it met the missing blocks with a traceback
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.random.default_rng(0).integers(0, 3, (1, 256, 256), dtype="uint8"))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    line = error_line(cli("evaluate", "--pred", str(path), "--truth", str(path), "--events", "none"))
    assert "classes.tif" in line and "truncated" in line


def test_text_scores_are_refused_alike_by_postprocess_and_evaluate(cli, files: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    chain = tmp_path / "ops.yaml"
    chain.write_text("ops:\n  - {name: score_filter, min_score: 0.5}\n")
    output = tmp_path / "out.gpkg"
    post = error_line(cli("postprocess", str(files["text_score"]), "-o", str(output), "--ops", str(chain)))
    evaluate = error_line(cli("evaluate", "--pred", str(files["text_score"]), "--truth", str(files["truth"])))
    assert post == evaluate and "text_score.gpkg" in post and "'high'" in post
    assert not output.exists()


def test_scores_outside_0_1_name_the_field_and_the_range() -> None:
    truth = gpd.GeoDataFrame(geometry=[box(0, 0)], crs=UTM)
    pred = gpd.GeoDataFrame({"conf": [80.0]}, geometry=[box(0, 0)], crs=UTM)
    with pytest.raises(InputError, match=r"'conf' holds values from 80 to 80; scores must be in \[0, 1\]"):
        evaluate_objects(pred, truth, score_field="conf")


def test_imagery_that_misses_the_objects_is_refused_before_the_report(cli, files: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    far = tmp_path / "far.tif"
    with rasterio.open(far, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint8", crs=UTM,
                       transform=from_origin(600_000, 5_100_000, 1, 1)) as ds:
        ds.write(np.zeros((1, 16, 16), "uint8"))
    report = tmp_path / "report"
    line = error_line(cli("evaluate", "--pred", str(files["pred"]), "--truth", str(files["truth"]),
                          "--report", str(report), "--raster", str(far)))
    assert "far.tif" in line and "does not overlap" in line
    assert not report.exists()


def test_postprocess_leaves_nothing_when_the_plot_path_is_a_folder(cli, files: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    chain = tmp_path / "ops.yaml"
    chain.write_text("ops:\n  - make_valid\n")
    output = tmp_path / "out.gpkg"
    line = error_line(cli("postprocess", str(files["pred"]), "-o", str(output), "--ops", str(chain),
                          "--plot", str(tmp_path)))
    assert "is a folder" in line
    assert not output.exists()


def test_postprocess_refuses_to_overwrite_its_input(cli, files: dict[str, Path], tmp_path: Path) -> None:
    chain = tmp_path / "ops.yaml"
    chain.write_text("ops:\n  - {name: score_filter, min_score: 0.95}\n")  # would drop every feature
    before = files["pred"].read_bytes()
    same = files["pred"].parent / ".." / files["pred"].parent.name / files["pred"].name
    line = error_line(cli("postprocess", str(files["pred"]), "-o", str(same), "--ops", str(chain)))
    assert "the output is the input" in line
    assert files["pred"].read_bytes() == before


def test_extents_that_do_not_overlap_are_an_error_naming_both(cli, files: dict[str, Path]) -> None:
    line = error_line(cli("evaluate", "--pred", str(files["labelled_3857"]), "--truth", str(files["truth"])))
    assert "do not overlap" in line and "EPSG:3857" in line and "EPSG:32631" in line


def test_detections_beside_the_truth_in_its_own_crs_score_zero_with_a_warning(files: dict[str, Path]) -> None:
    """One CRS for both: a poor model's detections may all lie beside the truth; that is a result, not an error."""
    truth = gpd.read_file(files["truth"])
    beside = gpd.read_file(files["pred"])
    beside.geometry = beside.translate(xoff=10_000)  # 10 km east of every truth object
    events: list[dict] = []
    with use_reporter(CallbackReporter(events.append)):
        result = evaluate_objects(beside, truth)
    assert (result.overall["tp"], result.overall["fp"], result.overall["fn"]) == (0, len(beside), len(truth))
    assert any("do not overlap at all: every detection is a false positive" in event.get("message", "")
               for event in events if event["event"] == "log")


def test_a_layer_without_crs_needs_pred_crs(cli, files: dict[str, Path], tmp_path: Path) -> None:
    args = ["evaluate", "--pred", str(files["undefined_crs"]), "--truth", str(files["truth"])]
    assert "has no CRS" in error_line(cli(*args))
    run = cli(*args, "--pred-crs", UTM, "--json", str(tmp_path / "m.json"), "--events", "none")
    assert run.returncode == 0, run.stderr
    overall = json.loads((tmp_path / "m.json").read_text())["overall"]
    assert overall["tp"] == overall["n_truth"] > 0
    with pytest.raises(InputError, match="'EPSG:999999', is not one pyproj knows"):
        load_objects(str(files["undefined_crs"]), crs="EPSG:999999")


def test_pixel_truth_in_another_crs_is_refused(tmp_path: Path) -> None:
    classes = np.zeros((32, 32), "uint8")
    pred = _write(tmp_path / "pred.tif", classes)
    truth = tmp_path / "truth.tif"
    for path, crs in ((pred, "EPSG:32631"), (truth, "EPSG:32632")):
        with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=1, dtype="uint8", crs=crs,
                           transform=from_origin(X0, Y0, 1, 1)) as ds:
            ds.write(classes[np.newaxis])
    with pytest.raises(InputError, match="EPSG:32632, prediction in EPSG:32631; they must share the grid"):
        evaluate_pixels(pred, truth, classes=["a"])


def test_imagery_is_not_a_prediction_raster(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="4 bands of uint16: not a scores raster"):
        evaluate_pixels(files["raster"], files["truth"])
    floats = _write(tmp_path / "floats.tif", np.zeros((16, 16), "float32"))
    with pytest.raises(InputError, match="one band of integer class indices"):
        evaluate_pixels(floats, floats)
    indices = _write(tmp_path / "indices.tif", np.full((16, 16), 7, "uint16"))
    with pytest.raises(InputError, match="the value 7, beyond the 2 classes"):
        evaluate_pixels(indices, indices, classes=["a", "b"])


def test_misspelt_and_out_of_range_evaluate_options(cli, files: dict[str, Path]) -> None:
    truth = gpd.GeoDataFrame({"class": ["a"]}, geometry=[box(0, 0)], crs=UTM)
    pred = truth.assign(score=0.9)
    with pytest.raises(InputError, match="has no class field 'klass'; fields: class, score"):
        evaluate_objects(pred, truth, class_field="klass")
    with pytest.raises(InputError, match="has no score field 'conf'"):
        evaluate_objects(pred, truth, score_field="conf")
    line = error_line(cli("evaluate", "--pred", str(files["pred"]), "--truth", str(files["truth"]),
                          "--min-score", "2"))
    assert "--min-score" in line and "0<=x<=1" in line


def test_an_operating_point_that_keeps_nothing_never_meets_a_target() -> None:
    truth = gpd.GeoDataFrame({"class": ["a", "a"]}, geometry=[box(0, 0), box(50, 0)], crs=UTM)
    # false positive at 0.9, true positive at 0.8: the best precision of a kept detection is 0.5
    pred = gpd.GeoDataFrame({"class": ["a", "a"], "score": [0.9, 0.8]}, geometry=[box(100, 0), box(0, 0)], crs=UTM)
    points = sweep(pred, truth, {"score": [0.8, 0.9, 0.95]})
    op = choose_operating_point(points, target_precision=0.9)
    assert op["target_met"] is False and op["criterion"] == "max_precision"
    assert (op["score"], op["tp"], op["precision"]) == (0.8, 1, 0.5)


def test_sweep_errors_name_where_the_sweep_came_from(cli, files: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "rps.yaml"
    config.write_text(f"pred: {files['pred']}\ntruth: {files['truth']}\noutput: out\nsweep:\n  nms_iou: [0, 1.5]\n")
    line = error_line(cli("rps", "--config", str(config)))
    assert line.startswith(f"{config}: sweep.nms_iou: ") and "--sweep" not in line
    with pytest.raises(ConfigError, match=r"^--sweep regularize.tolerence=0.5,1: postprocess op 'regularize' has "
                                          "no parameter 'tolerence'"):
        parse_sweeps(["regularize.tolerence=0.5,1"])


def test_rps_refuses_a_geofence_of_points(cli, files: dict[str, Path], tmp_path: Path) -> None:
    line = error_line(cli("rps", "--pred", str(files["pred"]), "--truth", str(files["truth"]),
                          "--geofence", str(files["points"]), "-o", str(tmp_path / "rps")))
    assert "points.gpkg" in line and "polygons" in line and "Point" in line
    assert not (tmp_path / "rps").exists()
