"""The plugin zip (`make package`): complete, and loadable by QGIS's own Python through qgis_process, where
its Processing algorithm runs the worker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from plugin_helpers import REPO, WORKER_PYTHON

sys.path.insert(0, str(REPO / "tools"))
import qgis_plugin

QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/lib/qgis/qgis_process.bin"


@pytest.fixture(scope="module")
def plugin_zip():
    return qgis_plugin.package()


def test_zip_holds_the_plugin_with_its_resources(plugin_zip):
    names = set(zipfile.ZipFile(plugin_zip).namelist())
    for name in ("metadata.txt", "LICENSE", "__init__.py", "plugin.py", "icons/aifactory.svg", "icons/rps.svg",
                 "processing/provider.py"):
        assert f"aifactory_qgis/{name}" in names, name
    assert all(name.startswith("aifactory_qgis/") for name in names)
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
    if (REPO / "resources" / "styles").is_dir():
        assert any(name.startswith("aifactory_qgis/styles/") for name in names)
    if shutil.which("lrelease"):
        assert "aifactory_qgis/i18n/aifactory_fr.qm" in names


@pytest.mark.skipif(not os.path.exists(QGIS_PROCESS), reason="qgis_process is not installed")
def test_qgis_process_loads_the_zip_and_runs_an_algorithm(plugin_zip, scene, detections, tmp_path):
    plugins = tmp_path / "plugins"
    zipfile.ZipFile(plugin_zip).extractall(plugins)
    profile = tmp_path / "profile"
    ini = profile / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text(f"[PythonPlugins]\naifactory_qgis=true\n\n[aifactory]\nworker_python={WORKER_PYTHON}\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QGIS_PLUGINPATH": str(plugins),
           "QGIS_CUSTOM_CONFIG_PATH": str(profile)}
    out = tmp_path / "metrics.json"
    run = subprocess.run([QGIS_PROCESS, "run", "aifactory:evaluate", "--", f"PRED={detections}",
                          f"TRUTH={scene[1]}", f"OUTPUT={out}"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert json.loads(out.read_text())["overall"]["recall"] == pytest.approx(1.0)
