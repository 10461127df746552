from __future__ import annotations

import json

import numpy as np
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
