"""Jobs: a real local worker drives the Jobs dock; failures become failed jobs with a message; Ray REST client."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from plugin_helpers import wait_for
from qgis.core import Qgis, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt


def synth_spec(tmp_path: Path, size: str = "256x256", **kwargs):
    from aifactory_qgis import worker
    from aifactory_qgis.jobs.spec import JobSpec

    out = tmp_path / "synth.tif"
    return JobSpec(kind="synth", title="synthetic scene", args=worker.synth(str(out), size=size), cwd=str(tmp_path),
                   outputs=[str(out)], **kwargs)


def test_local_job_updates_progress_widgets_and_loads_output(qgis_app, qgis_iface, qgis_new_project, plugin,
                                                            tmp_path):
    dock = plugin.docks["jobs"]
    seen: list[int] = []
    job = plugin.manager.submit(synth_spec(tmp_path))
    job.reported.connect(lambda event: seen.append(dock.progress.value()) if event["event"] == "progress" else None)
    assert dock.job is job and dock.cancel_button.isEnabled()
    assert wait_for(qgis_app, lambda: job.done, 120), job.log
    assert job.status == "ok", job.message
    assert dock.progress.value() == 100
    assert seen and max(seen) == 100  # the bar moved with the worker's progress events
    assert not dock.cancel_button.isEnabled()
    assert "synth" in dock.log.toPlainText() or "$" in "\n".join(job.log)
    loaded = [layer for layer in QgsProject.instance().mapLayers().values() if isinstance(layer, QgsRasterLayer)]
    assert [Path(layer.source()).name for layer in loaded] == ["synth.tif"]
    record = plugin.manager.history.get(job.spec.id)
    assert record.status == "ok" and record.finished
    assert dock.history.count() >= 1 and "synthetic scene" in dock.history.item(0).text()
    assert qgis_iface.messageBar().get_messages(Qgis.Success)


def test_worker_user_error_is_a_failed_job_with_its_message(qgis_app, qgis_iface, plugin, tmp_path):
    from aifactory_qgis.jobs.spec import JobSpec

    spec = JobSpec(kind="synth", title="bad size", args=["synth", "-o", str(tmp_path / "x.tif"), "--size", "12by4",
                                                         "--events", "jsonl"], cwd=str(tmp_path))
    job = plugin.manager.submit(spec)
    assert wait_for(qgis_app, lambda: job.done, 60)
    assert job.status == "failed"
    assert "--size" in job.message
    assert any("--size" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))
    assert not (tmp_path / "x.tif").exists()


@pytest.mark.parametrize("python, expected", [("", "No worker Python is set"),
                                              ("/nonexistent/bin/python", "does not exist"),
                                              ("/usr/bin/python3", "cannot run aifactory")])
def test_bad_worker_interpreter_says_what_to_fix(qgis_app, qgis_iface, plugin, tmp_path, python, expected):
    from aifactory_qgis.jobs.runners import VERIFIED_PYTHONS

    plugin.manager.settings.set_worker_python(python)
    VERIFIED_PYTHONS.discard(python)
    if not python:  # the checkout default would apply: make the checkout look packaged
        plugin.manager.settings.worker_python = lambda: ""
    job = plugin.manager.submit(synth_spec(tmp_path))
    assert wait_for(qgis_app, lambda: job.done, 60)
    assert job.status == "failed"
    assert expected in job.message
    assert any(expected in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))


def test_cancel_stops_the_worker(qgis_app, plugin, tmp_path):
    job = plugin.manager.submit(synth_spec(tmp_path, size="6000x6000"))
    assert wait_for(qgis_app, lambda: job.state.value > 0 or job.done, 120)
    plugin.docks["jobs"].cancel_button.click()
    assert wait_for(qgis_app, lambda: job.done, 30)
    assert job.status == "stopped" and job.state.status == "stopped"  # the worker itself said it stopped
    assert not job.message  # neither "failed" nor "crashed": it did what it was asked
    assert job.process.state() == 0  # QProcess.NotRunning
    assert not (tmp_path / "synth.tif").exists()  # atomic: nothing half-written
    assert not list(tmp_path.glob(".synth*"))  # a stopped worker removes its temporary files too


class FakeRay(BaseHTTPRequestHandler):
    """Answers like Ray's Jobs REST API (a remote GPU cluster cannot run here); records what it receives."""

    submitted: ClassVar[list[dict]] = []
    headers_seen: ClassVar[list[str]] = []
    agents: ClassVar[list[str]] = []
    polls = 0
    stopped = False
    FINAL = "SUCCEEDED"  # the status once every log line is out
    MESSAGE = ""  # Ray's status message then
    LOGS: ClassVar[list[str]] = ['{"event": "progress", "task": "predict", "value": 0.5, "message": "tile 2/4"}',
            "some library chatter",
            '{"event": "metric", "name": "tiles_per_s", "value": 3.5, "step": 1}',
            '{"event": "progress", "task": "predict", "value": 1.0, "message": "tile 4/4"}',
            '{"event": "done", "status": "ok"}']

    def log_message(self, *args) -> None:
        pass

    def _answer(self, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        payload = json.loads(self.rfile.read(length) or b"{}")
        FakeRay.headers_seen.append(self.headers.get("Authorization", ""))
        FakeRay.agents.append(self.headers.get("User-Agent", ""))
        if self.path == "/api/jobs/":
            FakeRay.submitted.append(payload)
            self._answer({"job_id": "raysubmit_1", "submission_id": "raysubmit_1"})
        elif self.path.endswith("/stop"):
            FakeRay.stopped = True
            self._answer({"stopped": True})

    def do_GET(self) -> None:
        FakeRay.polls += 1
        shown = min(len(self.LOGS), FakeRay.polls)
        if self.path.endswith("/logs"):
            self._answer({"logs": "\n".join(self.LOGS[:shown]) + "\n"})
        else:
            status = "STOPPED" if FakeRay.stopped else (self.FINAL if shown == len(self.LOGS) else "RUNNING")
            self._answer({"status": status, "message": self.MESSAGE if status == self.FINAL else ""})


@pytest.fixture()
def fake_ray():
    FakeRay.submitted, FakeRay.headers_seen, FakeRay.agents, FakeRay.polls, FakeRay.stopped = [], [], [], 0, False
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_ray_job_submits_the_same_command_and_follows_logs(qgis_app, plugin, fake_ray, tmp_path, monkeypatch):
    from aifactory_qgis.jobs import runners

    monkeypatch.setattr(runners, "POLL_MS", 20)
    job = runners.RayJob(synth_spec(tmp_path, runner="gpu", gpus=1, code_ref="v1.2"), fake_ray, token="tok-1")
    job.start()
    assert wait_for(qgis_app, lambda: job.done, 30), job.log
    assert job.status == "ok", job.message
    body = FakeRay.submitted[0]
    assert body["entrypoint"].startswith("python -m aifactory.cli synth -o ")
    assert body["entrypoint"].endswith("--events jsonl")
    assert body["entrypoint_num_gpus"] == 1
    assert body["runtime_env"]["env_vars"]["AIFACTORY_CODE_REF"] == "v1.2"
    assert set(FakeRay.headers_seen) == {"Bearer tok-1"}
    assert not any(agent.startswith("Mozilla") for agent in FakeRay.agents)  # Ray's dashboard would answer 405
    assert job.state.percent == 100 and job.state.metrics["tiles_per_s"][0] == 3.5
    assert "some library chatter" in job.log
    assert job.remote_id == "raysubmit_1"


def test_ray_cancel_posts_stop(qgis_app, plugin, fake_ray, tmp_path, monkeypatch):
    from aifactory_qgis.jobs import runners

    monkeypatch.setattr(runners, "POLL_MS", 20)
    monkeypatch.setattr(FakeRay, "LOGS", FakeRay.LOGS[:1] * 1000)
    job = runners.RayJob(synth_spec(tmp_path, runner="gpu"), fake_ray)
    job.start()
    assert wait_for(qgis_app, lambda: job.remote_id != "", 10)
    job.cancel()
    assert wait_for(qgis_app, lambda: job.done, 10)
    assert FakeRay.stopped and job.status == "stopped"


def test_unreachable_cluster_is_a_message_not_a_freeze(qgis_app, qgis_iface, plugin, tmp_path):
    from aifactory_qgis.settings import Cluster

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    plugin.manager.settings.set_clusters([Cluster("offline", f"http://127.0.0.1:{port}")])
    plugin.docks["jobs"].refresh_runners()
    job = plugin.manager.submit(synth_spec(tmp_path, runner="offline"))
    assert wait_for(qgis_app, lambda: job.done, 30)
    assert job.status == "failed" and "unreachable" in job.message
    assert any("unreachable" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))


