"""Evaluation across hierarchy levels (``--level``): truth annotated deeper than the model's classes scores what
the same truth relabelled by hand scores; a level deeper than both changes nothing; a mismatch a level would fix
is a warning naming that level; RPS keeps NMS on the detections' own classes, as the op that applies the point;
pixel metrics sum the classes the cut merges; the pipeline tasks take the level; bad levels are one line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from aifactory.catalog.hierarchy import cut
from aifactory.errors import ConfigError, InputError
from aifactory.evaluation.levels import check_level, level_hint
from aifactory.evaluation.objects import evaluate_objects
from aifactory.evaluation.pixels import evaluate_pixels
from aifactory.evaluation.rps import apply_operating_point, parse_sweeps, run_rps, sweep
from aifactory.io.cog import COGWriter
from aifactory.io.vector import write_vector
from aifactory.progress import CallbackReporter, use_reporter
from rasterio.transform import from_origin
from rasterio.windows import Window

UTM = "EPSG:32631"
X0, Y0 = 500_000.0, 5_000_000.0
CONIFER, BROADLEAF, TREE = "vegetation/tree/conifer", "vegetation/tree/broadleaf", "vegetation/tree"
HOUSE_DEEP, HOUSE = "building/house/detached", "building/house"


def box(i: int, dx: float = 0.0, size: float = 10.0) -> shapely.Polygon:
    return shapely.box(X0 + 30 * i + dx, Y0, X0 + 30 * i + dx + size, Y0 + size)


def deep_case() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Truth at level 3, detections at level 2: hits, a shifted hit (IoU 0.67), a wrong class, a far false
    positive, and truth nobody detected."""
    truth = gpd.GeoDataFrame({"class": [CONIFER, BROADLEAF, HOUSE_DEEP, CONIFER, HOUSE_DEEP, BROADLEAF],
                              "image": ["a", "a", "a", "b", "b", "b"]},
                             geometry=[box(i) for i in range(6)], crs=UTM)
    pred = gpd.GeoDataFrame({"class": [TREE, TREE, HOUSE, HOUSE, HOUSE, TREE],
                             "score": [0.9, 0.8, 0.7, 0.6, 0.55, 0.3],
                             "image": ["a", "a", "a", "b", "b", "b"]},
                            geometry=[box(0), box(1, dx=2), box(2), box(3), box(4), box(20)], crs=UTM)
    return pred, truth


def relabelled(frame: gpd.GeoDataFrame, level: int) -> gpd.GeoDataFrame:
    """The frame as a user would relabel it by hand."""
    return frame.assign(**{"class": [cut(c, level) for c in frame["class"]]})


def log_messages(events: list[dict]) -> list[str]:
    return [event["message"] for event in events if event["event"] == "log"]


def comparable(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "params"}


# ---- objects ----------------------------------------------------------------------------------------------

def test_truth_deeper_than_the_model_scores_as_the_truth_relabelled_by_hand() -> None:
    pred, truth = deep_case()
    exact = evaluate_objects(pred, truth)
    assert exact.overall["tp"] == 0 and exact.overall["precision"] == 0.0  # what users got, with no hint
    for by in (None, "image"):
        cut_result = evaluate_objects(pred, truth, level=2, by=by, min_score=0.5)
        by_hand = evaluate_objects(pred, relabelled(truth, 2), by=by, min_score=0.5)
        assert comparable(cut_result.to_dict()) == comparable(by_hand.to_dict())
    assert set(cut_result.classes) == {TREE, HOUSE}
    assert cut_result.overall["tp"] == 4 and cut_result.to_dict()["params"]["level"] == 2
    assert list(cut_result.truth["class"]) == [cut(c, 2) for c in truth["class"]]


def test_level_one_merges_both_sides_and_by_class_uses_the_cut_names() -> None:
    pred, truth = deep_case()
    result = evaluate_objects(pred, truth, level=1, by="class")
    assert set(result.classes) == set(result.groups) == {"vegetation", "building"}
    by_hand = evaluate_objects(relabelled(pred, 1), relabelled(truth, 1), by="class")
    assert comparable(result.to_dict()) == comparable(by_hand.to_dict())


