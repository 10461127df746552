"""Jobs on a REAL local Ray head (token authentication on), driven through the ``aifactory`` CLI.

The head runs on this machine, so the tests can look at the worker's disk to check what the client got
back — the client itself never does: artifacts come back through the dashboard (``jobs fetch``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from aifactory.jobs.ledger import Ledger
from aifactory.jobs.service import JobClient

REPO = Path(__file__).resolve().parents[2]
PIPELINE = """name: tiny
tasks:
  scene: {task: synth, params: {width: 96, height: 64, density: 0.5}}
  check: {task: raster_info, params: {raster: "${scene.raster}"}}
"""
SLOW = "name: slow\ntasks:\n  big: {task: synth, params: {width: 16000, height: 16000, bands: 1, dtype: uint8}}\n"
TRAIN_PREDICT = REPO / "resources" / "examples" / "jobs-train-predict.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture()
def env(ray_head, tmp_path, monkeypatch):
    """Environment of a client of ``ray_head``: its address and token, a ledger of the test's own."""
    values = {**ray_head.env(), "AIFACTORY_LEDGER": str(tmp_path / "ledger" / "jobs.db"),
              "AIFACTORY_JOBS_CONFIG": str(tmp_path / "no-config.yaml"), "AIFACTORY_CACHE": str(tmp_path / "cache")}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture()
