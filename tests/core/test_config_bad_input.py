"""Bad input in configs and options: one line naming the file (or option) and the key path, exit code 2.

CRS and WKT text, impossible dates, reversed ranges, classes the catalog does not hold, union members in
key paths, folders and non-UTF-8 files given as configs, synthetic scenes outside their CRS, chips larger
than the rasters.
"""

from __future__ import annotations

import pytest
import rasterio
import yaml
from aifactory.catalog.build import CatalogConfig, build_catalog
from aifactory.catalog.selection import load_selection
from aifactory.config import load_config, load_yaml
from aifactory.datasets.config import load_dataset_config
from aifactory.datasets.plan import plan_dataset
from aifactory.errors import ConfigError
from aifactory.io.synthetic import SceneSpec, generate_scene


def write(path, data):
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def error_line(result):
    """The CLI's one error line (asserting there is exactly one and no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("aifactory: error: ")]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def dataset_data(raster, truth, **extra):
    return {"sources": [{"raster": str(raster), "labels": str(truth), "layer": "truth"}], **extra}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, small_scene):
    """A real GeoPackage catalog of the small scene (classes building, vegetation/tree, vehicle/car)."""
    raster, truth = small_scene
    folder = tmp_path_factory.mktemp("catalog")
    config = write(folder / "catalog.yaml", {"images": [{"path": str(raster)}],
                                             "labels": [{"path": str(truth), "layer": "truth"}]})
    build_catalog(config, folder / "catalog.gpkg")
    return folder / "catalog.gpkg"


@pytest.mark.parametrize("value", ["EPSG:999999", "foo"])
def test_synth_unknown_crs_names_the_option(cli, tmp_path, value):
    result = cli("synth", "-o", str(tmp_path / "x.tif"), "--size", "64x64", "--crs", value)
    line = error_line(result)
    assert "--crs: not a CRS" in line and value in line
    assert not (tmp_path / "x.tif").exists()


@pytest.mark.parametrize("kind, text, key", [
    ("selection", "aoi: {wkt: 'POINT (3 45)', crs: 'EPSG:999999'}\n", "aoi.crs: Value error, not a CRS"),
    ("catalog", "images: [{path: a.tif}]\nlabels: [{path: b.csv, crs: foo}]\n", "labels.0.crs: Value error, not a CRS"),
    ("catalog", "images: [{path: a.tif}]\ncontext_layers: [{path: c.gpkg, crs: foo}]\n",
     "context_layers.0.crs: Value error, not a CRS"),
    ("dataset", "sources: [{raster: a.tif, labels: b.csv, crs: EPSG:999999}]\n", "sources.0.crs: Value error"),
    ("dataset", "sources: [{raster: a.tif, labels: b.gpkg}]\nsplit: {holdout: [{wkt: 'POINT (1 1)', crs: x}]}\n",
     "split.holdout.0.crs: Value error, not a CRS"),
    ("selection", "aoi: {wkt: 'POLYGON ((2.9 45.0, 3.2 45.0'}\n", "aoi.wkt: Value error, invalid WKT"),
    ("dataset", "sources: [{raster: a.tif, labels: b.gpkg}]\nsplit: {holdout: [{wkt: 'POLYGON ((1 1, 2 2))'}]}\n",
     "split.holdout.0.wkt: Value error, invalid WKT"),
    ("catalog", "images: [{path: a.tif, date: 2024-13-45}]\n", "images.0.date: Input should be a valid date"),
    ("selection", "dates: [2024-99-01, null]\n", "dates.0: Input should be a valid date"),
    ("selection", "context: {cloud: [30, 10]}\n", "context.cloud: Value error, [30.0, 10.0] is reversed"),
    ("selection", "dates: [2024-05-02, 2024-01-01]\n", "dates: Value error, [2024-05-02, 2024-01-01] is reversed"),
    ("selection", "gsd: [2, 0.5]\n", "gsd: Value error, [2.0, 0.5] is reversed"),
    ("selection", "classes: []\n", "classes: Value error, empty list: leave the key out"),
    ("selection", "classes: ['vehicle//car']\n", "classes: Value error, invalid class path"),
    ("dataset", "sources: [{raster: a.tif, labels: b.gpkg}]\nclasses: {names: ['a//b']}\n",
     "classes.names: Value error, invalid class path"),
    ("dataset", "catalog: {path: c.gpkg, select: {clases: [vehicle]}}\n", "catalog.select.clases: unknown key"),
])
def test_config_errors_name_file_and_user_key(tmp_path, kind, text, key):
    path = write(tmp_path / "config.yaml", text)
    load = {"selection": load_selection, "dataset": load_dataset_config,
            "catalog": lambda p: load_config(p, CatalogConfig)}[kind]
    with pytest.raises(ConfigError) as excinfo:
        load(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: {key}"), message
    assert "\n" not in message and "Selection" not in message and "[" not in message.split(":")[1]


def test_folder_and_latin1_configs_say_what_they_are(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_yaml(tmp_path)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 at offset 9, line 1\)"):
        load_yaml(latin1)


def test_query_refuses_a_class_the_catalog_lacks(cli, catalog, tmp_path):
    select = write(tmp_path / "select.yaml", "classes: [vehicl]\n")
    line = error_line(cli("catalog", "query", str(catalog), "--select", str(select)))
    assert f"{select}: classes: 'vehicl' is not a class of {catalog}" in line
    assert "did you mean vehicle" in line and "known: building, vegetation, vegetation/tree" in line


def test_dataset_from_catalog_refuses_a_class_the_catalog_lacks(catalog, tmp_path):
    path = write(tmp_path / "ds.yaml", {"catalog": {"path": str(catalog), "select": {"exclude_classes": ["tre"]}}})
    with pytest.raises(ConfigError, match=r"catalog\.select\.exclude_classes: 'tre' is not a class of"):
        plan_dataset(load_dataset_config(path))


def test_chips_larger_than_the_raster_say_so(small_scene, tmp_path, cli):
    path = write(tmp_path / "ds.yaml", dataset_data(*small_scene, chips={"size": 1024}))
    said = (f"chips.size: 1024 px chips are larger than the raster {small_scene[0]} (640 x 480 px); use a "
            "chips.size that fits (or raise chips.max_nodata)")
    with pytest.raises(ConfigError) as excinfo:
        plan_dataset(load_dataset_config(path))
    assert str(excinfo.value) == said
    done = cli("dataset", "preview", str(path), "--events", "none")  # the command names the config file too
    assert done.returncode == 2 and done.stderr.splitlines() == [f"aifactory: error: {path}: {said}"]


def test_geographic_scene_gets_coordinates_in_degrees(tmp_path):
    generate_scene(SceneSpec(width=64, height=64, crs="EPSG:4326", gsd=1e-5), tmp_path / "g.tif")
    with rasterio.open(tmp_path / "g.tif") as ds:
        west, south, east, north = ds.bounds
    assert 2.9 < west < east < 3.1 and 45 < south < north < 45.3
    assert SceneSpec().origin == (500_000.0, 5_000_000.0)  # the projected default is unchanged


@pytest.mark.parametrize("spec", [
    {"crs": "EPSG:4326", "origin": (500_000.0, 5_000_000.0)},   # a UTM origin read as degrees
    {"crs": "EPSG:4326", "gsd": 1.0, "width": 256},            # 256 degrees wide
])
def test_scene_outside_its_crs_is_refused(spec):
    with pytest.raises(ConfigError, match="leaves the area of use of EPSG:4326"):
        SceneSpec(**spec)