def test_a_level_deeper_than_both_sides_changes_nothing() -> None:
    pred, truth = deep_case()
    truth = relabelled(truth, 2)
    plain = evaluate_objects(pred, truth).to_dict()
    for level in (2, 3, 4):
        assert comparable(evaluate_objects(pred, truth, level=level).to_dict()) == comparable(plain)


def test_a_mismatch_a_level_would_fix_is_a_warning_naming_that_level() -> None:
    pred, truth = deep_case()
    events: list[dict] = []
    with use_reporter(CallbackReporter(events.append)):
        evaluate_objects(pred, truth)
    hints = [m for m in log_messages(events) if "--level" in m]
    assert len(hints) == 1 and "--level 2 would match them" in hints[0], log_messages(events)
    assert f"truth {HOUSE_DEEP!r} is under predicted {HOUSE!r} (and 2 more such pairs)" in hints[0]
    for level in (None, 2):  # classes that match exactly (by hand, or cut): no hint
        events.clear()
        with use_reporter(CallbackReporter(events.append)):
            evaluate_objects(pred, relabelled(truth, 2) if level is None else truth, level=level)
        assert not [m for m in log_messages(events) if "--level" in m]


def test_level_hint_rules() -> None:
    assert level_hint([TREE], [CONIFER, BROADLEAF]) is not None
    assert "--level 1 would match" in str(level_hint([TREE, "building"], [CONIFER, HOUSE_DEEP]))
    assert "is above predicted" in str(level_hint([CONIFER], [TREE]))
    assert level_hint([TREE, "building"], [CONIFER, "building"]) is None  # one class matches: exact is intended
    assert level_hint(["vegetation/grass"], [CONIFER]) is None  # siblings: no level makes them ancestors
    assert level_hint([], [CONIFER]) is None


@pytest.mark.parametrize("level", [0, 5, -1, True, 2.0, "2"])
def test_a_level_outside_the_hierarchy_is_refused(level: object) -> None:
    pred, truth = deep_case()
    with pytest.raises(InputError, match="level must be an integer from 1 to 4"):
        check_level(level)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="level must be an integer from 1 to 4"):
        evaluate_objects(pred, truth, level=level)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="level must be an integer from 1 to 4"):
        sweep(pred, truth, parse_sweeps([]), level=level)  # type: ignore[arg-type]


# ---- RPS --------------------------------------------------------------------------------------------------

def test_rps_at_a_level_equals_the_sweep_over_truth_relabelled_by_hand(tmp_path: Path) -> None:
    pred, truth = deep_case()
    grid = parse_sweeps(["score=0.1:0.9:0.1", "nms_iou=0.5", "min_area=0,50"])
    points = sweep(pred, truth, grid, level=2)
    pd.testing.assert_frame_equal(points, sweep(pred, relabelled(truth, 2), grid))
    assert set(points["class"]) == {"all", TREE, HOUSE}
    op = run_rps(pred, truth, grid, tmp_path / "rps", level=2, by_class=True)
    assert op["level"] == 2 and set(op["per_class"]) == {TREE, HOUSE}
    assert json.loads((tmp_path / "rps" / "operating_point.json").read_text())["level"] == 2
    events: list[dict] = []
    with use_reporter(CallbackReporter(events.append)):
        sweep(pred, truth, grid)
    assert sum("--level 2 would match them" in m for m in log_messages(events)) == 1


