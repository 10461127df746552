"""Workers that die, interpreters that cannot start, QGIS closing mid-job: each ends with a message that says what
happened, and nothing is left behind."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest
from plugin_helpers import WORKER_PYTHON, wait_for
from qgis.core import QgsProcessingException, QgsProcessingFeedback


def big_synth(tmp_path: Path):
    from aifactory_qgis import worker
    from aifactory_qgis.jobs.spec import JobSpec

    out = tmp_path / "synth.tif"
    return JobSpec(kind="synth", title="big scene", args=worker.synth(str(out), size="6000x6000"), cwd=str(tmp_path))


def worker_pids(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (a unique output path), read from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue  # the process ended meanwhile
    return pids


def script(path: Path, text: str, mode: int) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_unloading_the_plugin_lets_running_workers_remove_their_temporary_files(qgis_app, plugin, tmp_path):
    job = plugin.manager.submit(big_synth(tmp_path))
    assert wait_for(qgis_app, lambda: list(tmp_path.glob(".synth*")) or job.done, 120), job.log
    assert not job.done
    plugin.unload()
    assert job.process.state() == 0  # QProcess.ProcessState.NotRunning
    assert not list(tmp_path.glob(".synth*"))  # SIGTERM, not SIGKILL: the worker cleaned up


def test_a_worker_killed_by_a_signal_says_so(qgis_app, plugin, tmp_path):
    job = plugin.manager.submit(big_synth(tmp_path))
    assert wait_for(qgis_app, lambda: job.state.value > 0 or job.done, 120), job.log
    os.kill(job.process.processId(), signal.SIGKILL)  # what the kernel's out-of-memory killer does
    assert wait_for(qgis_app, lambda: job.done, 30)
    assert job.status == "failed"
    assert "killed by signal 9 (SIGKILL)" in job.message and "memory" in job.message


def test_worker_call_tells_a_kill_from_a_timeout(qgis_app, plugin, tmp_path):
    from aifactory_qgis import worker
    from aifactory_qgis.jobs.runners import WorkerCall

    answers: list[str] = []
    killed = WorkerCall(WORKER_PYTHON, worker.synth(str(tmp_path / "a.tif"), size="6000x6000"))
    killed.answered.connect(lambda _ok, _out, err: answers.append(err))
    killed.start()
    assert wait_for(qgis_app, lambda: killed.process.processId() > 0, 30)
    os.kill(killed.process.processId(), signal.SIGKILL)
    assert wait_for(qgis_app, lambda: len(answers) == 1, 30)
    assert "killed by signal 9" in answers[0]
    slow = WorkerCall(WORKER_PYTHON, worker.synth(str(tmp_path / "b.tif"), size="6000x6000"), timeout_ms=500)
    slow.answered.connect(lambda _ok, _out, err: answers.append(err))
    slow.start()
    assert wait_for(qgis_app, lambda: len(answers) == 2, 30)
    assert answers[1] == "no answer within 0.5 s"


@pytest.mark.parametrize("text, mode, expected", [
    ("#!/bin/sh\nexec python3 \"$@\"\n", stat.S_IRUSR | stat.S_IWUSR, "could not start it"),  # not executable
    ("#!/bin/sh\nexec sleep 30\n", stat.S_IRWXU, "no answer within 1 s"),  # hangs
])
def test_processing_with_an_unusable_interpreter_says_what_to_fix(qgis_app, plugin, tmp_path, monkeypatch,
                                                                  text, mode, expected):
    from aifactory_qgis import worker
    from aifactory_qgis.processing import algorithms

    monkeypatch.setattr(algorithms, "PROBE_TIMEOUT_S", 1)
    python = script(tmp_path / "python", text, mode)
    with pytest.raises(QgsProcessingException) as raised:
        algorithms.run_worker(worker.version(), QgsProcessingFeedback(), python)
    message = str(raised.value)
    assert f"The worker Python {python} cannot run aifactory ({expected}" in message
    assert "AI Factory ▸ Settings" in message and "\n" not in message


def test_processing_worker_killed_by_a_signal_says_so(qgis_app, plugin, tmp_path):
    from aifactory_qgis import worker
    from aifactory_qgis.processing.algorithms import run_worker

    out = tmp_path / "killed.tif"
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda value: [os.kill(pid, signal.SIGKILL) for pid in worker_pids(str(out))])
    with pytest.raises(QgsProcessingException, match=r"The worker failed \(killed by signal 9 \(SIGKILL\)"):
        run_worker(worker.synth(str(out), size="6000x6000"), feedback)
