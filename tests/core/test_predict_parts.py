"""Prediction in parts (what ``predict --workers N`` fans out to Ray tasks) equals one pass, row for row.

The Ray side runs against a real Ray head in tests/e2e/test_ray_jobs.py; here the parts run in this
process, which is where exactness is decided (warm-up tile row, batches within tile rows).
"""

from __future__ import annotations

import numpy as np
import pytest
from aifactory.prediction.fanout import PartDone, predict_part, split_rows
from aifactory.prediction.rows import PredictSpec, RowResult, open_prediction, predict_rows
from aifactory.prediction.source import ReadStats
from test_predict_support import predict_scene, trained_run  # noqa: F401  (shared session fixtures)


def test_split_rows_covers_every_tile_row_once_in_balanced_parts():
    assert split_rows(7, 3) == [range(0, 3), range(3, 5), range(5, 7)]
    assert split_rows(2, 5) == [range(0, 1), range(1, 2)]           # never an empty part
    assert split_rows(4, 1) == [range(0, 4)]


@pytest.mark.parametrize("blend", ["cosine", "hann"])
def test_parts_give_the_rows_of_a_single_pass(trained_run, predict_scene, blend):  # noqa: F811
    raster, _ = predict_scene
    spec = PredictSpec((str(trained_run),), str(raster), batch_size=3, precision="fp32", blend=blend, overlap=40)
    whole_stats = ReadStats()
    with open_prediction(spec) as run:
        whole = list(predict_rows(run, whole_stats))
        tile_rows = len(run.grid.row_offsets)
    assert tile_rows == 5 and [r.top for r in whole] == sorted(r.top for r in whole)
    parts: list[RowResult] = []
    part_stats = ReadStats()
    for rows in ([0, 1], [1, 3], [3, 5]):
        for item in predict_part(spec, range(*rows)):
            if isinstance(item, PartDone):
                part_stats.add(item.stats)
            else:
                parts.append(item)
    assert part_stats == whole_stats
    assert [(r.top, r.stop) for r in parts] == [(r.top, r.stop) for r in whole]
    assert whole[-1].stop == run.grid.height
    for single, part in zip(whole, parts, strict=True):
        np.testing.assert_array_equal(part.values, single.values)
        np.testing.assert_array_equal(part.predicted, single.predicted)
    assert max(int(r.values.max()) for r in whole) > 200          # a trained model: confident pixels exist


def test_an_address_without_a_ray_cluster_is_one_line_exit_2_and_writes_nothing(tmp_path, cli, trained_run,  # noqa: F811
                                                                              predict_scene):  # noqa: F811
    raster, _ = predict_scene
    result = cli("predict", "--model", str(trained_run), "--raster", str(raster), "-o", str(tmp_path / "out"),
                 "--workers", "2", "--ray-address", "127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "aifactory: error: predict --workers: no Ray cluster answers at 127.0.0.1:1"]
    assert not (tmp_path / "out").exists()


def test_a_part_decides_its_precision_on_the_raster_first_batch(trained_run, predict_scene, monkeypatch):  # noqa: F811
    import torch
    from aifactory.prediction import runtime

    if not runtime.bf16_supported(torch.device("cpu")):
        pytest.skip("no native bf16 on this CPU: precision auto is float32 without a decision")
    raster, _ = predict_scene
    calibrated: list[torch.Tensor] = []
    calibrate = runtime.Runner._calibrate

    def recording(self, inputs, valid):
        calibrated.append(inputs[0].clone())
        return calibrate(self, inputs, valid)

    monkeypatch.setattr(runtime.Runner, "_calibrate", recording)
    spec = PredictSpec((str(trained_run),), str(raster), batch_size=3, precision="auto", overlap=40)  # 5 tile rows
    for rows in (range(0, 2), range(3, 5)):  # a single pass starts as the first part does
        with open_prediction(spec) as run:
            next(predict_rows(run, ReadStats(), rows))
    assert len(calibrated) == 2
    torch.testing.assert_close(calibrated[1], calibrated[0], rtol=0, atol=0)


def test_workers_get_absolute_paths(tmp_path, monkeypatch, trained_run, predict_scene):  # noqa: F811
    """Ray workers run in a folder of their own: a relative --raster was "raster not found" there."""
    import dataclasses

    from aifactory.prediction.fanout import as_workers_see_it
    from aifactory.prediction.rows import PredictSpec

    raster, _ = predict_scene
    monkeypatch.chdir(raster.parent)
    spec = PredictSpec(("models:/trees@production", str(trained_run)), raster.name, geofence=None,
                       exclude="/vsis3/bucket/exclude.gpkg")
    seen = as_workers_see_it(spec)
    assert seen == dataclasses.replace(spec, raster=str(raster.resolve()),
                                       models=("models:/trees@production", str(trained_run.resolve())))
