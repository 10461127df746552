"""The catalog suite, run on both backends: GeoPackage (SQLite) and a real PostGIS server."""

from __future__ import annotations

import datetime as dt
import sqlite3

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import yaml
from aifactory.catalog.build import build_catalog
from aifactory.catalog.context import compute_context
from aifactory.catalog.hierarchy import cut, map_classes, normalize, prefixes, tree
from aifactory.catalog.pgtemp import TempPostGIS, find_bindir
from aifactory.catalog.schema import metadata
from aifactory.catalog.selection import Aoi, Selection
from aifactory.catalog.store import open_catalog
from aifactory.errors import InputError
from aifactory.io.synthetic import SceneSpec, generate_scene
from aifactory.io.vector import write_vector
from PIL import Image

DEEP = {"building": ("building/house", "building/industrial/warehouse"),
        "vegetation/tree": ("vegetation/tree",), "vehicle/car": ("vehicle/car/sedan/red",)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two georeferenced scenes (labels as CSV in EPSG:4326 and as GeoPackage), a pixel-space PNG, a config."""
    folder = tmp_path_factory.mktemp("world")
    truth_a = generate_scene(SceneSpec(width=512, height=512, seed=3, density=2), folder / "a.tif")
    truth_b = generate_scene(SceneSpec(width=384, height=384, seed=4, density=2, origin=(510_000.0, 5_000_000.0)),
                             folder / "b.tif")
    truth_a["class"] = [DEEP[c][i % len(DEEP[c])] for i, c in enumerate(truth_a["class"])]
    wgs84 = truth_a.to_crs(4326)
    wgs84.assign(wkt=shapely.to_wkt(wgs84.geometry.array, rounding_precision=-1)).drop(columns="geometry").to_csv(
        folder / "a_labels.csv", index=False)
    write_vector(truth_b, folder / "b_labels.gpkg", layer="objects")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype="uint8")).save(folder / "d.png")
    drone = gpd.GeoDataFrame({"class": ["vehicle/aircraft/fighter/f16"] * 2},
                             geometry=[shapely.box(10, 10, 40, 30), shapely.box(100, 50, 130, 90)])
    write_vector(drone, folder / "d_labels.gpkg", layer="boxes")
    # tile context: the west half of scene A is cloudy (80 %); the image-level value is 5 %
    west = gpd.GeoDataFrame({"cloud": [80.0]}, geometry=[shapely.box(500_000, 4_999_744, 500_128, 5_000_000)],
                            crs="EPSG:32631")
    write_vector(west, folder / "clouds.gpkg", layer="clouds")
    config = {
        "images": [
            {"path": "a.tif", "sensor": "s1", "date": "2024-05-01", "band_names": ["blue", "green", "red", "nir"],
             "context": {"cloud": 5}},
            {"path": "b.tif", "sensor": "s2", "date": "2023-01-10", "context": {"cloud": 40}},
            {"path": "d.png", "name": "drone"},
        ],
        "labels": [
            {"path": "a_labels.csv", "crs": "EPSG:4326", "image": "a"},
            {"path": "b_labels.gpkg", "layer": "objects"},
            {"path": "d_labels.gpkg", "image": "drone"},
        ],
        "context_layers": [{"path": "clouds.gpkg"}],
        "context": {"tile_size": 256},
    }
    (folder / "catalog.yaml").write_text(yaml.safe_dump(config))
    return {"folder": folder, "a": truth_a, "b": truth_b, "config": folder / "catalog.yaml"}


@pytest.fixture(scope="module")
def postgis_server():
    if find_bindir() is None:
        pytest.skip("PostgreSQL/PostGIS binaries not installed (Debian packages postgresql, postgresql-postgis)")
    with TempPostGIS() as server:
        yield server


@pytest.fixture(params=["geopackage", "postgis"])
def catalog_target(request, tmp_path):
    if request.param == "geopackage":
        yield str(tmp_path / "catalog.gpkg")
        return
    server = request.getfixturevalue("postgis_server")
    yield server.url
    with open_catalog(server.url) as catalog:  # leave an empty database for the next test
        metadata.drop_all(catalog.engine)


@pytest.fixture()
def built(world, catalog_target):
    counts = build_catalog(world["config"], catalog_target)
    with open_catalog(catalog_target) as catalog:
        yield catalog, counts


def _ids(frame):
    return sorted(frame["class_path"].tolist())


def test_build_ingests_images_labels_and_context(built, world):
    catalog, counts = built
    assert counts == {"images": 3, "observations": len(world["a"]) + len(world["b"]) + 2}
    images = catalog.images().set_index("name")
    assert pd.isna(images.loc["drone", "crs"]) and images.loc["a", "crs"] == "EPSG:32631"
    assert images.loc["a", "acquired"] == dt.date(2024, 5, 1) and images.loc["a", "gsd"] == pytest.approx(0.5)
    assert images.loc["a", "cloud"] == 5 and images.loc["b", "cloud"] == 40
    # vegetation computed from NDVI for the image that declares red and nir, not for the others
    assert 0 < images.loc["a", "vegetation"] < 100
    assert images.loc[["b", "drone"], "vegetation"].isna().all()
    assert set(catalog.class_paths()) >= {"vehicle/car/sedan/red", "building/industrial/warehouse",
                                          "vehicle/aircraft/fighter/f16", "vehicle/car"}


def test_labels_in_another_crs_land_on_their_image(built, world):
    catalog, _ = built
    picked = catalog.select(Selection(images=["a"]))
    assert len(picked) == len(world["a"])
    # native geometries are back in the raster's CRS (the CSV was in EPSG:4326)
    expected = np.sort(shapely.area(world["a"].geometry.array))
    assert np.allclose(np.sort(shapely.area(np.asarray(picked["geometry"]))), expected, rtol=1e-6)


def test_class_filter_at_any_level(built, world):
    catalog, _ = built
    vehicles = catalog.select(Selection(classes=["vehicle"]))
    n_cars = int((world["a"]["class"] == "vehicle/car/sedan/red").sum() + (world["b"]["class"] == "vehicle/car").sum())
    assert len(vehicles) == n_cars + 2
    aircraft = catalog.select(Selection(classes=["vehicle/aircraft"]))
    assert _ids(aircraft) == ["vehicle/aircraft/fighter/f16"] * 2
    no_buildings = catalog.select(Selection(exclude_classes=["building"]))
    assert not any(p.startswith("building") for p in no_buildings["class_path"])
    counts = catalog.counts(Selection(classes=["vehicle"], level=2)).set_index("class")
    assert counts.loc["vehicle/aircraft", "objects"] == 2 and counts.loc["vehicle/car", "objects"] == n_cars
    assert counts.loc["vehicle/car", "images"] == 2


def test_image_filters_dates_sensors_gsd(built, world):
    catalog, _ = built
    n_a, n_b = len(world["a"]), len(world["b"])
    assert len(catalog.select(Selection(dates=(dt.date(2024, 1, 1), None)))) == n_a
    assert len(catalog.select(Selection(dates=(None, dt.date(2023, 12, 31))))) == n_b
    assert len(catalog.select(Selection(sensors=["s2"]))) == n_b
    assert len(catalog.select(Selection(gsd=(0.4, 0.6)))) == n_a + n_b  # the PNG has no GSD: out
    assert len(catalog.select(Selection(images=["drone"]))) == 2


def test_context_per_tile_overrides_the_image(built, world):
    catalog, _ = built
    clear = catalog.select(Selection(context={"cloud": (None, 20)}))
    # scene B is cloudy (40 %); in scene A only the objects east of the cloudy west tile remain
    centroid_x = shapely.get_coordinates(shapely.centroid(world["a"].geometry.array))[:, 0]
    assert len(clear) == int((centroid_x >= 500_128).sum())
    cloudy = catalog.select(Selection(context={"cloud": (60, None)}))
    assert len(cloudy) == int((centroid_x < 500_128).sum())
    green = catalog.select(Selection(context={"vegetation": (0, 100)}))
    assert len(green) == len(world["a"])  # only scene A has a vegetation value


def test_aoi_filter_matches_geometry(built, world):
    catalog, _ = built
    truth = world["a"].to_crs(4326)
    minx, miny, maxx, maxy = truth.total_bounds
    aoi_geom = shapely.Polygon([(minx, miny), ((minx + maxx) / 2, maxy), (maxx, miny)])  # a triangle
    expected = int(shapely.intersects(truth.geometry.array, aoi_geom).sum())
    assert 0 < expected < len(truth)
    aoi = Aoi(wkt=aoi_geom.wkt).to_wgs84()
    assert len(catalog.select(Selection(), aoi)) == expected


def test_geopackage_is_a_real_geopackage(world, tmp_path):
    path = tmp_path / "cat.gpkg"
    build_catalog(world["config"], path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
    layer = gpd.read_file(path, layer="observations")  # GDAL reads our geometry blobs
    assert layer.crs.to_epsg() == 4326 and layer.geometry.notna().sum() == len(world["a"]) + len(world["b"])
    assert layer.geometry.dropna().is_valid.all()


def test_compute_context_matches_ndvi(small_scene):
    import rasterio

    image, tiles = compute_context(small_scene[0], ["blue", "green", "red", "nir"], ["vegetation", "snow"], 256)
    with rasterio.open(small_scene[0]) as ds:
        red, nir = ds.read(3).astype("float64"), ds.read(4).astype("float64")
        valid = ds.dataset_mask() > 0
    ndvi = (nir - red) / np.maximum(nir + red, 1)
    assert image["vegetation"] == pytest.approx(100 * ((ndvi > 0.3) & valid).sum() / valid.sum(), abs=0.05)
    assert "snow" not in image  # no SWIR band declared
    assert len(tiles) == 2 * 3 and all(0 <= t["vegetation"] <= 100 for t in tiles)


def test_hierarchy_helpers():
    assert normalize(" Vehicle/Aircraft/ ") == "vehicle/aircraft"
    assert prefixes("vehicle/aircraft/fighter") == ["vehicle", "vehicle/aircraft", "vehicle/aircraft/fighter", None]
    assert cut("vehicle/aircraft/fighter/f16", 2) == "vehicle/aircraft" and cut("building", 2) == "building"
    assert map_classes(["vehicle/aircraft/fighter/f16", "vehicle/car"], 2, {"vehicle/aircraft": "plane"}) == [
        "plane", "vehicle/car"]
    assert tree(["a/b/c", "a/d"]) == {"": ["a"], "a": ["a/b", "a/d"], "a/b": ["a/b/c"]}
    for bad in ("", "a//b", "a/b/c/d/e"):
        with pytest.raises(InputError):
            normalize(bad)


def test_catalog_cli_build_and_query(cli, world, tmp_path):
    out = tmp_path / "cat.gpkg"
    result = cli("catalog", "build", str(world["config"]), "-o", str(out), "--events", "none")
    assert result.returncode == 0, result.stderr
    select = tmp_path / "select.yaml"
    select.write_text(yaml.safe_dump({"classes": ["vehicle"], "level": 2}))
    result = cli("catalog", "query", str(out), "--select", str(select), "--json")
    assert result.returncode == 0, result.stderr
    import json

    data = json.loads(result.stdout)
    assert {row["class"] for row in data["classes"]} == {"vehicle/car", "vehicle/aircraft"}
    table = cli("catalog", "query", str(out), "--select", str(select))
    assert "vehicle/aircraft" in table.stdout and "total" in table.stdout


@pytest.mark.parametrize("case", ["missing_raster", "not_a_catalog", "bad_select_key", "unknown_class_field"])
def test_catalog_bad_inputs_exit_2(cli, world, tmp_path, case):
    config = yaml.safe_load(world["config"].read_text())
    config_path = tmp_path / "catalog.yaml"
    for entry in config["images"] + config["labels"] + config["context_layers"]:
        entry["path"] = str(world["folder"] / entry["path"])
    if case == "missing_raster":
        config["images"][0]["path"] = str(tmp_path / "nope.tif")
    if case == "unknown_class_field":
        config["labels"][1]["class_field"] = "category"
    config_path.write_text(yaml.safe_dump(config))
    if case == "not_a_catalog":
        (tmp_path / "x.gpkg").write_text("nothing")
        result = cli("catalog", "query", str(tmp_path / "x.gpkg"))
    elif case == "bad_select_key":
        build_catalog(config_path, tmp_path / "ok.gpkg")
        (tmp_path / "s.yaml").write_text("clases: [vehicle]\n")
        result = cli("catalog", "query", str(tmp_path / "ok.gpkg"), "--select", str(tmp_path / "s.yaml"))
    else:
        result = cli("catalog", "build", str(config_path), "-o", str(tmp_path / "c.gpkg"), "--events", "none")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("aifactory: error")]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "c.gpkg").exists()
