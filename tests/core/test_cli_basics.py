from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from aifactory.io import GDAL_CACHE_MB
from aifactory.io.bundled_libs import bundled_library
from PIL import Image


def test_version(cli):
    result = cli("--version")
    assert result.returncode == 0 and "aifactory, version" in result.stdout


def test_info_geotiff_json(cli, small_scene):
    result = cli("info", str(small_scene[0]), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["crs"] == "EPSG:32631" and data["count"] == 4 and data["dtypes"] == ["uint16"] * 4


def test_info_png_pixel_space(cli, tmp_path):
    path = tmp_path / "drone.png"
    Image.fromarray(np.zeros((20, 30, 3), "uint8")).save(path)
    result = cli("info", str(path))
    assert result.returncode == 0, result.stderr
    assert "pixel space" in result.stdout


def test_info_rejects_bad_files_with_exit_2(cli, tmp_path):
    missing = tmp_path / "missing.tif"
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    text = tmp_path / "text.tif"
    text.write_text("hello")
    for path in (missing, empty, text):
        result = cli("info", str(path))
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0]


def test_synth_events_are_pure_jsonl(cli, tmp_path):
    result = cli("synth", "-o", str(tmp_path / "s.tif"), "--size", "300x200", "--events", "jsonl")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1] == {"event": "done", "status": "ok"}
    progress = [e["value"] for e in events if e["event"] == "progress"]
    assert progress[0] == 0.0 and progress[-1] == 1.0


# a command, then the block cache GDAL gave the process: GDAL's own default is 5 % of the RAM, which a command
# reading a large raster filled with decoded blocks (catalog build 235 → 738 MB from 2048² to 8192²)
CACHE_AFTER_A_COMMAND = """
import sys
from aifactory.cli import main
from aifactory.io.bundled_libs import bundled_library
import ctypes
assert main(["info", sys.argv[1]]) == 0
gdal = bundled_library("libgdal")
gdal.GDALGetCacheMax64.restype = ctypes.c_int64
print(gdal.GDALGetCacheMax64() >> 20)
"""


@pytest.mark.skipif(bundled_library("libgdal") is None, reason="rasterio runs on its own GDAL build")
@pytest.mark.parametrize(("chosen", "megabytes"), [(None, GDAL_CACHE_MB), ("32", 32)])
def test_the_command_bounds_gdal_block_cache_unless_the_user_chose(small_scene, chosen, megabytes):
    env = {key: value for key, value in os.environ.items() if key != "GDAL_CACHEMAX"}
    if chosen is not None:
        env["GDAL_CACHEMAX"] = chosen
    done = subprocess.run([sys.executable, "-c", CACHE_AFTER_A_COMMAND, str(small_scene[0])], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip().splitlines()[-1]) == megabytes
