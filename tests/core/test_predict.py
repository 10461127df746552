"""predict() and ``aifactory predict`` end to end on synthetic scenes with a tiny trained U-Net."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from aifactory.errors import ConfigError, InputError
from aifactory.io.synthetic import SceneSpec, generate_scene
from aifactory.prediction import predict
from aifactory.prediction.runtime import bf16_supported
from aifactory.prediction.vectorize import vectorize_array
from test_predict_support import (  # noqa: F401  (shared session fixtures)
    make_card,
    predict_scene,
    trained_run,
    write_run,
)


@pytest.fixture(scope="module")
def base_result(tmp_path_factory, trained_run, predict_scene):  # noqa: F811
    raster, _ = predict_scene
    return predict([trained_run], raster, tmp_path_factory.mktemp("pred") / "out", precision="fp32")


def test_outputs_follow_the_contracts(base_result, predict_scene):  # noqa: F811
    raster, truth_path = predict_scene
    result = base_result
    assert result.classes == ["building", "vegetation/tree"]
    with rasterio.open(result.scores) as ds, rasterio.open(raster) as src:
        assert ds.count == 2 and ds.dtypes == ("uint8", "uint8")
        assert ds.descriptions == ("building", "vegetation/tree")
        assert ds.crs == src.crs and ds.transform == src.transform
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and ds.overviews(1)
        np.testing.assert_array_equal(ds.dataset_mask() > 0, src.dataset_mask() > 0)  # nodata corner
        scores = ds.read()
    assert scores[:, ~(rasterio.open(raster).dataset_mask() > 0)].max() == 0
    detections = gpd.read_file(result.detections, layer="detections")
    assert list(detections.columns) == ["class", "score", "score_max", "model_run", "tile_id", "area", "review",
                                        "reviewed_class", "geometry"]
    assert detections.crs == "EPSG:32631"
    assert (detections["review"] == "unreviewed").all() and detections["reviewed_class"].isna().all()
    assert detections["score"].between(0.1, 1).all() and (detections["score_max"] >= detections["score"]).all()
    np.testing.assert_allclose(detections["area"], detections.geometry.area)
    assert detections["tile_id"].str.fullmatch(r"r\d+c\d+").all()
    assert json.loads(result.summary.read_text())["detections_count"] == len(detections)
    assert result.preview.stat().st_size > 1000
    # meaningful: most buildings and trees of the truth are found, with the right class
    truth = gpd.read_file(truth_path)
    truth = truth[truth["class"] != "vehicle/car"]
    truth = truth[shapely.contains(shapely.box(*rasterio.open(raster).bounds), truth.geometry.array)]
    hits = gpd.sjoin(truth.set_geometry(truth.representative_point()), detections, predicate="within")
    found = hits[hits["class_left"] == hits["class_right"]].index.unique()
    assert len(found) >= 0.8 * len(truth)


def test_detections_equal_a_single_pass_over_the_scores_raster(base_result):
    """Seam-free: vectorizing scores.tif whole gives exactly the tiled, streamed detections."""
    with rasterio.open(base_result.scores) as ds:
        scores, valid, transform = ds.read(), ds.dataset_mask() > 0, ds.transform
    reference = vectorize_array(scores, valid, score_floor=0.1, instance_h=2.0)
    streamed = gpd.read_file(base_result.detections, layer="detections")
    expected = sorted(shapely.normalize(shapely.transform(g, lambda xy: np.column_stack(
        transform * (xy[:, 0], xy[:, 1])))).wkt for g in reference.geometry)
    assert sorted(shapely.normalize(g).wkt for g in streamed.geometry.array) == expected
    assert len(expected) > 10


def test_nodata_tiles_never_reach_the_model(tmp_path, trained_run):  # noqa: F811
    raster = tmp_path / "corner.tif"
    generate_scene(SceneSpec(width=400, height=400, seed=2, nodata_corner=0.45), raster)
    result = predict([trained_run], raster, tmp_path / "out", precision="fp32", batch_size=3)
    with rasterio.open(raster) as ds:
        valid = ds.dataset_mask() > 0
    from aifactory.prediction.tiling import TileGrid

    grid = TileGrid(400, 400, 128, 16)
    empty = sum(not valid[t.row_off:t.row_off + 128, t.col_off:t.col_off + 128].any()
                for row in grid.rows() for t in row)
    assert empty > 0 and result.tiles_skipped_nodata == empty
    assert result.tiles_predicted == len(grid) - empty


def test_d4_tta_makes_the_prediction_rotation_equivariant(tmp_path, trained_run, predict_scene):  # noqa: F811
    raster, _ = predict_scene
    with rasterio.open(raster) as ds:
        profile = ds.profile
        square = ds.read(window=((200, 328), (300, 428)))
    paths = {}
    for name, data in (("plain", square), ("rotated", np.rot90(square, 1, axes=(1, 2)))):
        profile.update(width=128, height=128, transform=rasterio.Affine(0.5, 0, 0, 0, -0.5, 0), driver="GTiff")
        paths[name] = tmp_path / f"{name}.tif"
        with rasterio.open(paths[name], "w", **profile) as ds:
            ds.write(np.ascontiguousarray(data))
    out = {name: predict([trained_run], path, tmp_path / name, tta=True, precision="fp32").scores
           for name, path in paths.items()}
    with rasterio.open(out["plain"]) as a, rasterio.open(out["rotated"]) as b:
        plain, rotated = a.read().astype(int), b.read().astype(int)
    assert np.abs(np.rot90(plain, 1, axes=(1, 2)) - rotated).max() <= 1  # uint8 rounding only
    assert plain.max() > 200


def test_ensemble_of_the_same_model_equals_the_model(tmp_path, base_result, trained_run, predict_scene):  # noqa: F811
    raster, _ = predict_scene
    mean = predict([trained_run, trained_run], raster, tmp_path / "mean", ensemble="weighted", weights=[3, 1],
                   precision="fp32")
    vote = predict([trained_run, trained_run], raster, tmp_path / "vote", ensemble="vote", precision="fp32")
    with rasterio.open(mean.scores) as a, rasterio.open(base_result.scores) as b, rasterio.open(vote.scores) as v:
        single, votes = b.read().astype(int), v.read().astype(int)
        assert np.abs(a.read().astype(int) - single).max() <= 1
        valid = b.dataset_mask() > 0
    # two identical voters agree everywhere: the winning class gets (nearly) all the votes
    background = 255 - single.sum(axis=0)
    winner = (single.max(axis=0) > background) & valid
    winning_votes = np.take_along_axis(votes, single.argmax(axis=0)[None], axis=0)[0]
    assert np.mean(winning_votes[winner] >= 128) > 0.99


@pytest.mark.skipif(not bf16_supported(__import__("torch").device("cpu")), reason="no native bf16 on this CPU")
def test_bf16_stays_close_to_fp32(tmp_path, base_result, trained_run, predict_scene):  # noqa: F811
    raster, _ = predict_scene
    result = predict([trained_run], raster, tmp_path / "bf16", precision="bf16")
    assert result.precision == "bf16"
    with rasterio.open(result.scores) as a, rasterio.open(base_result.scores) as b:
        diff = np.abs(a.read().astype(int) - b.read().astype(int))
    assert np.percentile(diff, 99) <= 5


def test_gsd_policy(tmp_path, trained_run, predict_scene):  # noqa: F811
    raster, _ = predict_scene
    near = write_run(tmp_path / "near", make_card(gsd=0.7))
    events = []
    from aifactory.progress import CallbackReporter, use_reporter

    with use_reporter(CallbackReporter(events.append)):
        result = predict([near], raster, tmp_path / "near-out", precision="fp32")
    assert any("resampling on the fly" in e.get("message", "") for e in events)
    with rasterio.open(result.scores) as ds:
        assert ds.res == pytest.approx((0.7, 0.7), rel=0.01) and ds.width == round(600 / 1.4)
    far = write_run(tmp_path / "far", make_card(gsd=2.0))
    with pytest.raises(InputError, match="more than 2x away"):
        predict([far], raster, tmp_path / "far-out")


def test_bad_inputs_are_refused_with_one_line(tmp_path, trained_run, predict_scene, cli):  # noqa: F811
    raster, _ = predict_scene
    bands = write_run(tmp_path / "bands", make_card(bands=[1, 2, 3, 4, 5, 6]))
    three = tmp_path / "three.tif"
    generate_scene(SceneSpec(width=200, height=200, bands=3, seed=1), three)
    nodata = tmp_path / "nodata.tif"
    generate_scene(SceneSpec(width=300, height=300, seed=1, density=0, cog=False), nodata)
    with rasterio.open(nodata, "r+") as ds:  # make it all nodata
        ds.write(np.zeros((4, 300, 300), dtype="uint16"))
    far_fence = tmp_path / "far.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:4326").to_file(far_fence)
    cases = [
        ([tmp_path / "missing"], raster, {}, "model run directory not found"),
        ([bands], raster, {}, "reads bands 1, 2, 3, 4, 5, 6"),
        ([trained_run], three, {}, "has 3 band(s)"),
        ([trained_run], raster, {"geofence": far_fence}, "does not intersect"),
        ([trained_run], nodata, {}, "no valid pixel"),
    ]
    out = tmp_path / "bad-out"
    for runs, source, options, message in cases:
        with pytest.raises(InputError) as excinfo:
            predict(runs, source, out, **options)
        assert message in str(excinfo.value) and "\n" not in str(excinfo.value)
        assert not (out / "scores.tif").exists() and not (out / "detections.gpkg").exists()
    assert not (list(out.glob(".*")) if out.exists() else [])  # no temporaries left behind
    # through the CLI: exit code 2, one line, no traceback
    for args, message in ((["--model", str(tmp_path / "missing")], "model run directory not found"),
                          (["--model", str(trained_run), "--ensemble", "weighted", "--weights", "1,x"], "--weights")):
        done = cli("predict", *args, "--raster", str(raster), "-o", str(out), "--events", "none")
        assert done.returncode == 2, (args, done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.startswith("aifactory: error")]
        assert len(lines) == 1 and message in lines[0], done.stderr
        assert "Traceback" not in done.stderr
    with pytest.raises(ConfigError, match="batch size"):
        predict([trained_run], raster, tmp_path / "x", batch_size=0)


def test_cli_events_and_postprocess_chain(tmp_path, trained_run, predict_scene, cli):  # noqa: F811
    raster, _ = predict_scene
    chain = tmp_path / "chain.yaml"
    chain.write_text("ops:\n  - {name: class_filter, include: [building]}\n  - {name: simplify, tolerance: 0.5}\n")
    done = cli("predict", "--model", str(trained_run), "--raster", str(raster), "-o", str(tmp_path / "out"),
               "--postprocess", str(chain), "--events", "jsonl", "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[-1] == {"event": "done", "status": "ok"}
    assert {e["kind"] for e in events if e["event"] == "artifact"} >= {"raster", "vector"}
    assert any(e["event"] == "progress" and e["task"] == "predict" for e in events)
    raw = gpd.read_file(tmp_path / "out" / "detections.gpkg", layer="raw_detections")
    cleaned = gpd.read_file(tmp_path / "out" / "detections.gpkg", layer="detections")
    assert len(cleaned) == (raw["class"] == "building").sum() and len(raw) > len(cleaned) > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("ops:\n  - {name: no_such_op}\n")
    done = cli("predict", "--model", str(trained_run), "--raster", str(raster), "-o", str(tmp_path / "bad"),
               "--postprocess", str(bad), "--events", "none")
    assert done.returncode == 2 and "no_such_op" in done.stderr


def _predicting(tmp_path, trained_run, stderr, *extra: str):  # noqa: F811
    """A CLI prediction in a child process, returned once it is predicting with rows written."""
    raster = tmp_path / "big.tif"
    generate_scene(SceneSpec(width=1400, height=1400, seed=9), raster)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "aifactory.cli", "predict", "--model", str(trained_run),
                                "--raster", str(raster), "-o", str(out), "--events", "jsonl", "--batch-size", "2",
                                "--tta-mode", "flips", *extra], stdout=subprocess.PIPE, stderr=stderr, text=True,
                               env={**os.environ})
    assert process.stdout is not None
    for line in process.stdout:  # wait until it is predicting, with rows written
        event = json.loads(line)
        if event["event"] == "progress" and event["task"] == "predict" and 0.2 < event["value"] < 0.9:
            break
    time.sleep(0.5)
    assert process.poll() is None, "prediction ended before it could be stopped"
    assert any(out.glob(".scores.*")), "no temporary scores file while predicting"
    return process, out


def test_killed_prediction_leaves_no_partial_outputs(tmp_path, trained_run, cli):  # noqa: F811
    """A SIGKILL (the out-of-memory killer's) cannot be caught: no output appears, and the hidden temporaries it
    leaves are removed by the next prediction into the same folder."""
    process, out = _predicting(tmp_path, trained_run, subprocess.DEVNULL)
    try:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not (out / "scores.tif").exists() and not (out / "detections.gpkg").exists()
    assert any(out.glob(".scores.*.tif"))
    done = cli("predict", "--model", str(trained_run), "--raster", str(tmp_path / "big.tif"), "-o", str(out),
               "--events", "none")
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in out.iterdir() if path.name.startswith(".")) == []


def _terminated(tmp_path, trained_run, *extra: str) -> tuple[int, dict, list[str], list[str]]:  # noqa: F811
    """A prediction stopped by SIGTERM while predicting: its exit code, last event, stderr lines and what is
    left in its output folder."""
    with open(tmp_path / "stderr.txt", "w+") as stderr:
        process, out = _predicting(tmp_path, trained_run, stderr, *extra)
        try:
            process.send_signal(signal.SIGTERM)
            stdout, _ = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        stderr.seek(0)
        messages = stderr.read().splitlines()
    return process.returncode, json.loads(stdout.strip().splitlines()[-1]), messages, sorted(
        path.name for path in out.iterdir())


def test_terminated_prediction_stops_like_ctrl_c_and_leaves_nothing(tmp_path, trained_run):  # noqa: F811
    """SIGTERM (kill, timeout, batch schedulers, container runtimes) unwinds the command as Ctrl-C does: the last
    event says stopped, the exit code is 128 + 15, and not even a hidden temporary file is left."""
    code, last, messages, left = _terminated(tmp_path, trained_run)
    assert code == 143, messages[-5:]
    assert last == {"event": "done", "status": "stopped"}
    assert messages[-1] == "aifactory: terminated" and left == []


def test_terminated_fanned_out_prediction_stops_too(tmp_path, trained_run):  # noqa: F811
    """With ``--workers``, Ray's core worker had put its crash dumper on SIGTERM: exit 134 and a page of frames."""
    code, last, messages, left = _terminated(tmp_path, trained_run, "--workers", "2")
    assert code == 143, messages[-5:]
    assert last == {"event": "done", "status": "stopped"}
    assert messages == ["aifactory: terminated"] and left == []


def test_reuse_heap_policy_changes_speed_not_results(tmp_path, base_result, trained_run, predict_scene, cli):  # noqa: F811
    """``--heap reuse`` (or ``AIFACTORY_HEAP=reuse``, which it overrides) only changes how glibc keeps freed
    memory: the same scores to the bit as ``lean``, which runs the model's blocks through the tensor pool."""
    raster, _ = predict_scene
    for heap, pool_mb in (("reuse", 0), ("lean", 512)):
        out = tmp_path / heap
        done = cli("predict", "--model", str(trained_run), "--raster", str(raster), "-o", str(out), "--precision",
                   "fp32", "--events", "none", "--heap", heap, env={"AIFACTORY_HEAP": "system"})
        assert done.returncode == 0, done.stderr
        summary = json.loads((out / "prediction.json").read_text())
        assert summary["heap"] == heap and summary["tensor_pool_mb"] == pool_mb
        with rasterio.open(out / "scores.tif") as other, rasterio.open(base_result.scores) as base:
            np.testing.assert_array_equal(other.read(), base.read())
        assert summary["detections_count"] == base_result.detections_count
    done = cli("predict", "--model", str(trained_run), "--raster", str(raster), "-o", str(tmp_path / "bad"),
               "--events", "none", env={"AIFACTORY_HEAP": "fast"})
    lines = [line for line in done.stderr.splitlines() if line.startswith("aifactory: error")]
    assert done.returncode == 2 and len(lines) == 1 and "AIFACTORY_HEAP" in lines[0], done.stderr
    assert not (tmp_path / "bad").exists()


def test_two_passes_at_once_give_the_scores_of_one_pass_at_a_time(tmp_path, trained_run, predict_scene,  # noqa: F811
                                                                  monkeypatch):
    """On the CPU the model runs two batches at once, each of half the batch size (runtime.CPU_PASSES): the same
    batches one at a time give the same scores to the bit, and the summary says how it ran."""
    from aifactory.prediction import runtime

    raster, _ = predict_scene
    together = predict([trained_run], raster, tmp_path / "together", batch_size=4, precision="fp32", device="cpu")
    monkeypatch.setattr(runtime, "CPU_PASSES", 1)
    alone = predict([trained_run], raster, tmp_path / "alone", batch_size=2, precision="fp32", device="cpu")
    assert (together.passes, alone.passes) == (2, 1)
    assert json.loads(together.summary.read_text())["passes"] == 2
    with rasterio.open(together.scores) as a, rasterio.open(alone.scores) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    assert together.detections_count == alone.detections_count


def test_the_scores_cog_is_finished_while_the_detections_still_are(tmp_path, trained_run, predict_scene,  # noqa: F811
                                                                   monkeypatch):
    """Once the last strip is written, the scores COG is finished by its writer thread, beside the vectorizer's
    last strip: scores.tif is in place (tagged) when the detections are finished, and only then."""
    import aifactory.prediction.predict  # noqa: F401  (the module, shadowed by the function on the package)

    module = sys.modules["aifactory.prediction.predict"]
    finish = module.RowWriter.finish
    seen = []

    def finish_and_look(self):
        seen.append((tmp_path / "out" / "scores.tif").exists())
        return finish(self)

    monkeypatch.setattr(module.RowWriter, "finish", finish_and_look)
    raster, _ = predict_scene
    result = predict([trained_run], raster, tmp_path / "out", precision="fp32")
    assert seen == [True]
    with rasterio.open(result.scores) as ds:
        assert ds.tags()["AIFACTORY_MODEL_RUN"] == trained_run.name and ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert not list((tmp_path / "out").glob(".*"))  # no temporaries
