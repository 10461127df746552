"""Helpers of the plugin tests (a module of its own: tests/qgis is not a package, it would shadow ``qgis``)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from osgeo import ogr, osr

REPO = Path(__file__).resolve().parents[2]
WORKER_PYTHON = str(REPO / ".venv" / "bin" / "python")
DETECTION_FIELDS = (("class", ogr.OFTString), ("score", ogr.OFTReal), ("model_run", ogr.OFTString),
                    ("tile_id", ogr.OFTString), ("area", ogr.OFTReal), ("review", ogr.OFTString),
                    ("reviewed_class", ogr.OFTString))

ogr.UseExceptions()
osr.UseExceptions()


def run_worker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WORKER_PYTHON, "-m", "aifactory.cli", *args], capture_output=True, text=True,
                          timeout=300, check=True)


def score_of(index: int) -> float:
    """Deterministic, well-spread scores in [0, 1)."""
    return round((index * 0.618034) % 1.0, 4)


def write_detections(truth: Path, path: Path, extra_fields: bool = True) -> int:
    """A detections GeoPackage (the prediction contract's fields) made from the truth objects."""
    source = ogr.Open(str(truth))
    layer = source.GetLayer(0)
    driver = ogr.GetDriverByName("GPKG")
    target = driver.CreateDataSource(str(path))
    out = target.CreateLayer("detections", layer.GetSpatialRef(), ogr.wkbMultiPolygon)
    fields = DETECTION_FIELDS if extra_fields else DETECTION_FIELDS[:1]
    for name, kind in fields:
        out.CreateField(ogr.FieldDefn(name, kind))
    count = 0
    for index, feature in enumerate(layer):
        geometry = ogr.ForceToMultiPolygon(feature.GetGeometryRef().Clone())
        new = ogr.Feature(out.GetLayerDefn())
        new.SetGeometry(geometry)
        new["class"] = feature["class"]
        if extra_fields:
            new["score"] = score_of(index)
            new["model_run"] = "test-run"
            new["tile_id"] = f"0_{index // 10}"
            new["area"] = geometry.GetArea()
            new["review"] = "unreviewed"
        out.CreateFeature(new)
        count += 1
    target = None
    return count


def wait_for(qgis_app, predicate, timeout: float = 60.0) -> bool:
    """Process Qt events until ``predicate()`` holds (signals of QProcess and the network need the loop)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        qgis_app.processEvents()
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def count_features(path: str | Path, where: str | None = None, layer: int | str = 0) -> int:
    """Features in a vector file (matching an OGR SQL ``where``), counted by OGR, independently of QGIS."""
    source = ogr.Open(str(path))
    handle = source.GetLayer(layer)
    handle.SetAttributeFilter(where)
    return handle.GetFeatureCount()


def reprojected_copy(layer, path: Path, authid: str):
    """A real reprojected GeoPackage copy of ``layer`` (written by QGIS), added to the project."""
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransform,
        QgsProject,
        QgsVectorFileWriter,
        QgsVectorLayer,
    )

    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.ct = QgsCoordinateTransform(layer.crs(), QgsCoordinateReferenceSystem(authid), QgsProject.instance())
    error = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(path), QgsProject.instance().transformContext(),
                                                      options)
    assert error[0] == QgsVectorFileWriter.NoError, error
    copy = QgsVectorLayer(str(path), f"{layer.name()} {authid}", "ogr")
    assert copy.isValid() and copy.crs().authid() == authid
    QgsProject.instance().addMapLayer(copy)
    return copy
