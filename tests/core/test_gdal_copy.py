"""A GDAL conversion reports its progress and stops on Ctrl-C or SIGTERM, leaving nothing, at any stage."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
import rasterio
import rasterio.shutil
from aifactory.io.gdal_copy import copy_raster
from aifactory.io.synthetic import SceneSpec, generate_scene
from aifactory.progress import CallbackReporter, use_reporter

OPTIONS = {"COMPRESS": "ZSTD", "BLOCKSIZE": 256, "OVERVIEWS": "AUTO", "OVERVIEW_RESAMPLING": "AVERAGE"}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("gdal-copy") / "scene.tif"
    generate_scene(SceneSpec(width=3000, height=2000, seed=3), path)
    return path


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_copy_is_rasterios_to_the_byte_and_reports_its_progress(scene, tmp_path):
    events = []
    with use_reporter(CallbackReporter(events.append)):
        copy_raster(scene, tmp_path / "ours.tif", "COG", OPTIONS, task="convert")
    rasterio.shutil.copy(scene, tmp_path / "rasterio.tif", driver="COG", **OPTIONS)
    assert _digest(tmp_path / "ours.tif") == _digest(tmp_path / "rasterio.tif")
    values = [e["value"] for e in events if e["event"] == "progress" and e["task"] == "convert"]
    assert len(values) > 10 and values == sorted(values) and values[-1] == 1.0
    assert {e["message"] for e in events} == {"ours.tif"}


def test_a_stop_during_the_copy_stops_gdal_and_leaves_nothing(scene, tmp_path):
    events = []

    def stop_at_a_third(event):
        events.append(event)
        if event["value"] > 0.33 and sum(e["value"] > 0.33 for e in events) == 1:  # once
            os.kill(os.getpid(), signal.SIGINT)

    with use_reporter(CallbackReporter(stop_at_a_third)), pytest.raises(KeyboardInterrupt):
        copy_raster(scene, tmp_path / "out.tif", "COG", OPTIONS)
    assert max(e["value"] for e in events) < 1.0  # GDAL stopped where it was
    assert sorted(os.listdir(tmp_path)) == []  # and removed what it had written
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_a_terminated_command_stops_inside_the_conversion(tmp_path):
    """The CLI's SIGTERM handling reaches into the conversion: exit 143, `done: stopped`, the folder empty,
    and the conversion never got to its end (it used to run to completion first)."""
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-m", "aifactory.cli", "synth", "-o", str(out / "scene.tif"),
                              "--size", "6000x6000", "--bands", "3", "--events", "jsonl"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    try:
        for line in child.stdout:
            event = json.loads(line)
            if event["event"] == "progress" and event["task"] == "convert":
                child.send_signal(signal.SIGTERM)
                break
        rest, errors = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    events = [json.loads(line) for line in rest.splitlines()]
    assert child.returncode == 143, errors
    assert events[-1] == {"event": "done", "status": "stopped"}
    assert all(e["value"] < 1.0 for e in events if e["event"] == "progress" and e["task"] == "convert")
    assert sorted(os.listdir(out)) == []