WORKER_ERROR = "/nonexistent: model run directory not found"
FAILED_LOGS = ['{"event": "progress", "task": "predict", "value": 0.0, "message": ""}',
               f'{{"event": "error", "message": "{WORKER_ERROR}"}}',
               '{"event": "done", "status": "failed"}',
               "some library chatter",
               f"aifactory: error: {WORKER_ERROR}"]
RAY_MESSAGE = ("Job entrypoint command failed with exit code 2, last available logs (truncated to 20,000 chars):\n"
               + "\n".join(FAILED_LOGS * 400))


@pytest.mark.parametrize("logs, expected", [
    (FAILED_LOGS, WORKER_ERROR),  # the worker's error event
    ([FAILED_LOGS[0], *FAILED_LOGS[3:]], WORKER_ERROR),  # only its "aifactory: error:" line
    (FAILED_LOGS[:1], "the job failed (exit code 2)"),  # nothing from the worker
])
def test_ray_failure_says_the_workers_error_in_one_line(qgis_app, qgis_iface, plugin, fake_ray, tmp_path,
                                                        monkeypatch, logs, expected):
    from aifactory_qgis.jobs import runners
    from aifactory_qgis.settings import Cluster

    monkeypatch.setattr(runners, "POLL_MS", 20)
    monkeypatch.setattr(FakeRay, "LOGS", logs)
    monkeypatch.setattr(FakeRay, "FINAL", "FAILED")
    monkeypatch.setattr(FakeRay, "MESSAGE", RAY_MESSAGE)
    plugin.manager.settings.set_clusters([Cluster("gpu", fake_ray)])
    job = plugin.manager.submit(synth_spec(tmp_path, runner="gpu"))
    assert wait_for(qgis_app, lambda: job.done, 30), job.log
    assert job.status == "failed"
    assert job.message == expected
    assert qgis_iface.messageBar().get_messages(Qgis.Critical)[-1].endswith(f"failed: {expected}")
    assert plugin.manager.history.get(job.spec.id).message == expected