def client(env):
    with Ledger() as ledger:
        yield JobClient(ledger, env["AIFACTORY_RAY_TOKEN"])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def status(cli, job_id: str, env) -> dict:
    result = cli("jobs", "status", job_id, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(client: JobClient, job_id: str, predicate, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not predicate(job := client.refresh(job_id)):
        assert time.monotonic() < deadline, f"gave up waiting: {job}"
        time.sleep(0.3)
    return job


def worker_file(ray_head, job: dict, path: str) -> Path:
    """Where the worker (this machine, here) keeps a file of the job."""
    return Path(path.replace("~", str(ray_head.temp_dir / "home"), 1))


def test_pipeline_runs_on_ray_and_its_artifacts_come_back(cli, env, ray_head, tmp_path):
    pipeline = write(tmp_path / "p.yaml", PIPELINE)
    result = cli("submit", str(pipeline), "--runner", "ray", "--wait", "--events", "jsonl", env=env)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]  # the job's own stream, replayed
    assert events[-1] == {"event": "done", "status": "ok"}
    assert {"event": "progress", "task": "pipeline", "value": 1.0, "message": "done"} in events
    job = json.loads(cli("jobs", "list", "--json", env=env).stdout)[0]
    assert (job["status"], job["remote_status"], job["runner"], job["shared"]) == ("succeeded", "SUCCEEDED", "ray",
                                                                                 False)
    assert job["address"] == ray_head.address and job["workdir"].startswith("~/")
    assert [Path(a["path"]).name for a in job["artifacts"]] == ["scene.tif", "truth.gpkg", "info.json"]

    out = tmp_path / "fetched"
    fetched = cli("jobs", "fetch", job["id"], "-o", str(out), env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert sorted(Path(line).relative_to(out).as_posix() for line in fetched.stdout.splitlines()) == \
        ["check/info.json", "scene/scene.tif", "scene/truth.gpkg"]
    info = json.loads((out / "check" / "info.json").read_text())
    assert (info["width"], info["height"], info["crs"]) == (96, 64, "EPSG:32631") and "ref_marker" not in info
    original = Path(job["artifacts"][0]["path"])
    assert (out / "scene" / "scene.tif").read_bytes() == original.read_bytes()
    logs = cli("jobs", "logs", job["id"], "--json", env=env)
    assert json.loads(logs.stdout.splitlines()[-1]) == {"event": "done", "status": "ok"}
    raw = cli("jobs", "logs", job["id"], "--raw", env=env).stdout
    assert "Running entrypoint for job" in raw and "--events jsonl" in raw


@pytest.fixture()
def marked_branch(tmp_path, env, monkeypatch) -> str:
    """A clone of this repository with a branch holding the code as it is now, plus a marker that the
    raster_info task writes into info.json."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--shared", "--quiet", str(REPO), str(clone)], check=True)
    shutil.copytree(REPO / "core" / "aifactory", clone / "core" / "aifactory", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    tasks = clone / "core" / "aifactory" / "pipeline" / "tasks.py"
    source = tasks.read_text()
    assert "json.dumps(meta.to_dict(), indent=2)" in source
    tasks.write_text(source.replace("json.dumps(meta.to_dict(), indent=2)",
                                    'json.dumps({**meta.to_dict(), "ref_marker": "e2e"}, indent=2)'))
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "checkout", "--quiet", "-b", "e2e-marker"], check=True)
    subprocess.run([*git, "add", "core"], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "marker"], check=True)
    env["AIFACTORY_REPO"] = str(clone)
    monkeypatch.setenv("AIFACTORY_REPO", str(clone))
    return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def test_ref_runs_that_commit_locally_and_on_ray(cli, env, marked_branch, tmp_path):
    """The same ref runs locally (PYTHONPATH) and on Ray (working_dir); the Ray job also writes to a
    declared shared folder, so its files come back by plain copy."""
    pipeline = write(tmp_path / "p.yaml", PIPELINE)
    shared = tmp_path / "shared"
    for runner in ("local", "ray"):
        result = cli("submit", str(pipeline), "--runner", runner, "--ref", "e2e-marker", "--wait", "--json",
                     *(("--shared-dir", str(shared)) if runner == "ray" else ()), env=env)
        assert result.returncode == 0, result.stderr
        job = json.loads(result.stdout)
        assert (job["code_ref"], job["code_commit"], job["shared"]) == ("e2e-marker", marked_branch, True)
        out = tmp_path / f"fetched-{runner}"
        assert cli("jobs", "fetch", job["id"], "-o", str(out), env=env).returncode == 0
        assert json.loads((out / "check" / "info.json").read_text())["ref_marker"] == "e2e", runner
    assert Path(job["workdir"]) == shared / job["id"] and (shared / job["id"] / "check" / "info.json").is_file()


def test_a_job_no_node_can_run_stays_pending_with_the_reason(cli, env, tmp_path):
    pipeline = write(tmp_path / "p.yaml", PIPELINE)
    submitted = cli("submit", str(pipeline), "--runner", "ray", "--gpus", "2", "--resource", "tpu=1", env=env)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    for _ in range(2):
        job = status(cli, job_id, env)
        assert (job["status"], job["remote_status"]) == ("pending", "PENDING")
        assert "No node has GPU=2 (nodes have at most 1); tpu=1 (nodes have none)." in job["message"]
        time.sleep(2)
    stopped = cli("jobs", "stop", job_id, env=env)
    assert stopped.returncode == 0 and stopped.stdout.startswith(f"{job_id} stopped"), stopped.stderr
    assert status(cli, job_id, env)["status"] == "stopped"


def test_a_job_stopped_midway_is_marked_stopped(client, cli, env, ray_head, tmp_path):
    job = client.submit(write(tmp_path / "slow.yaml", SLOW), runner="ray")
    # stopped while it writes rows, not in the final COG conversion: one GDAL call that takes seconds on a
    # loaded machine, during which Python cannot act on the signal (Ray kills the job after STOP_GRACE_S)
    job = wait_for(client, job.id, lambda j: (done := re.match(r"synthetic (\d+)%", j.progress_text)) is not None
                   and int(done[1]) < 60)
    assert job.status == "running"
    stopped = json.loads(cli("jobs", "stop", job.id, "--json", env=env).stdout)
    assert (stopped["status"], stopped["remote_status"]) == ("stopped", "STOPPED")
    # the worker saw a Ctrl-C: its last event says so (Ray ships driver logs with a lag under load, so the
    # event may land a little after Ray reports STOPPED)
    deadline = time.monotonic() + 30
    while (last := client.events(job.id)[-1]) != {"event": "done", "status": "stopped"} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert last == {"event": "done", "status": "stopped"}
    task_dir = worker_file(ray_head, stopped, stopped["workdir"]) / "big"
    assert task_dir.is_dir() and list(task_dir.iterdir()) == []  # the partial raster was removed


def test_bad_input_is_one_line_exit_2(cli, env, ray_head, tmp_path):
    pipeline = write(tmp_path / "p.yaml", PIPELINE)
    port = ray_head.address.rsplit(":", 1)[1]
    cases = {
        "refused the token (HTTP 403)": (("--token", "wrong-token"), env),
        "wants a token (HTTP 401)": ((), {**env, "AIFACTORY_RAY_TOKEN": ""}),
        "cannot reach the Ray dashboard at http://127.0.0.1:9": (("--address", "127.0.0.1:9"), env),
        "tasks.a.params: widht: unknown key": (("--address", f"localhost:{port}"), env),
    }
    for expected, (args, case_env) in cases.items():
        target = str(pipeline)
        if "widht" in expected:
            target = str(write(tmp_path / "bad.yaml", "tasks:\n  a: {task: synth, params: {widht: 3}}\n"))
        result = cli("submit", target, "--runner", "ray", *args, env=case_env)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], result.stderr
    # a relative path is looked for in the job's package folder on the worker: the error says so, in the
    # submitter's terms (it named Ray's package folder and "pipeline.yaml")
    relative = write(tmp_path / "relative.yaml", "tasks:\n  info: {task: raster_info, params: {raster: d/x.tif}}\n")
    result = cli("submit", str(relative), "--runner", "ray", "--wait", env=env)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].endswith(
        f"failed: {relative}: tasks.info.params.raster: d/x.tif: raster not found (a Ray job takes relative paths "
        "inside its package folder on the worker: give paths as the worker sees them, absolute)"), result.stderr
    for command in (("status", "aif-unknown"), ("stop", "aif-unknown"), ("fetch", "aif-unknown", "-o", "x")):
        result = cli("jobs", *command, env=env)
        assert result.returncode == 2 and "'aif-unknown' is not in the ledger" in result.stderr
    assert [job["status"] for job in json.loads(cli("jobs", "list", "--json", env=env).stdout)] == ["failed"]


def test_head_killed_midway_leaves_the_job_failed(cli, env, doomed_ray_head, tmp_path):
    doomed = {**env, **doomed_ray_head.env()}
    submitted = cli("submit", str(write(tmp_path / "slow.yaml", SLOW)), "--runner", "ray", env=doomed)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    deadline = time.monotonic() + 120
    while status(cli, job_id, doomed)["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    doomed_ray_head.stop(kill=True)  # the head dies mid-job
    job = status(cli, job_id, doomed)
    assert job["status"] == "failed" and not job["settled"]
    assert job["message"].startswith(f"cannot reach the Ray dashboard at {doomed_ray_head.address}")
    assert job["message"].endswith("the job's fate is unknown")
    listed = json.loads(cli("jobs", "list", "--json", env=doomed).stdout)
    assert [(j["id"], j["status"]) for j in listed] == [(job_id, "failed")]


def test_train_predict_pipeline_on_ray(cli, env, ray_head, tmp_path):
    from aifactory.pipeline import TASKS

    missing = {"dataset_build", "train", "predict"} - set(TASKS.names())
    if missing:
        pytest.skip(f"pipeline tasks not registered yet: {sorted(missing)}")
    # the example, plus the same prediction fanned out to 2 Ray tasks of the same cluster
    pipeline = yaml.safe_load(TRAIN_PREDICT.read_text())
    pipeline["tasks"]["predict_fanout"] = {"task": "predict", "params": {
        **pipeline["tasks"]["predict"]["params"], "workers": 2, "worker_cpus": 0.5}}
    path = write(tmp_path / "train-predict.yaml", yaml.safe_dump(pipeline))
    result = cli("submit", str(path), "--runner", "ray", "--gpus", "1", "--wait", "--json", env=env)
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded"
    out = tmp_path / "fetched"
    assert cli("jobs", "fetch", job["id"], "-o", str(out), "--all", env=env).returncode == 0
    import geopandas as gpd
    from aifactory.io.raster import raster_info

    scores = raster_info(out / "predict" / "scores.tif")
    assert (scores.width, scores.height, scores.dtypes[0]) == (256, 256, "uint8")
    detections = gpd.read_file(out / "predict" / "detections.gpkg", layer="detections")
    assert {"class", "score", "review"} <= set(detections.columns)
    assert (out / "train" / "run" / "model.pt").is_file() and (out / "train" / "run" / "model.json").is_file()
    # fan-out: the same scores, pixel for pixel, and the same detections as one process
    import numpy as np
    import rasterio
    import shapely

    with rasterio.open(out / "predict" / "scores.tif") as one, \
            rasterio.open(out / "predict_fanout" / "scores.tif") as two:
        np.testing.assert_array_equal(two.read(), one.read())
        np.testing.assert_array_equal(two.dataset_mask(), one.dataset_mask())
    fanned = gpd.read_file(out / "predict_fanout" / "detections.gpkg", layer="detections")
    assert len(fanned) == len(detections)
    assert sorted(shapely.to_wkt(shapely.normalize(fanned.geometry.array))) == \
        sorted(shapely.to_wkt(shapely.normalize(detections.geometry.array)))
    summary = json.loads((out / "predict_fanout" / "prediction.json").read_text())
    assert summary["workers"] == 2 and summary["device"] == "cpu" and summary["precision"] in ("fp32", "bf16")
    single = json.loads((out / "predict" / "prediction.json").read_text())
    assert summary["tiles_predicted"] == single["tiles_predicted"]
