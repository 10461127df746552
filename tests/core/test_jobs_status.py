"""Status mapping, event streams, resource requests, Ray packages and the worker-side packer."""

from __future__ import annotations

import json
import zipfile

import pytest
from aifactory.errors import ConfigError
from aifactory.jobs import pack
from aifactory.jobs.events import parse_events, render, summarize
from aifactory.jobs.ray import build_package, map_status
from aifactory.jobs.resources import GIB, Resources, parse_resource, unsatisfiable

RAY_LOG = """2026-11-28 15:46:07,250\tINFO job_manager.py:581 -- Runtime env is setting up.
Running entrypoint for job aif-1: python -m aifactory.cli run pipeline.yaml --events jsonl -o w
{"event": "progress", "task": "pipeline", "value": 0.0, "message": "scene (synth)"}
{"event": "progress", "task": "synthetic", "value": 0.5, "message": "200x160"}
Traceback-looking stderr line that is not an event
{"not": "an event"}
{"event": "artifact", "kind": "scene", "path": "/w/scene/scene.tif"}
{"event": "artifact", "kind": "scene", "path": "/w/scene/scene.tif"}
{"event": "metric", "name": "loss", "value": 0.25, "step": 3}
{"event": "progress", "task": "pipeline", "value": 0.5, "message": "check (raster_info)"}
{"event": "error", "message": "p.yaml: tasks.check.params: raster: not found"}
{"event": "done", "status": "failed"}
{"event": "progress", "task": "pipel
"""


@pytest.mark.parametrize("ray_status, ours", [("PENDING", "pending"), ("RUNNING", "running"),
                                               ("SUCCEEDED", "succeeded"), ("FAILED", "failed"),
                                               ("STOPPED", "stopped"), ("SOMETHING_NEW", "failed")])
def test_ray_status_mapping(ray_status, ours):
    assert map_status(ray_status) == ours


def test_events_among_other_lines():
    events = parse_events(RAY_LOG.splitlines())
    assert [e["event"] for e in events] == ["progress", "progress", "artifact", "artifact", "metric", "progress",
                                            "error", "done"]
    summary = summarize(events)
    assert summary.progress == 0.5 and summary.progress_text == "pipeline 50% check (raster_info)"
    assert summary.artifacts == [{"kind": "scene", "path": "/w/scene/scene.tif"}]
    assert summary.outcome == "failed" and summary.error.endswith("raster: not found")
    assert render(events[4]) == "metric    loss = 0.25 (step 3)"
    assert summarize(parse_events(['{"event": "done", "status": "stopped"}'])).outcome == "stopped"
    assert summarize([]).outcome is None


def test_resources_for_ray():
    resources = Resources(gpus=1, cpus=4, memory_gb=8, custom={"a100": 1})
    assert resources.ray_fields() == {"entrypoint_num_gpus": 1, "entrypoint_num_cpus": 4,
                                      "entrypoint_memory": 8 * GIB, "entrypoint_resources": {"a100": 1}}
    assert Resources().ray_fields() == {}
    assert parse_resource("a100=1") == ("a100", 1.0) and parse_resource("node:10.0.0.2=0.01")[1] == 0.01
    for bad in ("a100", "a100=0", "a100=x", "=1", "GPU=1", "a b=1"):
        with pytest.raises(ConfigError, match="--resource"):
            parse_resource(bad)


def test_why_a_job_stays_pending():
    head = {"CPU": 2.0, "GPU": 1.0, "memory": 16 * GIB, "node:127.0.0.1": 1.0}
    gpu_node = {"CPU": 8.0, "GPU": 4.0, "memory": 64 * GIB, "a100": 1.0}
    assert unsatisfiable(Resources(gpus=1).demand(), [head]) is None
    assert unsatisfiable(Resources(gpus=2).demand(), [head]) == "no node has GPU=2 (nodes have at most 1)"
    assert unsatisfiable(Resources(custom={"tpu": 1}).demand(), [head, gpu_node]) == \
        "no node has tpu=1 (nodes have none)"
    assert unsatisfiable(Resources(memory_gb=100).demand(), [head]) == \
        "no node has memory=100 GiB (nodes have at most 16 GiB)"
    # each resource exists somewhere, but never together
    assert unsatisfiable(Resources(cpus=8, custom={"node:127.0.0.1": 1}).demand(), [head, gpu_node]) \
        .startswith("no single node has all of")
    assert unsatisfiable({"GPU": 1}, []) == "the cluster has no live node"


