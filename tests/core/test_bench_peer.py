"""The peer-style prediction loop of ``bench.bench_peer``: its grid, and scores that are the model's own."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import rasterio
import torch
from test_predict_support import TILE, predict_scene, trained_run  # noqa: F401  (session fixtures)

from bench.bench_peer import offsets, peer_predict


def test_grid_starts_every_stride_and_ends_flush_with_the_raster() -> None:
    assert offsets(600, 128, 112) == [0, 112, 224, 336, 448, 472]
    assert offsets(560, 128, 112) == [0, 112, 224, 336, 432]
    assert offsets(128, 128, 112) == [0]
    assert offsets(100, 128, 112) == [0]  # smaller than a tile: one boundless window


def test_peer_scores_are_the_models_probabilities_where_one_tile_covers(trained_run, predict_scene,  # noqa: F811
                                                                       tmp_path) -> None:
    from aifactory.models.card import load_run_model

    raster, _ = predict_scene
    tiles, count = peer_predict(trained_run, raster, tmp_path, batch=4, our_forward=False, stride=TILE - 16)
    with rasterio.open(tmp_path / "scores.tif") as scores, rasterio.open(raster) as ds:
        assert (scores.count, scores.height, scores.width) == (2, ds.height, ds.width)
        assert tiles == len(offsets(ds.height, TILE, TILE - 16)) * len(offsets(ds.width, TILE, TILE - 16))
        assert scores.crs == ds.crs and scores.transform == ds.transform
        first = scores.read(window=((0, TILE - 16), (0, TILE - 16)))  # only the first tile covers these pixels
        pixels = torch.from_numpy(ds.read(window=((0, TILE), (0, TILE))).astype("float32"))
    model, card = load_run_model(trained_run)
    mean = torch.tensor(card.normalization.mean)[:, None, None]
    std = torch.tensor(card.normalization.std)[:, None, None]
    with torch.inference_mode():
        probabilities = torch.softmax(model(((pixels - mean) / std)[None]), dim=1)[0, 1:].numpy()
    expected = np.round(probabilities[:, :TILE - 16, :TILE - 16] * 255)
    assert np.abs(first.astype(int) - expected).max() <= 1  # float rounding of sum / count
    detections = gpd.read_file(tmp_path / "detections.gpkg")
    assert len(detections) == count > 0
    assert set(detections["class"]) <= {"building", "vegetation/tree"}


def test_the_peer_runs_the_model_as_trained_or_as_predict_does(trained_run) -> None:  # noqa: F811
    from aifactory.models.card import load_run_model

    from bench.bench_peer import PeerModel

    module, _ = load_run_model(trained_run)
    as_trained, as_predict = PeerModel.load(trained_run, False), PeerModel.load(trained_run, True)
    assert not as_trained.channels_last and not as_trained.bf16 and as_predict.channels_last
    x = torch.randn(2, 4, TILE, TILE)
    with torch.inference_mode():
        expected = torch.softmax(module(x), dim=1).numpy()
    assert np.allclose(as_trained(x), expected, atol=1e-5)
    assert np.abs(as_predict(x) - expected).max() < 0.1  # folded batch norms, bf16 where the CPU has it
    assert as_trained.forward_seconds(3, 2) > 0
