"""Fixtures of the plugin tests: the plugin on pytest-qgis's interface, a real worker, a synthetic scene.

Nothing here imports ``aifactory`` (or torch, rasterio, geopandas, pyogrio): the scene comes from the
worker CLI in a subprocess, detections are derived from its truth with osgeo.ogr, so the test of
``sys.modules`` at the end of the run is meaningful.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from plugin_helpers import WORKER_PYTHON, run_worker, write_detections
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer


@pytest.fixture(scope="session")
def scene(tmp_path_factory) -> tuple[Path, Path]:
    """A 384 × 256 synthetic scene (EPSG:32631) and its truth GeoPackage, written by the real worker."""
    folder = tmp_path_factory.mktemp("scene")
    raster, truth = folder / "scene.tif", folder / "truth.gpkg"
    run_worker("synth", "-o", str(raster), "--truth", str(truth), "--size", "384x256", "--seed", "3", "--density", "2",
               "--events", "none")
    return raster, truth


@pytest.fixture()
def detections(scene, tmp_path) -> Path:
    path = tmp_path / "detections.gpkg"
    write_detections(scene[1], path)
    return path


@pytest.fixture()
def project_layers(qgis_new_project, scene, detections):
    """The scene raster, its truth and the detections, added to a fresh project."""
    raster = QgsRasterLayer(str(scene[0]), "scene", "gdal")
    truth = QgsVectorLayer(f"{scene[1]}|layername=truth", "truth", "ogr")
    dets = QgsVectorLayer(f"{detections}|layername=detections", "detections", "ogr")
    assert raster.isValid() and truth.isValid() and dets.isValid()
    QgsProject.instance().addMapLayers([raster, truth, dets])
    return raster, truth, dets


@pytest.fixture()
def plugin(qgis_iface, tmp_path, monkeypatch):
    """The plugin loaded through classFactory on the test interface, with the real worker configured and a job
    history of its own (not the profile's file, which grew by every test run's jobs)."""
    from aifactory_qgis import classFactory
    from aifactory_qgis.settings import Settings

    monkeypatch.setattr(Settings, "history_path", lambda _self: tmp_path / "history.json")
    settings = Settings()
    settings.set_worker_python(WORKER_PYTHON)
    settings.set_work_dir(str(tmp_path / "jobs"))
    instance = classFactory(qgis_iface)
    instance.initGui()
    yield instance
    instance.unload()
