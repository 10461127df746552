"""The plugin never loads the worker's stack into QGIS (DESIGN.md, "two processes").

This file sorts last, so the check sees the whole session: every dock, the jobs, the provider. It is
meaningful because nothing in tests/qgis imports aifactory or these libraries; workers are subprocesses.
"""

from __future__ import annotations

import ast
import sys

from plugin_helpers import REPO

FORBIDDEN = ("torch", "rasterio", "geopandas", "pyogrio", "segmentation_models_pytorch", "timm", "onnxruntime",
             "aifactory")


def test_every_dock_exercised_without_loading_the_worker_stack(qgis_app, project_layers, plugin, tmp_path):
    raster, truth, detections = project_layers
    plugin.docks["rps"].detections.setLayer(detections)
    plugin.docks["rps"].score.setValue(60)
    plugin.docks["review"].detections.setLayer(detections)
    plugin.docks["review"].accept()
    plugin.docks["geofence"].raster.setLayer(raster)
    plugin.docks["geofence"].create(str(tmp_path / "g.gpkg"))
    plugin.docks["dataset"].preview()
    plugin.docks["tagging"].annotations.setLayer(truth)
    plugin.docks["jobs"].kind.setCurrentIndex(1)
    plugin.docks["jobs"].build_spec()
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in FORBIDDEN)
    assert loaded == []


def test_plugin_source_imports_none_of_them():
    for path in (REPO / "aifactory_qgis").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] not in (*FORBIDDEN, "PyQt5"), f"{path}: imports {name}"
