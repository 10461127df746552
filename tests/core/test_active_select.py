"""``al select`` with a real (tiny) trained run: the tiles layer schema, scores that are the model's own
uncertainty, MC dropout, diversity and spacing, exclusion of labelled ground, and one-line errors."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import torch
import yaml
from aifactory.active.options import SelectOptions
from aifactory.active.scoring import MonteCarlo
from aifactory.active.select import TILE_FIELDS, read_tiles, select_tiles, write_tiles
from aifactory.errors import ConfigError, InputError
from aifactory.io.synthetic import SceneSpec, generate_scene
from aifactory.io.vector import read_vector, write_vector
from aifactory.models import ARCHITECTURES
from aifactory.models.card import load_run_model
from aifactory.progress import CallbackReporter, use_reporter
from rasterio.windows import Window
from test_active_support import SPEC, TILE, make_scene, train_run


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("al-select")
    raster, truth, test = make_scene(folder)
    return SimpleNamespace(folder=folder, raster=raster, truth=truth, test=test, run=train_run(folder, raster, truth))


def warnings_of(func):
    seen = []
    with use_reporter(CallbackReporter(lambda e: seen.append(e))):
        result = func()
    return result, [e["message"] for e in seen if e["event"] == "log" and e["level"] == "warning"]


def test_tiles_layer_schema_and_scores_are_the_models_entropy(scene, tmp_path):
    tiles = select_tiles(scene.run, [scene.raster], 5, SelectOptions(), device="cpu")
    path = write_tiles(tiles, tmp_path / "tiles.gpkg")
    assert [name for name, _ in pyogrio.list_layers(path)] == ["tiles"]
    info = pyogrio.read_info(path, layer="tiles")
    assert list(info["fields"]) == list(TILE_FIELDS) and info["geometry_type"] == "Polygon"
    types = dict(zip(info["fields"], info["dtypes"], strict=True))
    assert {types[f] for f in ("col_off", "row_off", "width", "height", "rank", "round")} == {"int64"}
    assert types["score"] == "float64" and types["status"] == "object"
    back = read_tiles(path)
    assert back.crs.to_epsg() == 32631 and len(back) == 5
    assert back["rank"].tolist() == [1, 2, 3, 4, 5]
    assert set(back["status"]) == {"to_tag"} and set(back["strategy"]) == {"entropy"} and set(back["round"]) == {1}
    assert back["score"].is_monotonic_decreasing and back["tile_id"].is_unique
    assert np.allclose(back.area, (TILE * SPEC.gsd) ** 2)
    with rasterio.open(scene.raster) as ds:
        left, _, _, top = ds.bounds
        assert (back.bounds.minx >= left).all() and (back.bounds.maxy <= top).all()
        # the score is the mean normalised entropy of the model's probabilities over the tile
        first = back.iloc[0]
        assert first["tile_id"] == f"scene_r{first['row_off']}_c{first['col_off']}"
        window = Window(first["col_off"], first["row_off"], TILE, TILE)
        assert back.geometry.iloc[0].equals(shapely.box(*rasterio.windows.bounds(window, ds.transform)))
        image = ds.read(window=window).astype("float32")
    model, card = load_run_model(scene.run)
    x = (torch.from_numpy(image)[None] - torch.tensor(card.normalization.mean)[:, None, None]) \
        / torch.tensor(card.normalization.std)[:, None, None]
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)[0]
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(0) / math.log(2)
    assert first["score"] == pytest.approx(float(entropy.mean()), abs=1e-4)


def test_random_needs_no_model_and_is_reproducible(scene):
    options = SelectOptions(strategy="random", seed=3)
    a = select_tiles(None, [scene.raster], 4, options, tile_size=TILE)
    b = select_tiles(None, [scene.raster], 4, options, tile_size=TILE)
    c = select_tiles(None, [scene.raster], 4, options.model_copy(update={"seed": 4}), tile_size=TILE)
    assert a["tile_id"].tolist() == b["tile_id"].tolist() != c["tile_id"].tolist()
    with pytest.raises(ConfigError, match="strategy 'bald' needs a trained model"):
        select_tiles(None, [scene.raster], 4, SelectOptions(strategy="bald"), tile_size=TILE)
    with pytest.raises(InputError, match="give --tile-size"):
        select_tiles(None, [scene.raster], 4, options)


def test_bald_warns_that_it_injects_dropout_and_kcenter_spaces_the_picks(scene):
    tiles, warned = warnings_of(lambda: select_tiles(
        scene.run, [scene.raster], 4, SelectOptions(strategy={"name": "bald", "samples": 4}, diversity="kcenter",
                                                    top_m=20, min_distance=60.0), device="cpu"))
    assert any("no dropout; BALD injects dropout (p=0.2)" in w for w in warned)
    assert set(tiles["strategy"]) == {"bald+kcenter"} and len(tiles) == 4
    centres = np.column_stack([tiles.centroid.x, tiles.centroid.y])
    gaps = [np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1:]]
    assert min(gaps) >= 60.0


def test_mc_dropout_injected_on_decoder_features_or_the_models_own():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    unet = ARCHITECTURES.get("unet").func(ARCHITECTURES.get("unet").params(encoder_depth=3,
                                          decoder_channels=[16, 8, 8]), 3, 2).eval()
    (mc, ), warned = warnings_of(lambda: (MonteCarlo(unet, 0.3, torch.Generator().manual_seed(0), "unet"),))
    assert warned and mc.head is unet.segmentation_head and not mc.own
    with torch.no_grad():
        samples = mc.samples(x, 5)
        plain = torch.softmax(unet(x), 1)
    assert samples.shape == (5, 2, 2, 64, 64)
    assert not torch.allclose(samples[0], samples[1])                     # the samples differ
    assert torch.allclose(samples.sum(2), torch.ones(5, 2, 64, 64), atol=1e-5)
    assert torch.allclose(torch.softmax(unet(x), 1), plain)               # the model itself is untouched
    again = MonteCarlo(unet, 0.3, torch.Generator().manual_seed(0), "unet")
    with torch.no_grad():
        assert torch.allclose(again.samples(x, 5), samples)               # seeded: reproducible
    fpn = ARCHITECTURES.get("fpn").func(ARCHITECTURES.get("fpn").params(encoder_depth=3, dropout=0.3), 3, 2).eval()
    (own, ), warned = warnings_of(lambda: (MonteCarlo(fpn, 0.2, torch.Generator(), "fpn"),))
    assert not warned and own.own
    with torch.no_grad():
        fpn_samples = own.samples(x, 3)
    assert not torch.allclose(fpn_samples[0], fpn_samples[1])
    assert not any(m.training for m in fpn.modules())                    # dropout back in eval mode


def test_labelled_ground_is_never_offered_again(scene, tmp_path):
    first = write_tiles(select_tiles(scene.run, [scene.raster], 6, SelectOptions(), device="cpu"),
                        tmp_path / "round-1.gpkg")
    second = select_tiles(scene.run, [scene.raster], 6, SelectOptions(diversity="kcenter"), exclude=[first],
                          round_number=2, device="cpu")
    assert not set(second["tile_id"]) & set(read_tiles(first)["tile_id"]) and set(second["round"]) == {2}
    # a catalog marks labelled ground by its observations: tiles under them are skipped
    from aifactory.catalog.build import build_catalog

    objects = read_vector(scene.truth, layer="truth")
    x0, y0 = SPEC.origin
    corner = objects[objects.intersects(shapely.box(x0, y0 - 40, x0 + 40, y0))]
    assert len(corner)
    write_vector(corner, tmp_path / "corner.gpkg", layer="labels")
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump({
        "images": [{"path": str(scene.raster)}], "labels": [{"path": "corner.gpkg", "layer": "labels"}]}))
    build_catalog(tmp_path / "catalog.yaml", tmp_path / "catalog.gpkg")
    everything = select_tiles(None, [scene.raster], 10, SelectOptions(strategy="random"), tile_size=TILE,
                              exclude=[tmp_path / "catalog.gpkg"])
    assert not everything.intersects(corner.union_all()).any() or (
        everything.intersection(corner.union_all()).area < 0.01 * (TILE * SPEC.gsd) ** 2).all()


def test_bad_input_is_one_line_with_exit_code_2(scene, tmp_path, cli):
    result = cli("al", "select", "--model", str(scene.run), "--raster", str(scene.raster), "--n", "999",
                 "-o", str(tmp_path / "t.gpkg"), "--events", "none")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("aifactory: error: al select: asked for 999 tiles but")
    three = tmp_path / "rgb.tif"
    generate_scene(SceneSpec(width=128, height=128, bands=3, seed=1), three)
    result = cli("al", "select", "--model", str(scene.run), "--raster", str(three), "--n", "2",
                 "-o", str(tmp_path / "t.gpkg"), "--events", "none", "--strategy", "bald", "-p", "samples=4")
    assert result.returncode == 2 and "has 3 band(s) but model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "t.gpkg").exists()
    listed = cli("al", "--list")
    assert listed.returncode == 0 and "bald  samples=8 (int), dropout=0.2 (float)" in listed.stdout
