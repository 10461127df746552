"""Dataset building: chips, masks, boxes, statistics, manifest and chart; sources of every kind; bad inputs."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import yaml
from affine import Affine
from aifactory.catalog.build import build_catalog
from aifactory.datasets.config import DatasetConfig
from aifactory.datasets.export import build_dataset
from aifactory.datasets.format import IGNORE_INDEX, read_chips, read_meta
from aifactory.datasets.plan import plan_dataset
from aifactory.datasets.render import contact_pixels, render_mask
from aifactory.datasets.torch_dataset import ChipDataset
from aifactory.datasets.windows import WindowDataset
from aifactory.io.synthetic import SceneSpec, generate_scene
from aifactory.io.vector import write_vector
from blake3 import blake3
from PIL import Image
from scipy.ndimage import label as connected


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """512², 4-band uint16, EPSG:32631, a nodata corner, with its truth layer."""
    folder = tmp_path_factory.mktemp("dscene")
    raster, truth = folder / "scene.tif", folder / "truth.gpkg"
    generate_scene(SceneSpec(width=512, height=512, seed=11, density=2, nodata_corner=0.15), raster, truth)
    return raster, truth


def config_for(raster, truth, **overrides):
    data = {"sources": [{"raster": str(raster), "labels": str(truth), "layer": "truth"}],
            "chips": {"size": 128, "overlap": 0, "negative_ratio": 1.0},
            "split": {"block_tiles": 1, "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 3}}
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def write_config(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_build_via_cli_prints_table_and_writes_everything(cli, scene, tmp_path):
    config = write_config(tmp_path / "ds.yaml", config_for(*scene))
    out = tmp_path / "dataset"
    result = cli("dataset", "build", str(config), "-o", str(out), "--events", "none")
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header == ["class", "train", "val", "test", "total"]
    assert all(name in result.stdout for name in ("building", "vegetation/tree", "vehicle/car", "chips"))
    meta = read_meta(out)
    assert meta.classes == ["background", "building", "vegetation/tree", "vehicle/car"]
    assert meta.bands == 4 and meta.dtype == "uint16" and meta.tile_size == 128 and meta.gsd == 0.5
    table = read_chips(out)
    manifest = json.loads((out / "manifest.json").read_text())
    for row in table.itertuples():
        for rel in (row.image, row.mask):
            assert manifest["chips"][rel] == blake3((out / rel).read_bytes()).hexdigest()
    assert manifest["sources"][0]["blake3"] == blake3(scene[0].read_bytes()).hexdigest()
    assert manifest["hash"] == "blake3"
    assert manifest["config"]["chips"]["size"] == 128 and sum(manifest["counts"]["chips"].values()) == len(table)
    assert (out / "balance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".dataset*"))  # no temporary folder left behind
    # chips are georeferenced like their window of the source
    row = table.iloc[0]
    with rasterio.open(out / row["image"]) as chip, rasterio.open(scene[0]) as source:
        assert chip.crs == source.crs
        assert chip.transform == source.transform * Affine.translation(row["col_off"], row["row_off"])
        assert (chip.read() == source.read(window=((row["row_off"], row["row_off"] + 128),
                                                   (row["col_off"], row["col_off"] + 128)))).all()


def test_statistics_come_from_train_chips(scene, tmp_path):
    build_dataset(DatasetConfig.model_validate(config_for(*scene)), tmp_path / "d")
    meta = read_meta(tmp_path / "d")
    train = ChipDataset(tmp_path / "d", "train")
    pixels = []
    for i in range(len(train)):
        image, _ = train.read_raw(i)
        with rasterio.open(tmp_path / "d" / train.table.iloc[i]["image"]) as ds:
            valid = ds.dataset_mask() > 0
        pixels.append(image[:, valid].astype("float64"))
    values = np.concatenate(pixels, axis=1)
    assert np.allclose(meta.normalization.mean, values.mean(axis=1), rtol=1e-9)
    assert np.allclose(meta.normalization.std, values.std(axis=1, ddof=1), rtol=1e-6)


def test_masks_match_objects_and_ignore_nodata(scene, tmp_path):
    build_dataset(DatasetConfig.model_validate(config_for(*scene, chips={"max_nodata": 1.0})), tmp_path / "d")
    table = read_chips(tmp_path / "d")
    corner = table[(table["col_off"] == 0) & (table["row_off"] == 0)].iloc[0]
    with rasterio.open(tmp_path / "d" / corner["mask"]) as ds:
        mask = ds.read(1)
    with rasterio.open(scene[0]) as ds:
        nodata = ds.dataset_mask(window=((0, 128), (0, 128))) == 0
    assert nodata.any() and (mask[nodata] == IGNORE_INDEX).all()
    assert set(np.unique(mask[~nodata])) <= {0, 1, 2, 3}
    dataset = ChipDataset(tmp_path / "d", "train")
    sample = next(dataset[i] for i in range(len(dataset)) if len(dataset[i]["boxes"]))
    boxes = sample["boxes"].numpy()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, :4] >= 0).all() and (boxes[:, :4] <= 128).all()
    for (x0, y0, x1, y1), label in zip(boxes.round().astype(int), sample["labels"].numpy(), strict=True):
        assert (sample["mask"][y0:y1, x0:x1] == label).any()


def test_nodata_threshold_drops_chips(scene):
    lenient = plan_dataset(DatasetConfig.model_validate(config_for(*scene, chips={"max_nodata": 1.0})))
    strict = plan_dataset(DatasetConfig.model_validate(config_for(*scene, chips={"max_nodata": 0.05})))
    assert strict.dropped["nodata"] > 0 and len(strict.chips) < len(lenient.chips)
    assert not ((strict.chips["col_off"] == 0) & (strict.chips["row_off"] == 0)).any()


def test_negative_ratio(scene):
    none = plan_dataset(DatasetConfig.model_validate(config_for(*scene, chips={"negative_ratio": 0.0})))
    assert (none.chips["n_objects"] > 0).all()


def test_labels_in_another_crs_give_the_same_masks(scene, tmp_path):
    truth = gpd.read_file(scene[1], layer="truth").to_crs(4326)
    csv = tmp_path / "labels.csv"
    truth.assign(wkt=shapely.to_wkt(truth.geometry.array, rounding_precision=-1)).drop(
        columns="geometry").to_csv(csv, index=False)
    native = config_for(*scene, split={"method": "image", "fractions": {"train": 1.0}})
    other = {**native, "sources": [{"raster": str(scene[0]), "labels": str(csv), "crs": "EPSG:4326"}]}
    build_dataset(DatasetConfig.model_validate(native), tmp_path / "a")
    build_dataset(DatasetConfig.model_validate(other), tmp_path / "b")
    ta, tb = read_chips(tmp_path / "a"), read_chips(tmp_path / "b")
    assert ta["chip_id"].tolist() == tb["chip_id"].tolist()
    agree = total = 0
    for rel in ta["mask"]:
        with rasterio.open(tmp_path / "a" / rel) as a, rasterio.open(tmp_path / "b" / rel) as b:
            agree += int((a.read(1) == b.read(1)).sum())
            total += a.width * a.height
    assert agree / total > 0.9999


def test_pixel_space_png_source(cli, tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 60, (300, 400, 3), dtype="uint8")
    boxes = [(20, 30, 60, 70), (200, 100, 260, 150), (330, 220, 390, 280)]
    for x0, y0, x1, y1 in boxes:
        image[y0:y1, x0:x1] = 220
    Image.fromarray(image).save(tmp_path / "drone.png")
    labels = gpd.GeoDataFrame({"class": ["tree"] * 3}, geometry=[shapely.box(*b) for b in boxes])
    write_vector(labels, tmp_path / "drone.gpkg", layer="labels")
    data = {"sources": [{"raster": "drone.png", "labels": "drone.gpkg"}],
            "chips": {"size": 128, "overlap": 32, "negative_ratio": 0},
            "split": {"method": "image", "fractions": {"train": 1.0}}}
    config = write_config(tmp_path / "ds.yaml", data)
    result = cli("dataset", "build", str(config), "-o", str(tmp_path / "out"), "--events", "none")
    assert result.returncode == 0, result.stderr
    table = read_chips(tmp_path / "out")
    row = table[(table["col_off"] == 0) & (table["row_off"] == 0)].iloc[0]
    assert [20.0, 30.0, 60.0, 70.0, 1] in row["boxes"]
    with rasterio.open(tmp_path / "out" / row["mask"]) as ds:
        mask = ds.read(1)
        assert ds.crs is None
    assert (mask[30:70, 20:60] == 1).all() and mask.sum() == 40 * 40
    assert read_meta(tmp_path / "out").gsd is None


def test_label_modes_core_and_boundary():
    touching = np.array([shapely.box(10, 10, 30, 30), shapely.box(30, 10, 50, 30)], dtype=object)
    labels = np.array([1, 1])
    transform = Affine.identity()
    fill = render_mask(touching, labels, (40, 60), transform, "fill", 0.5, None)
    core = render_mask(touching, labels, (40, 60), transform, "core", 0.5, None)
    boundary = render_mask(touching, labels, (40, 60), transform, "boundary", 0.5, 2)
    assert connected(fill == 1)[1] == 1 and connected(core == 1)[1] == 2  # cores separate touching objects
    assert (core == 1).sum() == pytest.approx(0.25 * (fill == 1).sum())
    contact = boundary == 2
    assert contact[:, 28:32].sum() > 0 and not contact[:, :28].any() and not contact[:, 32:].any()
    assert connected(boundary == 1)[1] == 2
    ids = np.zeros((5, 5), "int32")
    ids[:, :2], ids[:, 3:] = 1, 2
    assert (contact_pixels(ids) == (np.arange(5) == 2)[None, :]).all()  # only the one-pixel gap


def test_boundary_mode_adds_contact_class(scene, tmp_path):
    plan = build_dataset(DatasetConfig.model_validate(config_for(*scene, chips={"label_mode": "boundary"})),
                         tmp_path / "d")
    meta = read_meta(tmp_path / "d")
    assert meta.classes[-1] == "contact" and meta.extra["contact_class"] == 4
    assert plan.contact_index == 4


def test_window_dataset_gives_the_same_samples(scene, tmp_path):
    config = DatasetConfig.model_validate(config_for(*scene, chips={"label_mode": "core"}))
    plan = build_dataset(config, tmp_path / "d")
    exported = ChipDataset(tmp_path / "d", "val")
    live = WindowDataset(plan, "val")
    assert len(live) == len(exported) > 0
    for i in range(len(live)):
        a, b = exported[i], live[i]
        assert a["chip_id"] == b["chip_id"]
        assert np.allclose(a["image"].numpy(), b["image"].numpy(), atol=1e-4)
        assert (a["mask"] == b["mask"]).all() and (a["labels"] == b["labels"]).all()
        assert np.allclose(a["boxes"].numpy(), b["boxes"].numpy(), atol=0.01)
    live.close()


def test_dataset_from_catalog_selection(scene, tmp_path):
    catalog = {"images": [{"path": str(scene[0])}], "labels": [{"path": str(scene[1]), "layer": "truth"}]}
    write_config(tmp_path / "catalog.yaml", catalog)
    build_catalog(tmp_path / "catalog.yaml", tmp_path / "catalog.gpkg")
    data = config_for(*scene, classes={"level": 1})
    data.pop("sources")
    data["catalog"] = {"path": "catalog.gpkg", "select": {"classes": ["vehicle", "vegetation"]}}
    config = write_config(tmp_path / "ds.yaml", data)
    from aifactory.datasets.config import load_dataset_config

    plan = plan_dataset(load_dataset_config(config))
    assert plan.classes == ["background", "vegetation", "vehicle"]
    truth = gpd.read_file(scene[1], layer="truth")
    assert sum(len(s.labels) for s in plan.sources) == int((truth["class"] != "building").sum())


def _run_bad(cli, tmp_path, data):
    config = write_config(tmp_path / "bad.yaml", data)
    return cli("dataset", "preview", str(config))  # bars and warnings on stderr


@pytest.mark.parametrize("case", ["unknown_classes", "outside", "missing_raster", "bad_key", "pixel_crs",
                                  "bad_where", "csv_where"])
def test_bad_inputs_exit_2_with_one_line(cli, scene, tmp_path, case):
    data = config_for(*scene)
    if case == "unknown_classes":
        data["classes"] = {"names": ["ship"]}
    elif case == "outside":
        truth = gpd.read_file(scene[1], layer="truth")
        moved = truth.set_geometry(shapely.transform(truth.geometry.array, lambda xy: xy + 1e5))
        write_vector(moved, tmp_path / "far.gpkg")
        data["sources"][0].update(labels=str(tmp_path / "far.gpkg"), layer=None)
    elif case == "missing_raster":
        data["sources"][0]["raster"] = str(tmp_path / "nope.tif")
    elif case == "bad_key":
        data["chips"]["sise"] = 3
    elif case == "pixel_crs":
        Image.fromarray(np.zeros((64, 64, 3), "uint8")).save(tmp_path / "p.png")
        data["sources"][0]["raster"] = str(tmp_path / "p.png")
    elif case == "bad_where":
        data["sources"][0]["where"] = "colour = 'red'"
    elif case == "csv_where":
        truth = gpd.read_file(scene[1], layer="truth")
        pd.DataFrame({"class": truth["class"], "wkt": truth.geometry.to_wkt()}).to_csv(tmp_path / "t.csv")
        data["sources"][0].update(labels=str(tmp_path / "t.csv"), layer=None, crs="EPSG:32631", where="1 = 1")
    result = _run_bad(cli, tmp_path, data)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("aifactory: error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    if case == "unknown_classes":
        assert "warning: dropped" in result.stderr and "(ship)" not in result.stderr
    if case == "outside":
        assert "lie outside" in result.stderr
    if case == "bad_where":
        assert "with where \"colour = 'red'\"" in errors[0] and "no such column: colour" in errors[0]
    if case == "csv_where":
        assert "where cannot apply to a CSV file" in errors[0]


def test_where_keeps_the_features_a_layer_filter_shows(scene, tmp_path):
    """``where`` (a QGIS layer filter, passed on by the dataset dock) selects the labels the dataset is made of."""
    truth = gpd.read_file(scene[1], layer="truth")
    data = config_for(*scene)
    data["sources"][0]["where"] = "\"class\" <> 'building'"
    plan = plan_dataset(DatasetConfig.model_validate(data))
    assert sum(len(s.labels) for s in plan.sources) == int((truth["class"] != "building").sum())
    assert {c for s in plan.sources for c in s.labels["class"]} == {"vegetation/tree", "vehicle/car"}


def test_invalid_geometries_are_repaired_and_counted(scene, tmp_path, cli):
    bowtie = shapely.Polygon([(500010, 4999990), (500040, 4999960), (500040, 4999990), (500010, 4999960)])
    frame = gpd.GeoDataFrame({"class": ["building"]}, geometry=[bowtie], crs="EPSG:32631")
    write_vector(frame, tmp_path / "bowtie.gpkg")
    data = config_for(*scene, chips={"max_nodata": 1.0})
    data["sources"][0].update(labels=str(tmp_path / "bowtie.gpkg"), layer=None)
    result = _run_bad(cli, tmp_path, data)
    assert result.returncode == 0, result.stderr
    assert "repaired 1 invalid geometries" in result.stderr


def test_preview_json_for_the_plugin(cli, scene, tmp_path):
    config = write_config(tmp_path / "ds.yaml", config_for(*scene))
    result = cli("dataset", "preview", str(config), "--json", "--events", "none")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data["objects"]) == {"building", "vegetation/tree", "vehicle/car"}
    assert set(data["chips"]) == {"train", "val", "test"} and not (tmp_path / "dataset").exists()
    assert pd.Series(data["objects"]["building"]).sum() > 0


def test_labelled_extent_ignores_the_rest(scene, tmp_path):
    extent = gpd.GeoDataFrame(geometry=[shapely.box(500_000, 4_999_900, 500_256, 5_000_000)], crs="EPSG:32631")
    write_vector(extent, tmp_path / "extent.gpkg")  # the top 200 rows were labelled
    data = config_for(*scene, chips={"max_nodata": 1.0}, split={"method": "image", "fractions": {"train": 1.0}})
    data["sources"][0]["extent"] = str(tmp_path / "extent.gpkg")
    plan = build_dataset(DatasetConfig.model_validate(data), tmp_path / "d")
    assert plan.dropped["outside_extent"] == 8  # the bottom two rows of 128 px chips
    ignored = 0
    for row in read_chips(tmp_path / "d").itertuples():
        with rasterio.open(tmp_path / "d" / row.mask) as ds:
            mask = ds.read(1)
        outside = mask[max(0, 200 - row.row_off):]
        assert row.row_off < 256 and (outside == IGNORE_INDEX).all()
        ignored += outside.size
    assert ignored == 4 * 56 * 128


def test_a_failed_build_leaves_nothing(scene, tmp_path, monkeypatch):
    import aifactory.datasets.export as export

    calls = {"n": 0}
    original = export.write_chip

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError("disk full")
        return original(*args, **kwargs)

    monkeypatch.setattr(export, "write_chip", failing)
    with pytest.raises(OSError, match="disk full"):
        build_dataset(DatasetConfig.model_validate(config_for(*scene)), tmp_path / "d")
    assert list(tmp_path.iterdir()) == []


def test_nan_nodata_pixels_are_ignored_in_chip_masks(tmp_path):
    """A float raster whose nodata is NaN: NaN pixels are not valid (NaN never equals NaN, so a plain
    comparison with the nodata value would call them valid)."""
    from aifactory.datasets.render import LabelIndex, render_chip
    from rasterio.windows import Window

    path = tmp_path / "nan.tif"
    data = np.ones((2, 64, 64), dtype="float32")
    data[:, :, :16] = np.nan  # left strip: nodata in every band
    data[0, 40:, 40:] = np.nan  # one band only: still valid
    transform = Affine(1, 0, 500000, 0, -1, 5000000)
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=2, dtype="float32", crs="EPSG:32631",
                       transform=transform, nodata=float("nan")) as ds:
        ds.write(data)
    index = LabelIndex(np.array([shapely.box(500000, 4999936, 500064, 5000000)]), np.array([1]))
    with rasterio.open(path) as ds:
        _, mask, valid, _ = render_chip(ds, index, Window(0, 0, 64, 64), None)
    assert not valid[:, :16].any() and valid[:, 16:].all()
    assert (mask[:, :16] == IGNORE_INDEX).all() and (mask[:, 16:] == 1).all()
