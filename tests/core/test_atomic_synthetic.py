from __future__ import annotations

import sqlite3
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from aifactory.io.atomic import atomic_path
from aifactory.io.cog import COGWriter
from aifactory.io.synthetic import SceneSpec, generate_objects, generate_scene
from aifactory.io.vector import read_vector, write_vector


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(final) as tmp:
        tmp.write_text("whole")
    assert final.read_text() == "whole"
    assert list(tmp_path.iterdir()) == [final]


def test_cog_writer_aborts_cleanly(tmp_path):
    final = tmp_path / "scores.tif"
    with pytest.raises(KeyboardInterrupt), COGWriter(final, 64, 64, 1, "uint8") as writer:
        writer.write(np.ones((1, 32, 32), "uint8"), rasterio.windows.Window(0, 0, 32, 32))
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_cog_writer_writes_a_valid_cog(tmp_path):
    final = tmp_path / "big.tif"
    with COGWriter(final, 1500, 1100, 2, "uint8", crs="EPSG:32617", nodata=0) as writer:
        for row in range(0, 1100, 512):
            rows = min(512, 1100 - row)
            writer.write(np.full((2, rows, 1500), row // 512 + 1, "uint8"), rasterio.windows.Window(0, row, 1500, rows))
    with rasterio.open(final) as ds:
        assert ds.overviews(1) == [2, 4]
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.read(1)[600, 10] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["big.tif"]


def test_synthetic_scene_is_deterministic_and_truth_matches(tmp_path):
    spec = SceneSpec(width=300, height=200, seed=3, blocksize=128)
    truth = generate_scene(spec, tmp_path / "a.tif", tmp_path / "a.gpkg")
    generate_scene(spec, tmp_path / "b.tif")
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert (a.read() == b.read()).all()
        bounds = a.bounds
    assert len(truth) == len(generate_objects(spec)) > 0
    stored = read_vector(tmp_path / "a.gpkg")
    assert stored.crs.to_epsg() == 32631 and len(stored) == len(truth)
    minx, miny, maxx, maxy = stored.total_bounds
    assert bounds.left <= minx and maxx <= bounds.right and bounds.bottom <= miny and maxy <= bounds.top


def test_synthetic_objects_are_visible_in_the_raster(tmp_path):
    spec = SceneSpec(width=256, height=256, bands=4, crs=None, seed=1, density=1.0)
    truth = generate_scene(spec, tmp_path / "px.tif")
    trees = truth[truth["class"] == "vegetation/tree"]
    with rasterio.open(tmp_path / "px.tif") as ds:
        image = ds.read().astype(float)
    point = trees.geometry.iloc[0].representative_point()
    nir, red = image[3, int(point.y), int(point.x)], image[2, int(point.y), int(point.x)]
    assert nir > 2 * red


def test_write_vector_shapefile_keeps_side_files(tmp_path):
    import geopandas as gpd
    import shapely
    from aifactory.io.vector import write_vector

    frame = gpd.GeoDataFrame({"score": [0.5]}, geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:32631")
    for _ in range(2):  # a second write replaces the first
        write_vector(frame, tmp_path / "out.shp")
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".cpg", ".dbf", ".prj", ".shp", ".shx"]
    back = read_vector(tmp_path / "out.shp")
    assert back.crs.to_epsg() == 32631 and back["score"].tolist() == [0.5]


def test_pixel_space_frames_are_written_from_a_thread_without_a_warning(tmp_path):
    # as the detections writer does: pyogrio's "'crs' was not provided" warning is not for pixel space
    script = (
        "import threading, geopandas as gpd, shapely\n"
        "from aifactory.io.vector import write_frame\n"
        "frame = gpd.GeoDataFrame({'score': [0.5]}, geometry=[shapely.box(0, 0, 8, 8)])\n"
        f"writer = threading.Thread(target=write_frame, args=(frame, {str(tmp_path / 'pixels.gpkg')!r}),"
        " kwargs={'layer': 'detections'})\n"
        "writer.start(); writer.join()\n")
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    written = read_vector(tmp_path / "pixels.gpkg", layer="detections")
    assert written.crs is None and len(written) == 1


def test_a_geopackage_layer_of_undefined_srs_has_no_crs(tmp_path):
    """srs_id 0 reads as GDAL's "Undefined geographic SRS": taken for degrees, metres were reprojected as such."""
    path = write_vector(gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.box(0, 0, 10, 10)], crs=32631),
                        tmp_path / "undefined.gpkg")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE gpkg_contents SET srs_id = 0")
        db.execute("UPDATE gpkg_geometry_columns SET srs_id = 0")
    assert gpd.read_file(path).crs.name == "Undefined geographic SRS"
    assert read_vector(path).crs is None
    assert read_vector(path, crs=32631).crs == "EPSG:32631"


def test_a_writer_stopped_while_it_opens_leaves_no_temporary(tmp_path):
    """A stop (SIGTERM from the plugin closing QGIS) can land as soon as the temporary exists, before the writer is
    made: here the failure that comes right after the file is created (a description for a band it lacks)."""
    with pytest.raises(IndexError):
        COGWriter(tmp_path / "x.tif", 64, 64, 1, "uint8", band_descriptions=["a", "b"])
    assert list(tmp_path.iterdir()) == []
