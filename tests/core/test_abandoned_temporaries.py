"""A temporary left by a killed process is removed by the next write of the same output, and nothing else is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from aifactory.io import owner
from aifactory.io.atomic import remove_abandoned_temporaries, temporary_sibling, write_text_atomic

LEAVE_A_TEMPORARY = """
import os, signal, sys
from aifactory.io.atomic import temporary_sibling
tmp = temporary_sibling(sys.argv[1], "stream")
tmp.write_bytes(b"half a raster")
tmp.with_name(tmp.name + ".aux.xml").write_text("<PAMDataset/>")
print(tmp, flush=True)
if sys.argv[2] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()
"""


def _leave_a_temporary(final, how):
    child = subprocess.Popen([sys.executable, "-c", LEAVE_A_TEMPORARY, str(final), how], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    return child, child.stdout.readline().strip()


def test_the_next_write_of_an_output_removes_what_a_killed_writer_left(tmp_path):
    final = tmp_path / "scores.tif"
    child, left = _leave_a_temporary(final, "die")
    assert child.wait(timeout=30) == -9
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([os.path.basename(left),
                                                                 os.path.basename(left) + ".aux.xml"])
    fresh = temporary_sibling(final)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert fresh.name.startswith(".scores.") and fresh.suffix == ".tif"


def test_a_running_writers_temporary_is_kept_until_it_is_gone(tmp_path):
    final = tmp_path / "detections.gpkg"
    child, left = _leave_a_temporary(final, "wait")
    try:
        write_text_atomic(final, "other content")
        assert os.path.exists(left), "the temporary of a live process was removed"
    finally:
        child.kill()
        child.wait(timeout=30)
    assert remove_abandoned_temporaries(final) == [tmp_path / os.path.basename(left),
                                                   tmp_path / (os.path.basename(left) + ".aux.xml")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detections.gpkg"]


def test_only_provably_abandoned_temporaries_of_the_same_output_are_removed(tmp_path):
    pid = os.getpid()
    here, elsewhere = owner._HOST, "ffffff" if owner._HOST != "ffffff" else "000000"
    start = int(owner.owner_token().split("-")[2])
    kept = [
        f".scores.{here}-{pid}-{start}-0123abcd.stream.tif",  # this very process
        f".scores.{elsewhere}-999999999-1-0123abcd.stream.tif",  # another host: its PIDs mean nothing here
        ".scores.0123abcd.stream.tif",  # the name before owners were recorded: nothing tells its owner
        f".scores.v2.{here}-999999999-1-0123abcd.stream.tif",  # another output
        f".scores.{here}-999999999-1-0123abcd.stream.gpkg",  # another output
        ".hidden-notes.txt",
    ]
    removed = [
        f".scores.{here}-999999999-1-0123abcd.stream.tif",  # no such process
        f".scores.{here}-999999999-1-0123abcd.stream.tif.aux.xml",
        f".scores.{here}-{pid}-{start + 1}-0123abcd.final.tif",  # this PID, reused: another start time
    ]
    for name in kept + removed:
        (tmp_path / name).write_text("x")
    (tmp_path / f".scores.{here}-999999998-1-0123abcd.part.tif").mkdir()
    (tmp_path / f".scores.{here}-999999998-1-0123abcd.part.tif" / "inside").write_text("x")
    remove_abandoned_temporaries(tmp_path / "scores.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    assert remove_abandoned_temporaries(tmp_path / "missing-folder" / "scores.tif") == []


def test_a_temporary_from_another_pid_namespace_is_never_judged(tmp_path):
    """A container sharing this host's name and a folder has PIDs of its own: its temporaries are not this host's
    to judge (its PID 1 exists here too, as another process, started at another time)."""
    final = tmp_path / "scores.tif"
    unshare = shutil.which("unshare")
    in_a_new_namespace = [unshare or "unshare", "--pid", "--fork", "--mount-proc"]
    if unshare is None or subprocess.run([*in_a_new_namespace, "true"], capture_output=True).returncode:
        pytest.skip("this machine does not let the tests start a process in a new PID namespace")
    child = subprocess.run([*in_a_new_namespace, sys.executable, "-c", LEAVE_A_TEMPORARY, str(final), "die"],
                           capture_output=True, text=True, timeout=60)
    left = tmp_path / os.path.basename(child.stdout.strip())
    assert left.name.startswith(".scores.") and left.exists()
    assert remove_abandoned_temporaries(final) == []
    assert left.exists()
