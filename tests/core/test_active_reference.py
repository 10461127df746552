"""Active learning against plain numpy references: acquisition functions on known probabilities (softmax
and one-channel sigmoid models), per-tile aggregation, k-center greedy, seeded MC dropout of a model's own
dropout layers, and labelled points or lines excluding the tiles that hold them."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from aifactory.active import ACQUISITIONS
from aifactory.active.acquisitions import aggregate
from aifactory.active.diversity import choose
from aifactory.active.options import SelectOptions
from aifactory.active.scoring import MonteCarlo
from aifactory.active.select import select_tiles
from aifactory.io.synthetic import SceneSpec, generate_scene
from aifactory.io.vector import write_vector
from aifactory.models import ARCHITECTURES


def h(p: np.ndarray, axis: int) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis)


def acquire(name: str, probs: np.ndarray) -> np.ndarray:
    entry, params = ACQUISITIONS.resolve(name, "strategy")
    return entry.func(params, torch.from_numpy(probs), torch.Generator().manual_seed(0)).numpy()


def reference(name: str, probs: np.ndarray) -> np.ndarray:
    """``probs`` (T, N, C, H, W) with C ≥ 2."""
    mean, classes = probs.mean(0), probs.shape[2]
    top = np.sort(mean, axis=1)
    if name == "entropy":
        return h(mean, 1) / np.log(classes)
    if name == "margin":
        return 1 - (top[:, -1] - top[:, -2])
    if name == "least_confidence":
        return (1 - top[:, -1]) * classes / (classes - 1)
    return np.clip((h(mean, 1) - h(probs, 2).mean(0)) / np.log(classes), 0, None)


@pytest.mark.parametrize("name", ["entropy", "margin", "least_confidence", "bald"])
def test_acquisitions_match_numpy_on_softmax_and_sigmoid_models(name):
    rng = np.random.default_rng(0)
    passes = 5 if name == "bald" else 1
    logits = rng.normal(size=(passes, 3, 4, 5, 6)) * 2
    softmax = (np.exp(logits) / np.exp(logits).sum(2, keepdims=True)).astype("float32")
    assert np.allclose(acquire(name, softmax), reference(name, softmax), atol=1e-5)
    sigmoid = rng.uniform(0.001, 0.999, size=(passes, 3, 1, 5, 6)).astype("float32")  # one class: (1 - p, p)
    scores = acquire(name, sigmoid)
    assert np.allclose(scores, reference(name, np.concatenate([1 - sigmoid, sigmoid], axis=2)), atol=1e-5)
    assert scores.min() >= 0 and scores.max() <= 1 + 1e-6


@pytest.mark.parametrize("how", ["mean", "topk", "max"])
def test_aggregation_matches_numpy_over_valid_pixels(how):
    rng = np.random.default_rng(1)
    scores = rng.uniform(size=(12, 7, 9)).astype("float32")
    valid = rng.uniform(size=(12, 7, 9)) < rng.uniform(size=(12, 1, 1))
    valid[0], valid[1] = False, False
    valid[1, 3, 4] = True
    got = aggregate(torch.from_numpy(scores), torch.from_numpy(valid), how, 0.25).numpy()
    for tile, (s, v) in enumerate(zip(scores, valid, strict=True)):
        x = np.sort(s[v])[::-1]
        want = 0.0 if not len(x) else {"mean": x.mean(), "max": x[0],
                                       "topk": x[:max(1, math.ceil(0.25 * len(x)))].mean()}[how]
        assert got[tile] == pytest.approx(want, abs=1e-6)


def naive_kcenter(scores, n, vectors, labelled, top_m, centres, distance):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    pool = order[:max(n, top_m)]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    known = list(labelled / np.linalg.norm(labelled, axis=1, keepdims=True)) if labelled is not None else []
    chosen, closed = [], set()
    while len(chosen) < n and len(closed) < len(pool):
        gaps = {c: min((np.linalg.norm(unit[c] - k) for k in known), default=np.inf) for c in pool if c not in closed}
        pick = order[0] if not known else max(gaps, key=lambda c: (gaps[c], -pool.index(c)))
        closed.add(pick)
        if all(np.linalg.norm(centres[pick] - centres[p]) >= distance for p in chosen):
            chosen.append(pick)
            known.append(unit[pick])
    return chosen


def test_kcenter_greedy_matches_a_naive_implementation():
    rng = np.random.default_rng(2)
    for _ in range(60):
        size = int(rng.integers(5, 30))
        n, top_m = int(rng.integers(1, size)), int(rng.integers(1, size + 1))
        scores, vectors = rng.uniform(size=size), rng.normal(size=(size, 3))
        labelled = rng.normal(size=(2, 3)) if rng.uniform() < 0.5 else None
        centres, distance = rng.uniform(0, 10, size=(size, 2)), float(rng.choice([0.0, 2.0]))
        got = choose(scores, n, diversity="kcenter", embeddings=vectors, labelled=labelled, top_m=top_m,
                     centres=centres, groups=np.zeros(size), min_distance=distance)
        assert got == naive_kcenter(scores, n, vectors, labelled, top_m, centres, distance)


def test_a_models_own_dropout_samples_depend_on_the_seed_only():
    torch.manual_seed(0)
    fpn = ARCHITECTURES.get("fpn").func(ARCHITECTURES.get("fpn").params(encoder_depth=3, dropout=0.3), 3, 2).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        first = MonteCarlo(fpn, 0.2, torch.Generator().manual_seed(4), "fpn").samples(x, 3)
        torch.rand(10)  # whatever ran before in the process (a training, another selection)
        state = torch.get_rng_state()
        again = MonteCarlo(fpn, 0.2, torch.Generator().manual_seed(4), "fpn").samples(x, 3)
        assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left alone
        other = MonteCarlo(fpn, 0.2, torch.Generator().manual_seed(5), "fpn").samples(x, 3)
    assert torch.allclose(first, again) and not torch.allclose(first, other)


def test_labelled_points_and_lines_exclude_the_tiles_that_hold_them(tmp_path):
    raster = tmp_path / "scene.tif"
    generate_scene(SceneSpec(width=128, height=128, seed=3), raster)
    with rasterio.open(raster) as ds:
        bounds, crs, gsd = ds.bounds, ds.crs, ds.res[0]
    point = shapely.Point(bounds.left + 10 * gsd, bounds.top - 10 * gsd)              # in tile r0_c0
    line = shapely.LineString([(bounds.left + 70 * gsd, bounds.bottom + 5 * gsd),
                               (bounds.left + 90 * gsd, bounds.bottom + 20 * gsd)])   # in tile r64_c64
    layer = write_vector(gpd.GeoDataFrame(geometry=[point, line], crs=crs), tmp_path / "labelled.gpkg", layer="x")
    tiles = select_tiles(None, [raster], 2, SelectOptions(strategy="random"), tile_size=64, exclude=[layer])
    assert sorted(tiles["tile_id"]) == ["scene_r0_c64", "scene_r64_c0"]
