"""Every GeoPackage we make opens in QGIS 3.22 LTR's GDAL (Debian's 3.6) without its "partially supported" warning."""

from __future__ import annotations

import shutil
import subprocess
import textwrap

import geopandas as gpd
import pytest
import shapely
from aifactory.catalog.store import open_catalog
from aifactory.demo.neon import fetch_data, prepare_scenes
from aifactory.io.vector import GPKG_USER_VERSION, geopackage_user_version, write_frame, write_vector
from test_predict_support import predict_scene, trained_run  # noqa: F401  (shared session fixtures)

# QGIS's own interpreter and GDAL; opening a file there prints GDAL's messages, one per line
OPEN_WITH_SYSTEM_GDAL = textwrap.dedent("""
    import sys
    from osgeo import gdal
    messages = []
    gdal.PushErrorHandler(lambda kind, number, text: messages.append(text))
    for path in sys.argv[1:]:
        assert gdal.OpenEx(path, gdal.OF_VECTOR) is not None, path
    print("\\n".join(messages))
""")


def test_our_geopackages_are_version_1_2_and_open_without_a_warning(tmp_path, trained_run, predict_scene, cli):  # noqa: F811
    raster, _ = predict_scene
    predicted = cli("predict", "--model", str(trained_run), "--raster", str(raster), "-o", str(tmp_path / "out"),
                    "--events", "none")
    assert predicted.returncode == 0, predicted.stderr
    layer = gpd.GeoDataFrame({"score": [0.9]}, geometry=[shapely.box(0, 0, 5, 5)], crs=32631)
    written = write_vector(layer, tmp_path / "layer.gpkg")
    open_catalog(tmp_path / "catalog.gpkg", create=True).close()
    made = [tmp_path / "out" / "detections.gpkg", written, tmp_path / "catalog.gpkg"]
    assert [geopackage_user_version(path) for path in made] == [10200] * 3, "GeoPackage 1.2"

    system_python = shutil.which("python3", path="/usr/bin")
    if system_python is None or subprocess.run([system_python, "-c", "import osgeo"]).returncode != 0:
        pytest.skip("QGIS's Python with GDAL (python3-gdal) is not installed here")
    opened = subprocess.run([system_python, "-c", OPEN_WITH_SYSTEM_GDAL, *map(str, made)], capture_output=True,
                            text=True, timeout=120)
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout.strip() == ""


def test_the_demo_rewrites_label_files_an_older_version_cached_in_1_4(tmp_path):
    """Versions before 1.2 was chosen left the demo's label files in the cache as GeoPackage 1.4."""
    folder = fetch_data(tmp_path / "neon")  # from the cached DeepForest wheel, as the demo does
    labels = folder / "SOAP_061.labels.gpkg"
    old = gpd.GeoDataFrame({"class": ["Tree"]}, geometry=[shapely.box(0, 0, 5, 5)])
    write_frame(old, labels, layer="labels", VERSION="1.4")
    assert geopackage_user_version(labels) == 10400
    scenes = {scene.name: scene for scene in prepare_scenes(folder)}
    assert geopackage_user_version(labels) == GPKG_USER_VERSION == 10200
    assert scenes["SOAP_061"].boxes == len(gpd.read_file(labels)) > 1