def test_packages_are_content_addressed():
    name, data = build_package({"pipeline.yaml": b"a: 1\n", "aifactory/__init__.py": b""})
    again, same = build_package({"aifactory/__init__.py": b"", "pipeline.yaml": b"a: 1\n"})
    other, _ = build_package({"pipeline.yaml": b"a: 2\n", "aifactory/__init__.py": b""})
    assert (name, data) == (again, same) and other != name
    assert name.startswith("_ray_pkg_") and name.endswith(".zip")


def test_packer_zips_only_files_of_the_workdir(tmp_path):
    workdir, logs = tmp_path / "home" / "run", tmp_path / "logs"
    (workdir / "scene").mkdir(parents=True)
    logs.mkdir()
    (workdir / "scene" / "scene.tif").write_bytes(b"II*\x00" + bytes(1000))
    (workdir / "check.json").write_text("{}")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not ship")
    request = {"name": "aif-1-abc", "workdir": str(workdir),
               "paths": [str(workdir / "scene" / "scene.tif"), "check.json", str(secret), "../secret.txt",
                         str(workdir / "missing.tif")]}
    result = pack.pack(request, logs)
    assert result["file"] == "aifactory-fetch/aif-1-abc.zip" and result["files"] == 2
    assert result["skipped"] == [str(secret), "../secret.txt", str(workdir / "missing.tif")]
    with zipfile.ZipFile(logs / result["file"]) as archive:
        assert sorted(archive.namelist()) == ["check.json", "scene/scene.tif"]
    everything = pack.pack({**request, "name": "all", "paths": None}, logs)
    assert everything["files"] == 2 and json.dumps(everything)
    with pytest.raises(SystemExit, match="invalid name"):
        pack.pack({**request, "name": "../x"}, logs)
    with pytest.raises(SystemExit, match="not a Ray job driver log"):
        pack.ray_log_dir()  # pytest's stdout is not a Ray driver log


def test_unreachable_cluster_fails_the_job_but_not_for_good(tmp_path):
    """Nothing listens at the address: the job is failed with the reason, not settled (a later refresh
    that reaches the head may correct it), and --wait gives the head a grace period first."""
    import socket
    import time

    from aifactory.jobs.ledger import JobRecord, Ledger
    from aifactory.jobs.service import JobClient

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with Ledger(tmp_path / "jobs.db") as ledger:
        ledger.add(JobRecord(id="aif-gone", runner="ray", address=address, pipeline_path="p", pipeline_text="",
                             workdir="~/w", status="running"))
        client = JobClient(ledger)
        job = client.refresh("aif-gone")
        assert job.status == "failed" and not job.settled and job.finished
        assert job.message == f"cannot reach the Ray dashboard at {address}: [Errno 111] Connection refused; " \
                              "the job's fate is unknown"
        start = time.monotonic()
        job = client.wait("aif-gone", interval=0.1, unreachable_grace=0.5)
        assert job.status == "failed" and time.monotonic() - start >= 0.5


def test_job_examples_validate():
    from pathlib import Path

    from aifactory.config import load_config
    from aifactory.jobs.security import JobsConfig
    from aifactory.pipeline.spec import load_pipeline

    examples = Path(__file__).resolve().parents[2] / "resources" / "examples"
    pipelines = sorted(examples.glob("jobs-*.yaml"))
    assert len(pipelines) >= 3
    for path in pipelines:
        if path.name == "jobs-config.yaml":
            assert load_config(path, JobsConfig).ray.address
        else:
            assert load_pipeline(path).order
