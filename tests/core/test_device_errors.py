"""A full, read-only or forbidden output device is told in one line with exit 2, and leaves nothing behind."""

from __future__ import annotations

import errno
import json
import subprocess

import pytest
import rasterio
from aifactory.io.atomic import public_names, temporary_sibling
from aifactory.io.oserrors import device_error
from test_predict_support import predict_scene, trained_run  # noqa: F401  (shared session fixtures)

REFUSED = ("Operation not permitted", "Permission denied")  # /sys refuses root and users in these words


@pytest.fixture()
def small_device(tmp_path):
    """A real 64 KB file system (tmpfs): writing a prediction there fills it."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"this machine does not let the tests mount a small file system: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_device_is_one_line_with_exit_2_and_nothing_left(small_device, trained_run, predict_scene, cli):  # noqa: F811
    raster, _ = predict_scene
    out = small_device / "out"
    done = cli("predict", "--model", str(trained_run), "--raster", str(raster), "-o", str(out), "--events", "jsonl")
    assert done.returncode == 2, done.stderr
    message = f"no space left on the device of {out} ("
    lines = done.stderr.splitlines()  # GDAL's and libtiff's own lines are held back (native_messages)
    assert len(lines) == 1 and lines[0].startswith(f"aifactory: error: {message}"), done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[-2]["event"] == "error" and events[-2]["message"].startswith(message)
    assert events[-1] == {"event": "done", "status": "failed"}
    assert sorted(path.name for path in out.iterdir()) == []


def test_a_folder_the_system_refuses_is_one_line_with_exit_2(trained_run, predict_scene, cli):  # noqa: F811
    raster, _ = predict_scene
    done = cli("predict", "--model", str(trained_run), "--raster", str(raster), "-o", "/sys/aifactory-out",
               "--events", "none")
    assert done.returncode == 2
    assert done.stderr.strip() in {f"aifactory: error: {reason}: /sys/aifactory-out" for reason in REFUSED}


def test_the_cause_is_found_inside_a_librarys_error_and_names_the_output_not_its_temporary(tmp_path):
    with pytest.raises(rasterio.errors.RasterioIOError) as raised:
        rasterio.open(temporary_sibling("/sys/scores.tif", "stream"), "w", driver="GTiff", width=2, height=2,
                      count=1, dtype="uint8")
    error = device_error(raised.value)
    assert error is not None and "/sys/scores.tif" in str(error) and "/sys/." not in str(error)
    assert any(reason in str(error) for reason in REFUSED)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "a.tif"))
        except OSError as cause:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed") from cause
    except RuntimeError as wrapped:
        assert str(device_error(wrapped)) == f"No space left on device: {tmp_path / 'a.tif'}"
    assert device_error(ValueError("a bug")) is None  # anything else keeps its traceback
    assert public_names(f"'{tmp_path}/.my.scores.0a7c9c-1-2-9fde64bb.final.tif'") == f"'{tmp_path}/my.scores.tif'"
