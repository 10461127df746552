"""The local runner with real detached worker processes, followed through the ledger by new clients."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from aifactory.jobs.ledger import JobRecord, Ledger
from aifactory.jobs.local import LocalRunner
from aifactory.jobs.service import JobClient

PIPELINE = """name: tiny
tasks:
  scene: {task: synth, params: {width: 64, height: 48, density: 0.5}}
  check: {task: raster_info, params: {raster: "${scene.raster}"}}
"""
SLOW = "name: slow\ntasks:\n  big: {task: synth, params: {width: 16000, height: 16000, bands: 1, dtype: uint8}}\n"


@pytest.fixture()
def env(tmp_path):
    return {"AIFACTORY_LEDGER": str(tmp_path / "ledger" / "jobs.db")}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def wait_for(client: JobClient, job_id: str, predicate, timeout: float = 120.0) -> JobRecord:
    deadline = time.monotonic() + timeout
    while not predicate(job := client.refresh(job_id)):
        assert time.monotonic() < deadline, f"gave up waiting: {job}"
        time.sleep(0.2)
    return job


def test_submit_wait_replays_the_job_events_and_fetch_copies_artifacts(cli, tmp_path, env):
    pipeline = write(tmp_path / "p.yaml", PIPELINE)
    result = cli("submit", str(pipeline), "--wait", "--events", "jsonl", env=env)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]  # nothing but events on stdout
    assert events[-1] == {"event": "done", "status": "ok"}
    assert {"event": "progress", "task": "pipeline", "value": 1.0, "message": "done"} in events
    job = json.loads(cli("jobs", "list", "--json", env=env).stdout)[0]
    assert job["status"] == "succeeded" and job["settled"] and job["progress"] == 1.0
    assert job["code_ref"] and job["code_commit"] and job["finished"] >= job["started"] >= job["created"]
    assert [Path(a["path"]).name for a in job["artifacts"]] == ["scene.tif", "truth.gpkg", "info.json"]
    logs = cli("jobs", "logs", job["id"], "--json", env=env)
    assert json.loads(logs.stdout.splitlines()[-1]) == {"event": "done", "status": "ok"}
    out = tmp_path / "fetched"
    fetched = cli("jobs", "fetch", job["id"], "-o", str(out), env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads((out / "check" / "info.json").read_text())["width"] == 64
    assert (out / "scene" / "scene.tif").stat().st_size == Path(job["artifacts"][0]["path"]).stat().st_size
    blocked = tmp_path / "blocked"  # a file where one of the job's folders goes: refused before any copy
    blocked.mkdir()
    (blocked / "check").write_text("mine\n")
    refused = cli("jobs", "fetch", job["id"], "-o", str(blocked), env=env)
    assert refused.returncode == 2 and refused.stderr.splitlines() == [
        f"aifactory: error: {blocked / 'check' / 'info.json'}: {blocked / 'check'} is a file, not a folder"]
    assert sorted(p.name for p in blocked.iterdir()) == ["check"]


def test_failed_job_gives_its_reason_and_exit_1(cli, tmp_path, env):
    pipeline = write(tmp_path / "p.yaml", "tasks:\n  gate: {task: raster_info, params: {raster: nowhere.tif}}\n")
    result = cli("submit", str(pipeline), "--wait", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("nowhere.tif: raster not found")
    assert " failed: " in result.stderr.strip().splitlines()[-1]
    status = json.loads(cli("jobs", "status", "aif-", "--json", env=env).stdout)
    assert status["status"] == "failed" and "nowhere.tif" in status["message"]


def test_client_exits_and_a_new_one_stops_the_job(cli, tmp_path, env, monkeypatch):
    pipeline = write(tmp_path / "slow.yaml", SLOW)
    submitted = cli("submit", str(pipeline), env=env)  # returns at once; the job keeps running
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    monkeypatch.setenv("AIFACTORY_LEDGER", env["AIFACTORY_LEDGER"])
    with Ledger() as ledger:
        client = JobClient(ledger)
        job = wait_for(client, job_id, lambda j: j.progress_text.startswith("synthetic"))
        assert job.status == "running" and job.pid
    stopped = cli("jobs", "stop", job_id, "--json", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["status"] == "stopped"
    workdir = Path(job.workdir)
    events = cli("jobs", "logs", job_id, "--json", env=env).stdout.splitlines()
    assert json.loads(events[-1]) == {"event": "done", "status": "stopped"}
    assert sorted(p.name for p in (workdir / "big").iterdir()) == []  # no partial raster left behind


def test_dead_process_without_done_is_failed(tmp_path):
    with Ledger(tmp_path / "jobs.db") as ledger:
        client = JobClient(ledger)
        job = client.submit(write(tmp_path / "slow.yaml", SLOW))
        job = wait_for(client, job.id, lambda j: j.progress_text.startswith("synthetic"))
        os.killpg(job.pid, signal.SIGKILL)  # what the OOM killer does
        job = wait_for(client, job.id, lambda j: j.status != "running", timeout=30)
        assert job.status == "failed" and job.settled
        assert job.message.startswith("the worker process ended without a done event")


def test_a_recycled_pid_is_not_the_job(tmp_path):
    """A PID that now belongs to another process (here: the test itself) is not taken for the job."""
    runner = LocalRunner(tmp_path)
    job = JobRecord(id="aif-old", runner="local", address="local", pipeline_path="p", pipeline_text="",
                    workdir=str(tmp_path), status="running", pid=os.getpid(), extra={"pid_created": 1.0})
    poll = runner.poll(job)
    assert poll.status == "failed" and poll.settled
    runner.stop(job)  # must not signal the process that has the PID now


def test_bad_input_is_one_line_and_leaves_no_record(cli, tmp_path, env):
    bad = write(tmp_path / "bad.yaml", "tasks:\n  a: {task: synth, params: {widht: 3}}\n")
    for args in (("submit", str(bad)), ("jobs", "status", "aif-missing"), ("jobs", "logs", "../x"),
                 ("submit", str(tmp_path / "absent.yaml"))):
        result = cli(*args, env=env)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert cli("jobs", "list", "--json", env=env).stdout.strip() == "[]"
