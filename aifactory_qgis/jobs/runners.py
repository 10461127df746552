"""Running a job: a local QProcess, or a Ray Jobs REST client; both emit the same events.

Nothing here blocks the GUI thread: QProcess and the network manager deliver their results through
signals, Ray status and logs are polled by a single-shot QTimer that re-arms after each answer (never two
polls in flight). A worker that crashes, cannot start, or a cluster that cannot be reached just ends the
job as ``failed`` with a message saying what to fix.
"""

from __future__ import annotations

import json
import re
import shlex
from collections import deque
from pathlib import Path
from typing import ClassVar

from qgis.core import QgsNetworkAccessManager
from qgis.PyQt.QtCore import QByteArray, QObject, QProcess, QProcessEnvironment, QTimer, QUrl, pyqtSignal
from qgis.PyQt.QtNetwork import QNetworkAccessManager, QNetworkReply, QNetworkRequest

from .. import worker
from ..events import EventStream, JobState
from ..settings import cannot_run, check_python
from ..ui import exit_reason, tr
from .spec import JobSpec

#: interpreters that answered ``-m aifactory.cli --version`` in this session
VERIFIED_PYTHONS: set[str] = set()
PROBE_TIMEOUT_MS = 60_000
KILL_GRACE_MS = 3_000
POLL_MS = 1_000
USER_AGENT = b"aifactory-qgis"


