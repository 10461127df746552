"""``aifactory train`` as the plugin and the orchestrator run it: JSON-lines events, and ``--ref`` training
the code of a git commit from a worktree, recorded in the manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_training_support import make_dataset, write_config

REPO = Path(__file__).resolve().parents[2]


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture()
def head_commit() -> str:
    found = git("rev-parse", "HEAD")
    if found.returncode:
        pytest.skip("not a git checkout")
    return found.stdout.strip()


def test_ref_trains_a_worktree_of_the_commit_and_streams_events(tmp_path, cli, head_commit):
    dataset = make_dataset(tmp_path / "data", size=256)
    config = write_config(tmp_path / "train.yaml", dataset, epochs=1, max_steps=2)
    cache = tmp_path / "cache"
    tree = cache / "worktrees" / head_commit
    try:
        result = cli("train", str(config), "-o", str(tmp_path / "run"), "--ref", "HEAD", "--events", "jsonl",
                     env={"AIFACTORY_CACHE": str(cache)})
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines()]
        kinds = [e["event"] for e in events]
        assert kinds[-1] == "done" and events[-1]["status"] == "ok" and kinds.count("done") == 1
        assert any(e["event"] == "progress" and e["task"] == "train" and e["value"] == 1.0 for e in events)
        assert {e["name"] for e in events if e["event"] == "metric"} >= {"train/loss", "val/miou"}
        assert {e["kind"] for e in events if e["event"] == "artifact"} == {"model", "model_card", "report"}
        manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
        assert manifest["code"]["ref"] == "HEAD" and manifest["code"]["commit"] == head_commit
        assert Path(manifest["code"]["path"]) == tree / "core" / "aifactory"
        assert manifest["code"]["dirty"] is False
    finally:
        git("worktree", "remove", "--force", str(tree))
        git("worktree", "prune")


def test_unknown_ref_is_one_line_exit_2(tmp_path, cli, head_commit):
    config = tmp_path / "train.yaml"
    config.write_text("dataset: nowhere\n")
    result = cli("train", str(config), "-o", str(tmp_path / "run"), "--ref", "no-such-branch-xyz",
                 env={"AIFACTORY_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "aifactory: error: --ref no-such-branch-xyz: not a branch, tag or commit of " + str(REPO)]


CHILD = """
import pathlib, signal, sys, time
mark = pathlib.Path(sys.argv[1])
def stop(signum, frame):
    time.sleep(0.5)  # a clean-up that takes a moment: the parent must wait for it
    mark.write_text(signal.Signals(signum).name)
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
mark.with_suffix(".ready").touch()
time.sleep(120)
"""
PARENT = """
import os, signal, sys
from aifactory.cli import _terminate
from aifactory.errors import Terminated
from aifactory.training.worktree import run_child
signal.signal(signal.SIGTERM, _terminate)  # as the CLI's main() does
try:
    sys.exit(run_child([sys.executable, "-c", sys.argv[1], sys.argv[2]], os.environ))
except Terminated:
    sys.exit(143)
"""


def test_a_terminated_ref_run_stops_its_child_the_same_way_and_waits(tmp_path):
    """``train --ref`` runs the training in a child: a SIGTERM to the parent (the plugin's Cancel, a scheduler) is
    passed on, so the child unwinds and removes its temporaries, and the parent returns only once it has."""
    mark = tmp_path / "child.txt"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(mark)])
    try:
        deadline = time.monotonic() + 60
        while not mark.with_suffix(".ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark.with_suffix(".ready").exists(), "the child never started"
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 143
    finally:
        if parent.poll() is None:
            parent.kill()
    assert mark.read_text() == "SIGTERM"  # the child was stopped the same way, and finished before the parent


def test_a_sigterm_to_the_process_group_stops_a_training_with_loader_workers(tmp_path):
    """``timeout``, Slurm and systemd signal the whole group: the loader workers died of the same SIGTERM and
    torch's SIGCHLD handler raised "DataLoader worker … is killed by signal" in the middle of the clean-up
    (a traceback, exit 1, no ``done`` event)."""
    dataset = make_dataset(tmp_path / "data")
    config = write_config(tmp_path / "train.yaml", dataset, epochs=50, num_workers=2, log_every=1)
    process = subprocess.Popen([sys.executable, "-m", "aifactory.cli", "train", str(config), "-o",
                                str(tmp_path / "run"), "--events", "jsonl"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if '"train/loss"' in line:
                break
        os.killpg(process.pid, signal.SIGTERM)
        rest, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 143, stderr[-2000:]
    assert json.loads(rest.strip().splitlines()[-1]) == {"event": "done", "status": "stopped"}
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "aifactory: terminated"
