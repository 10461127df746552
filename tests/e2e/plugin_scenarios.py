"""Plugin scenarios run by tests/e2e/test_plugin*.py in a pytest process of their own, with pytest-qgis.

The e2e suite runs without pytest-qgis (and imports the worker's stack), so each scenario is started as
``python -m pytest tests/e2e/plugin_scenarios.py -k NAME`` with its inputs in environment variables;
this file is not collected by the outer run (its name does not start with ``test_``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer

REPO = Path(__file__).resolve().parents[2]


def wait_for(app, predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        app.processEvents()
        time.sleep(0.05)
    return predicate()


@pytest.fixture()
def plugin(qgis_iface, tmp_path):
    from aifactory_qgis import classFactory
    from aifactory_qgis.settings import Settings

    settings = Settings()
    settings.set_worker_python(str(REPO / ".venv" / "bin" / "python"))
    settings.set_work_dir(str(tmp_path / "jobs"))
    instance = classFactory(qgis_iface)
    instance.initGui()
    yield instance
    instance.unload()


@pytest.mark.skipif("AIF_E2E_RUN" not in os.environ, reason="started by tests/e2e/test_plugin_prediction.py")
def test_predict_from_the_jobs_dock(qgis_app, qgis_new_project, plugin, tmp_path):
    raster = QgsRasterLayer(os.environ["AIF_E2E_RASTER"], "scene", "gdal")
    QgsProject.instance().addMapLayer(raster)
    dock = plugin.docks["jobs"]
    dock.kind.setCurrentIndex(dock.kind.findData("predict"))
    dock.model.setFilePath(os.environ["AIF_E2E_RUN"])
    dock.raster.setLayer(raster)
    dock.output.setFilePath(str(tmp_path / "prediction"))
    progress: list[int] = []
    job = dock.launch()
    job.reported.connect(lambda event: event["event"] == "progress" and progress.append(dock.progress.value()))
    assert wait_for(qgis_app, lambda: job.done, 600), "\n".join(job.log)
    assert job.status == "ok", job.message
    assert dock.progress.value() == 100 and progress and progress[-1] == 100
    layers = {Path(layer.source().split("|")[0]).name: layer for layer in QgsProject.instance().mapLayers().values()}
    detections = layers["detections.gpkg"]
    assert isinstance(detections, QgsVectorLayer) and detections.isValid()
    assert {"score", "class", "area", "review"} <= set(detections.fields().names())
    assert isinstance(layers["scores.tif"], QgsRasterLayer)


@pytest.mark.skipif("AIFACTORY_RAY_ADDRESS" not in os.environ, reason="started by tests/e2e/test_plugin_ray.py")
def test_job_on_a_real_ray_cluster(qgis_app, qgis_new_project, plugin, tmp_path):
    from aifactory_qgis import worker
    from aifactory_qgis.jobs.spec import JobSpec
    from aifactory_qgis.settings import Cluster, store_token

    manager = QgsApplication.authManager()
    if not manager.masterPasswordIsSet():
        manager.setMasterPassword("e2e-master-password", True)
    authcfg = store_token("e2e", os.environ["AIFACTORY_RAY_TOKEN"])
    plugin.manager.settings.set_clusters([Cluster("e2e", os.environ["AIFACTORY_RAY_ADDRESS"], authcfg)])
    plugin.docks["jobs"].refresh_runners()
    out = tmp_path / "remote.tif"  # same machine: the "shared path" case of DESIGN.md
    job = plugin.manager.submit(JobSpec(kind="synth", title="remote synth", runner="e2e", cpus=1,
                                        args=worker.synth(str(out), size="256x256"), outputs=[str(out)]))
    assert plugin.docks["jobs"].job is job
    assert wait_for(qgis_app, lambda: job.done, 300), "\n".join(job.log)
    assert job.status == "ok", job.message
    assert job.remote_id and job.state.percent == 100
    assert out.is_file()
    assert any(Path(layer.source()).name == "remote.tif" for layer in QgsProject.instance().mapLayers().values())