@pytest.mark.parametrize("final, last", [("SUCCEEDED", '{"event": "artifact", "kind": "raster", "path": "s.tif"}'),
                                         ("FAILED", f'{{"event": "error", "message": "{WORKER_ERROR}"}}')])
def test_ray_job_reads_the_lines_written_just_before_it_ended(qgis_app, plugin, fake_ray, tmp_path, monkeypatch,
                                                              final, last):
    """An even number of lines: the status says ended right after a logs answer that missed the last line."""
    from aifactory_qgis.jobs import runners

    monkeypatch.setattr(runners, "POLL_MS", 20)
    monkeypatch.setattr(FakeRay, "LOGS", [FakeRay.LOGS[0], "chatter", "more chatter", last])
    monkeypatch.setattr(FakeRay, "FINAL", final)
    monkeypatch.setattr(FakeRay, "MESSAGE", RAY_MESSAGE if final == "FAILED" else "")
    job = runners.RayJob(synth_spec(tmp_path, runner="gpu"), fake_ray)
    job.start()
    assert wait_for(qgis_app, lambda: job.done, 30), job.log
    if final == "SUCCEEDED":
        assert job.status == "ok" and job.state.artifacts == [{"kind": "raster", "path": "s.tif"}]
    else:
        assert job.status == "failed" and job.message == WORKER_ERROR


def test_the_jobs_dock_comes_forward_when_another_dock_starts_a_job(qgis_app, plugin, tmp_path):
    dock = plugin.docks["jobs"]
    assert dock.isHidden()  # docks start hidden
    job = plugin.manager.submit(synth_spec(tmp_path))  # what "Build dataset", "Compute RPS"… do
    assert not dock.isHidden() and dock.job is job
    assert wait_for(qgis_app, lambda: job.done, 120), job.log