def test_rps_nms_groups_by_the_detections_own_classes_as_the_op_that_applies_the_point() -> None:
    """Two overlapping detections of two level-3 classes, one truth object at level 2: the ``nms`` op (per class)
    keeps both, so the sweep at level 2 must too, or its operating point promises a precision the applied point
    does not have."""
    truth = gpd.GeoDataFrame({"class": [TREE, TREE]}, geometry=[box(0), box(1)], crs=UTM)
    pred = gpd.GeoDataFrame({"class": [CONIFER, BROADLEAF, CONIFER], "score": [0.9, 0.8, 0.7]},
                            geometry=[box(0), box(0, dx=1), box(1)], crs=UTM)
    grid = parse_sweeps(["score=0.5", "nms_iou=0.5"])
    row = sweep(pred, truth, grid, level=2).query("`class` == 'all'").iloc[0]
    point = {"score": 0.5, "nms_iou": 0.5, "min_area": 0.0}
    applied = evaluate_objects(apply_operating_point(pred, point), truth, level=2)
    assert (row["tp"], row["fp"], row["fn"]) == (applied.overall["tp"], applied.overall["fp"],
                                                 applied.overall["fn"]) == (2, 1, 0)


# ---- pixels -----------------------------------------------------------------------------------------------

def _raster(path: Path, array: np.ndarray, descriptions: list[str] | None = None) -> Path:
    array = array if array.ndim == 3 else array[np.newaxis]
    with COGWriter(path, array.shape[2], array.shape[1], array.shape[0], str(array.dtype), crs=UTM,
                   transform=from_origin(X0, Y0 + 64, 1.0, 1.0), band_descriptions=descriptions,
                   blocksize=128) as writer:
        writer.write(array, Window(0, 0, array.shape[2], array.shape[1]))
    return path


def _pixel_truth() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"class": [CONIFER, BROADLEAF, HOUSE_DEEP]},
                            geometry=[shapely.box(X0 + 2, Y0 + 40, X0 + 20, Y0 + 60),
                                      shapely.box(X0 + 30, Y0 + 40, X0 + 50, Y0 + 60),
                                      shapely.box(X0 + 5, Y0 + 5, X0 + 40, Y0 + 25)], crs=UTM)


def test_pixels_truth_deeper_than_the_class_raster_scores_as_relabelled_by_hand(tmp_path: Path) -> None:
    classes = np.zeros((64, 64), dtype="uint8")
    classes[4:24, 0:25] = 1  # tree, over the conifer and part of the house
    classes[4:24, 28:52] = 1
    classes[40:60, 5:45] = 2  # house, a little beside it
    path = _raster(tmp_path / "classes.tif", classes)
    truth = _pixel_truth()
    events: list[dict] = []
    with use_reporter(CallbackReporter(events.append)):
        exact = evaluate_pixels(path, truth, classes=[TREE, HOUSE])
    assert exact.per_class()[TREE]["support"] == 0
    assert any("--level 2 would match them" in m for m in log_messages(events))
    at_level = evaluate_pixels(path, truth, classes=[TREE, HOUSE], level=2).to_dict()
    by_hand = evaluate_pixels(path, relabelled(truth, 2), classes=[TREE, HOUSE]).to_dict()
    assert at_level == by_hand and at_level["classes"][TREE]["iou"] > 0.5


def test_pixels_scores_bands_that_the_level_merges_count_as_one_class(tmp_path: Path) -> None:
    """Bands conifer and broadleaf at level 2 are one class: the pixel's best band, cut; their counts summed."""
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 120, size=(3, 64, 64)).astype("uint8")
    scores[0, 5:30, 0:30] = 230
    scores[1, 5:30, 30:60] = 230
    scores[2, 35:60, 0:45] = 230
    bands = [CONIFER, BROADLEAF, HOUSE_DEEP]
    path = _raster(tmp_path / "scores.tif", scores, descriptions=bands)
    truth = _pixel_truth()
    result = evaluate_pixels(path, truth, level=2)
    assert result.labels == ["background", TREE, HOUSE]
    best = scores.argmax(axis=0)
    foreground = scores.max(axis=0).astype(int) > 255 - scores.sum(axis=0, dtype=int)
    hand = np.where(foreground, np.array([1, 1, 2])[best], 0)  # the merged class index, by hand
    class_raster = _raster(tmp_path / "hand.tif", hand.astype("uint8"))
    by_hand = evaluate_pixels(class_raster, relabelled(truth, 2), classes=[TREE, HOUSE])
    assert result.to_dict() == by_hand.to_dict()
    unchanged = evaluate_pixels(path, truth, level=4)
    assert unchanged.to_dict() == evaluate_pixels(path, truth).to_dict()
    with pytest.raises(InputError, match="level must be an integer"):
        evaluate_pixels(path, truth, level=0)


