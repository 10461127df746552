"""The real QGIS desktop under Xvfb with the plugin enabled on the sample project: a startup script opens the
RPS dock, moves the slider and reports; a screenshot goes to test_output/ for people (and CI) to look at."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test_output"
sys.path.insert(0, str(REPO / "tools"))
import qgis_plugin  # noqa: E402 (the build tool, not a package)

pytestmark = pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("qgis") and shutil.which("import")),
                                reason="needs Xvfb, qgis and ImageMagick's import")

DRIVE = '''
import json
from qgis.core import QgsProject
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.utils import iface, plugins

RESULT = {result!r}
POINTS = {points!r}


def report():
    plugin = plugins["aifactory_qgis"]
    dock = plugin.docks["rps"]
    layer = QgsProject.instance().mapLayersByName("detections")[0]
    with open(RESULT + ".part", "w") as handle:
        json.dump({{"visible": dock.isVisible(), "subset": layer.subsetString(), "kept": dock.kept.text(),
                   "metrics": dock.metrics.text(), "current": dock.curve.current,
                   "features": layer.featureCount(), "docks": sorted(plugin.docks),
                   "geometry": [dock.width(), dock.height()]}}, handle)
    import os
    os.replace(RESULT + ".part", RESULT)


def drive():
    plugin = plugins.get("aifactory_qgis")
    layers = QgsProject.instance().mapLayersByName("detections")
    if plugin is None or not layers or not iface.mainWindow().isVisible():
        QTimer.singleShot(300, drive)
        return
    iface.mainWindow().setGeometry(0, 0, 1600, 1000)  # no window manager to maximize it
    dock = plugin.docks["rps"]
    dock.show()
    dock.raise_()
    iface.mainWindow().resizeDocks([dock], [430], Qt.Horizontal)
    dock.detections.setLayer(layers[0])
    dock.points.setFilePath(POINTS)
    dock.score.setValue(62)
    canvas = iface.mapCanvas()
    canvas.mapCanvasRefreshed.connect(lambda: QTimer.singleShot(500, report))
    canvas.setExtent(layers[0].extent())
    canvas.refresh()


QTimer.singleShot(500, drive)
'''


def start_xvfb() -> tuple[subprocess.Popen, str]:
    """Xvfb on a display it picks itself (-displayfd): no clash with other sessions on the machine."""
    read, write = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    assert number, "Xvfb did not report its display"
    return xvfb, f":{number}"


def stop(process: subprocess.Popen, group: bool = False) -> None:
    """Terminate (then kill) a process we started; ``group``: its whole session (QGIS and its children)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM) if group else process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL) if group else process.kill()
            process.wait()


def test_rps_dock_in_the_real_desktop(tmp_path):
    profiles = qgis_plugin.make_profile(tmp_path / "qgis")
    project = qgis_plugin.sample_project(tmp_path / "sample")
    result = tmp_path / "result.json"
    script = tmp_path / "drive.py"
    script.write_text(DRIVE.format(result=str(result), points=str(tmp_path / "sample" / "rps" / "points.csv")))
    OUTPUT.mkdir(exist_ok=True)
    shot = OUTPUT / "desktop_rps_dock.png"
    shot.unlink(missing_ok=True)
    xvfb, display = start_xvfb()
    env = {**os.environ, "DISPLAY": display}
    env.pop("QT_QPA_PLATFORM", None)
    log = open(tmp_path / "qgis.log", "w")  # noqa: SIM115 (closed in finally)
    qgis = subprocess.Popen(qgis_plugin.qgis_command(profiles, project, script), env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not result.exists() and time.monotonic() < deadline and qgis.poll() is None:
            time.sleep(0.5)
        assert result.exists(), (tmp_path / "qgis.log").read_text()[-3000:]
        subprocess.run(["/usr/bin/import", "-display", display, "-window", "root", str(shot)], check=True,
                       timeout=60)
    finally:
        stop(qgis, group=True)
        stop(xvfb)
        log.close()
    report = json.loads(result.read_text())
    assert report["visible"] is True
    assert report["subset"] == '"score" >= 0.62'
    assert report["kept"].startswith(f"{report['features']} of ")
    assert report["metrics"].startswith("precision ") and report["current"] is not None
    assert report["docks"] == ["dataset", "geofence", "jobs", "review", "rps", "tagging"]
    assert shot.stat().st_size > 10_000