def test_any_running_job_can_be_cancelled_from_the_history(qgis_app, plugin, tmp_path):
    dock = plugin.docks["jobs"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = plugin.manager.submit(synth_spec(tmp_path / "a", size="6000x6000"))
    second = plugin.manager.submit(synth_spec(tmp_path / "b", size="6000x6000"))
    assert dock.job is second  # the latest job is shown
    assert wait_for(qgis_app, lambda: first.state.value > 0 or first.done, 120), first.log
    items = [dock.history.item(row) for row in range(dock.history.count())]
    dock.history.setCurrentItem(next(item for item in items if item.data(Qt.ItemDataRole.UserRole) == first.spec.id))
    assert dock.job is first and dock.cancel_button.isEnabled()
    dock.cancel_button.click()
    assert wait_for(qgis_app, lambda: first.done, 30)
    assert first.status == "stopped" and not second.done
    assert dock.job is first and not dock.cancel_button.isEnabled()
    second.cancel()
    assert wait_for(qgis_app, lambda: second.done, 30)



def test_the_dock_shows_what_each_of_two_jobs_became_and_runs_one_again(qgis_app, qgis_new_project, plugin, tmp_path):
    """Two jobs at once in a folder with spaces: one succeeds, one exits 2 with the worker's one-line error, a
    third is killed (SIGKILL, as the out-of-memory killer does); then "Run again" on the first."""
    import os
    import signal

    from aifactory_qgis.jobs.spec import JobSpec

    dock = plugin.docks["jobs"]
    spaced = tmp_path / "my dir" / "out put"
    spaced.mkdir(parents=True)
    ok = plugin.manager.submit(synth_spec(spaced))
    bad = plugin.manager.submit(JobSpec(kind="synth", title="bad size", args=["synth", "-o", str(spaced / "x.tif"),
                                        "--size", "12by4", "--events", "jsonl"], cwd=str(spaced)))
    assert dock.job is bad
    assert wait_for(qgis_app, lambda: ok.done and bad.done, 120), (ok.log, bad.log)
    assert ok.status == "ok" and bad.status == "failed"
    assert dock.step.text() == "failed: The worker failed (exit code 2): --size: expected WIDTHxHEIGHT, got '12by4'"
    assert dock.log.toPlainText().startswith("$ ")  # the command line opens the log tail (it was not shown)
    assert f"'{spaced / 'x.tif'}'" in dock.log.toPlainText()  # quoted: copied into a shell, it runs
    assert [layer.source() for layer in QgsProject.instance().mapLayers().values()] == [str(spaced / "synth.tif")]
    assert plugin.manager.history.get(ok.spec.id).status == "ok"
    assert plugin.manager.history.get(bad.spec.id).message.endswith("got '12by4'")

    killed = plugin.manager.submit(synth_spec(tmp_path, size="6000x6000"))
    assert wait_for(qgis_app, lambda: killed.state.value > 0 or killed.done, 120), killed.log
    os.kill(killed.process.processId(), signal.SIGKILL)
    assert wait_for(qgis_app, lambda: killed.done, 30)
    assert killed.status == "failed" and "SIGKILL" in dock.step.text() and not dock.cancel_button.isEnabled()
    assert not (tmp_path / "synth.tif").exists()

    rows = [dock.history.item(row) for row in range(dock.history.count())]
    dock.history.setCurrentItem(next(item for item in rows if item.data(Qt.ItemDataRole.UserRole) == ok.spec.id))
    again = dock.rerun()
    assert again is not None and again.spec.id != ok.spec.id
    assert (again.spec.args, again.spec.cwd, again.spec.runner) == (ok.spec.args, ok.spec.cwd, ok.spec.runner)
    assert dock.job is again
    assert wait_for(qgis_app, lambda: again.done, 120), again.log
    assert again.status == "ok" and plugin.manager.history.get(again.spec.id).status == "ok"
    assert len(QgsProject.instance().mapLayers()) == 1  # the same output: not loaded twice