# ---- CLI --------------------------------------------------------------------------------------------------

@pytest.fixture()
def deep_files(tmp_path: Path) -> tuple[Path, Path]:
    pred, truth = deep_case()
    return write_vector(pred, tmp_path / "pred.gpkg", layer="detections"), write_vector(truth, tmp_path / "t.gpkg")


def test_cli_evaluate_level(cli, deep_files: tuple[Path, Path], tmp_path: Path) -> None:
    pred, truth = deep_files
    plain = cli("evaluate", "--pred", str(pred), "--truth", str(truth))
    assert plain.returncode == 0, plain.stderr
    assert sum("--level 2 would match them" in line for line in plain.stderr.splitlines()) == 1, plain.stderr
    out = tmp_path / "m.json"
    run = cli("evaluate", "--pred", str(pred), "--truth", str(truth), "--level", "2", "--by", "class",
              "--json", str(out), "--events", "none")
    assert run.returncode == 0, run.stderr
    assert run.stdout.count(f"class {TREE} ") == 1 and CONIFER not in run.stdout and "--level" not in run.stderr
    assert json.loads(out.read_text())["params"]["level"] == 2


@pytest.mark.parametrize("level", ["0", "5"])
def test_cli_bad_level_is_one_line(cli, deep_files: tuple[Path, Path], tmp_path: Path, level: str) -> None:
    pred, truth = deep_files
    for args in (["evaluate", "--json", str(tmp_path / "m.json")], ["rps", "-o", str(tmp_path / "rps")]):
        run = cli(*args, "--pred", str(pred), "--truth", str(truth), "--level", level, "--events", "none")
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("aifactory: error:"), run.stderr
        assert "--level" in lines[0] and "Traceback" not in run.stderr
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "rps").exists()


def test_cli_rps_level_on_the_command_line_and_in_the_config(cli, deep_files: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    pred, truth = deep_files
    run = cli("rps", "--pred", str(pred), "--truth", str(truth), "--level", "2", "-o", str(tmp_path / "a"),
              "--events", "none")
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "a" / "operating_point.json").read_text())["level"] == 2
    assert set(pd.read_csv(tmp_path / "a" / "points.csv")["class"]) == {"all", TREE, HOUSE}
    config = tmp_path / "rps.yaml"
    config.write_text(f"pred: {pred}\ntruth: {truth}\noutput: {tmp_path / 'b'}\nlevel: 7\n")
    bad = cli("rps", "--config", str(config), "--events", "none")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "level" in bad.stderr, bad.stderr


# ---- pipeline ---------------------------------------------------------------------------------------------

def test_pipeline_evaluate_and_rps_tasks_take_the_level(tmp_path: Path, deep_files: tuple[Path, Path]) -> None:
    from aifactory.pipeline.runner import run
    from aifactory.pipeline.spec import load_pipeline

    pred, truth = deep_files
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(f"""\
        tasks:
          score: {{task: evaluate, params: {{pred: "{pred}", truth: "{truth}", level: 2}}}}
          sweep: {{task: rps, params: {{pred: "{pred}", truth: "{truth}", level: 2, sweep: ["score=0.5"]}}}}
        """))
    pipeline = load_pipeline(path)
    run(pipeline)
    metrics = json.loads(next(Path(pipeline.workdir).rglob("metrics.json")).read_text())
    assert metrics["params"]["level"] == 2 and metrics["overall"]["tp"] == 4
    assert json.loads(next(Path(pipeline.workdir).rglob("operating_point.json")).read_text())["level"] == 2
    path.write_text(f'tasks:\n  score: {{task: evaluate, params: {{pred: "{pred}", truth: "{truth}", level: 5}}}}\n')
    with pytest.raises(ConfigError, match="level"):
        load_pipeline(path)