class Job(QObject):
    """A running job. ``reported`` carries each worker event, ``finished`` the final status."""

    reported = pyqtSignal(dict)  # not "event": that would hide QObject.event()
    finished = pyqtSignal(str)

    def __init__(self, spec: JobSpec, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.spec = spec
        self.state = JobState()
        self.status = "queued"
        self.message = ""
        self.remote_id = ""
        self.log: deque[str] = deque(maxlen=2000)
        self._stream = EventStream()
        self._cancelled = False

    @property
    def done(self) -> bool:
        return self.status in ("ok", "failed", "stopped")

    def start(self) -> None:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Plugin unload: leave nothing that calls back into this object."""
        raise NotImplementedError

    def _feed(self, chunk: bytes | str, final: bool = False) -> None:
        events = list(self._stream.feed(chunk))
        if final:
            events += list(self._stream.close())
        for event in events:
            self._handle(event)

    def _handle(self, event: dict) -> None:
        self.state.apply(event)
        if event["event"] == "log":
            self.log.append(str(event.get("message", "")))
        elif event["event"] == "error":
            self.log.append(tr("error: {0}").format(event.get("message", "")))
        self.reported.emit(event)

    def _finish(self, status: str, message: str = "") -> None:
        if self.done:
            return
        self.status = "stopped" if self._cancelled and status != "ok" else status
        self.message = message or self.state.error or ""
        if self.status == "ok":
            self.state.value = 1.0
        if self.message:
            self.log.append(self.message)
        self.finished.emit(self.status)


class LocalJob(Job):
    """``python -m aifactory.cli …`` in a QProcess, after a one-time probe of the interpreter."""

    def __init__(self, spec: JobSpec, python: str, env: dict[str, str] | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(spec, parent)
        self.python = python
        self.env = env or {}
        self.process: QProcess | None = None
        self._stderr_tail: deque[str] = deque(maxlen=20)

    def start(self) -> None:
        self.status = "running"
        problem = check_python(self.python)
        if problem:
            self._finish("failed", problem)
        elif self.python in VERIFIED_PYTHONS:
            self._start_worker()
        else:
            self._probe()

    def _new_process(self) -> QProcess:
        process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        for key, value in self.env.items():
            env.insert(key, value)
        process.setProcessEnvironment(env)
        if self.spec.cwd:
            Path(self.spec.cwd).mkdir(parents=True, exist_ok=True)
            process.setWorkingDirectory(self.spec.cwd)
        return process

    def _probe(self) -> None:
        probe = WorkerCall(self.python, worker.version(), timeout_ms=PROBE_TIMEOUT_MS, parent=self)

        def answered(ok: bool, out: str, err: str) -> None:
            if self._cancelled:
                self._finish("stopped")
            elif ok and "aifactory" in out:
                VERIFIED_PYTHONS.add(self.python)
                self._start_worker()
            else:
                self._finish("failed", cannot_run(self.python, err))

        probe.answered.connect(answered)
        probe.start()

    def _start_worker(self) -> None:
        if self._cancelled:
            self._finish("stopped")
            return
        process = self._new_process()
        process.readyReadStandardOutput.connect(lambda: self._feed(bytes(process.readAllStandardOutput())))
        process.readyReadStandardError.connect(lambda: self._stderr(bytes(process.readAllStandardError())))
        process.finished.connect(self._exited)
        process.errorOccurred.connect(self._error)
        self.process = process
        args = worker.argv(self.python, self.spec.args)
        self._handle({"event": "log", "message": "$ " + shlex.join(args)})  # the dock's log starts with it
        process.start(args[0], args[1:])

    def _stderr(self, chunk: bytes) -> None:
        for line in chunk.decode("utf-8", errors="replace").splitlines():
            if line.strip():
                self._stderr_tail.append(line)
                self.log.append(line)
                self.reported.emit({"event": "log", "level": "stderr", "message": line})

    def _error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._finish("failed", tr("Could not start the worker {0}: {1}").format(
                self.python, self.process.errorString() if self.process else ""))

    def _exited(self, code: int, status: QProcess.ExitStatus) -> None:
        assert self.process is not None
        self._feed(bytes(self.process.readAllStandardOutput()), final=True)
        self._stderr(bytes(self.process.readAllStandardError()))
        crashed = status == QProcess.ExitStatus.CrashExit
        if code == 0 and not crashed and self.state.status in (None, "ok"):
            self._finish("ok")
            return
        if self.state.status == "stopped":  # the worker unwound after a stop (SIGINT or SIGTERM) and said so
            self._finish("stopped")
            return
        reason = self.state.error or (self._stderr_tail[-1] if self._stderr_tail else "")
        message = tr("The worker failed ({0})").format(exit_reason(code, crashed))
        self._finish("failed", message + (f": {reason}" if reason else ""))

    def cancel(self) -> None:
        self._cancelled = True
        process = self.process
        if process is None or process.state() == QProcess.ProcessState.NotRunning:
            if not self.done:
                self._finish("stopped")
            return
        process.terminate()
        grace = QTimer(process)  # dies with the process: never fires on a deleted object
        grace.setSingleShot(True)
        grace.timeout.connect(process.kill)
        grace.start(KILL_GRACE_MS)

    def shutdown(self) -> None:
        """Local workers are children of QGIS: none outlives the plugin. SIGTERM first, so that the worker
        removes its temporary files (gigabytes for a prediction); SIGKILL if it does not end in time."""
        self._cancelled = True
        process = self.process
        if process is None or process.state() == QProcess.ProcessState.NotRunning:
            return
        process.terminate()
        if not process.waitForFinished(KILL_GRACE_MS):
            process.kill()
            process.waitForFinished(1000)


class WorkerCall(QObject):
    """A short worker command whose whole output is wanted (``--version``, ``dataset preview --json``).

    ``answered(ok, stdout, error)``: ``error`` is the last stderr line (or why it did not run).
    """

    answered = pyqtSignal(bool, str, str)

    def __init__(self, python: str, args: list[str], timeout_ms: int = 120_000, parent: QObject | None = None):
        super().__init__(parent)
        self.python, self.args = python, args
        self.process = QProcess(self)
        self.timer = QTimer(self, singleShot=True, interval=timeout_ms)
        self.timer.timeout.connect(self._time_out)
        self._timed_out = False
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)
        self._answered = False

    def start(self) -> None:
        problem = check_python(self.python)
        if problem:
            self._answer(False, "", problem)
            return
        self.timer.start()
        self.process.start(self.python, worker.argv(self.python, self.args)[1:])

    def abort(self) -> None:
        """Stop without answering (a newer request replaces this one)."""
        self._answered = True
        if self.process.state() != QProcess.ProcessState.NotRunning:
            self.process.kill()
            self.process.waitForFinished(1000)

    def _answer(self, ok: bool, out: str, err: str) -> None:
        if not self._answered:
            self._answered = True
            self.timer.stop()
            self.answered.emit(ok, out, err)

    def _time_out(self) -> None:
        self._timed_out = True
        self.process.kill()

    def _error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._answer(False, "", tr("could not start {0}").format(self.python))

    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        out = bytes(self.process.readAllStandardOutput()).decode("utf-8", errors="replace")
        lines = bytes(self.process.readAllStandardError()).decode("utf-8", errors="replace").strip().splitlines()
        crashed = status == QProcess.ExitStatus.CrashExit
        ok = code == 0 and not crashed
        if self._timed_out:
            reason = tr("no answer within {0:g} s").format(self.timer.interval() / 1000)
        else:
            reason = lines[-1] if lines else exit_reason(code, crashed)
        self._answer(ok, out, "" if ok else reason)


class RayJob(Job):
    """The same command submitted to a Ray cluster through its Jobs REST API (dashboard port).

    Requests go through a QNetworkAccessManager of our own with QGIS's proxy, not QgsNetworkAccessManager:
    the latter always sends ``User-Agent: Mozilla/5.0 QGIS/…``, and Ray's dashboard refuses job submission
    and stop from anything whose user agent starts with "Mozilla" (its guard against browser CSRF, HTTP 405).
    """

    TERMINAL: ClassVar[dict[str, str]] = {"SUCCEEDED": "ok", "FAILED": "failed", "STOPPED": "stopped"}

    def __init__(self, spec: JobSpec, url: str, token: str = "", env: dict[str, str] | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(spec, parent)
        self.url = url.rstrip("/")
        self.token = token
        self.env = env or {}
        self._log_offset = 0
        self._replies: set[QNetworkReply] = set()
        self._network = QNetworkAccessManager(self)
        self._network.setProxy(QgsNetworkAccessManager.instance().fallbackProxy())
        self._poll_timer = QTimer(self)  # a child: polling stops if the job object goes away
        self._poll_timer.setSingleShot(True)
        self._poll_timer.timeout.connect(self._poll)

    def _request(self, method: str, path: str, body: dict | None, callback) -> None:
        request = QNetworkRequest(QUrl(self.url + path))
        request.setHeader(QNetworkRequest.KnownHeaders.ContentTypeHeader, "application/json")
        request.setRawHeader(b"User-Agent", USER_AGENT)
        if self.token:
            request.setRawHeader(b"Authorization", b"Bearer " + self.token.encode())
        manager = self._network
        if method == "POST":
            reply = manager.post(request, QByteArray(json.dumps(body or {}).encode()))
        else:
            reply = manager.get(request)
        self._replies.add(reply)

        def answered() -> None:
            self._replies.discard(reply)
            data = bytes(reply.readAll())
            error = reply.error()
            message = reply.errorString()
            reply.deleteLater()
            if error != QNetworkReply.NetworkError.NoError:
                self._network_failed(path, message, data)
                return
            try:
                callback(json.loads(data.decode() or "{}"))
            except ValueError:
                self._finish("failed", tr("Ray cluster at {0} answered {1} with something that is not JSON")
                             .format(self.url, path))

        reply.finished.connect(answered)

    def _network_failed(self, path: str, message: str, data: bytes) -> None:
        if self.done:
            return
        if not self.remote_id:
            self._finish("failed", tr("Ray cluster at {0} is unreachable or refused the job ({1}): check its "
                                      "address and token in AI Factory ▸ Settings.").format(self.url, message))
        else:
            self._finish("failed", tr("Lost contact with Ray job {0} at {1} ({2})").format(
                self.remote_id, self.url, message))

    def start(self) -> None:
        self.status = "running"
        if not self.url:
            self._finish("failed", tr("No Ray cluster named {0} in AI Factory ▸ Settings").format(self.spec.runner))
            return
        body: dict = {
            "entrypoint": worker.entrypoint(self.spec.args),
            "runtime_env": {"env_vars": {**self.env, "PYTHONUNBUFFERED": "1",
                                         "AIFACTORY_CODE_REF": self.spec.code_ref}},
            "metadata": {"aifactory_job": self.spec.id, "kind": self.spec.kind, "code_ref": self.spec.code_ref},
            "entrypoint_num_cpus": self.spec.cpus,
            "entrypoint_num_gpus": self.spec.gpus,
        }
        if self.spec.memory_gb > 0:
            body["entrypoint_memory"] = int(self.spec.memory_gb * 1024**3)
        self._handle({"event": "log", "message": tr("submitting to {0}: {1}").format(self.url, body["entrypoint"])})
        self._request("POST", "/api/jobs/", body, self._submitted)

    def _submitted(self, answer: dict) -> None:
        self.remote_id = str(answer.get("submission_id") or answer.get("job_id") or "")
        if not self.remote_id:
            self._finish("failed", tr("Ray cluster at {0} did not return a job id").format(self.url))
            return
        self._handle({"event": "log", "message": tr("Ray job {0} submitted").format(self.remote_id)})
        if self._cancelled:
            self.cancel()
        self._schedule()

    def _schedule(self) -> None:
        if not self.done:
            self._poll_timer.start(POLL_MS)

    def _poll(self) -> None:
        if not self.done:
            self._request("GET", f"/api/jobs/{self.remote_id}/logs", None, self._logs)

    def _logs(self, answer: dict) -> None:
        self._read_logs(answer)
        self._request("GET", f"/api/jobs/{self.remote_id}", None, self._status)

    def _read_logs(self, answer: dict) -> None:
        text = str(answer.get("logs", ""))
        if len(text) < self._log_offset:  # logs rotated: start over rather than skip
            self._log_offset = 0
        self._feed(text[self._log_offset:])
        self._log_offset = len(text)

    def _status(self, answer: dict) -> None:
        status = str(answer.get("status", ""))
        if status not in self.TERMINAL:
            self._schedule()
            return

        def ended(logs: dict) -> None:
            self._read_logs(logs)
            self._feed("", final=True)
            final = self.TERMINAL[status]
            if final == "ok" and self.state.status not in (None, "ok"):
                final = "failed"
            self._finish(final, self._failure(str(answer.get("message") or "")) if final == "failed" else "")

        # the worker's last lines (its error, late artifacts) may have been written after the last fetch
        self._request("GET", f"/api/jobs/{self.remote_id}/logs", None, ended)

    def _failure(self, ray_message: str) -> str:
        """Why the job failed in one line: the worker's own error, not Ray's message (which carries up to
        20 000 characters of raw logs)."""
        if self.state.error:
            return self.state.error
        prefix = "aifactory: error:"
        line = next((line for line in reversed(self.log) if line.startswith(prefix)), "")
        if line:
            return line[len(prefix):].strip()
        code = re.search(r"exit code (-?\d+)", ray_message)
        if code:
            return tr("the job failed (exit code {0})").format(code.group(1))
        first = ray_message.strip().splitlines()[0] if ray_message.strip() else tr("the job failed")
        return first if len(first) <= 200 else first[:199] + "…"

    def cancel(self) -> None:
        self._cancelled = True
        if self.remote_id and not self.done:
            self._request("POST", f"/api/jobs/{self.remote_id}/stop", {}, lambda _answer: None)

    def shutdown(self) -> None:
        """Remote jobs keep running on the cluster (hours of GPU time are not lost by closing QGIS): stop
        polling and drop the pending answers."""
        self._poll_timer.stop()
        for reply in list(self._replies):
            reply.finished.disconnect()
            reply.abort()
            reply.deleteLater()
        self._replies.clear()
