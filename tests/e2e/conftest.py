"""A REAL local Ray head for end-to-end tests: 127.0.0.1 only, token authentication on, stopped by PID.

``ray start --head`` runs in a session of its own, so every process of the head (GCS, raylet, dashboard,
agents, workers, job drivers) is in that session or below one that is. Stopping the head terminates
exactly those processes — never ``ray stop``, which stops every Ray on the machine, other people's too.
All ports are picked free (two heads may run at once: the session's and a short-lived one to kill), and
the temp dir is short because Ray's unix socket paths must stay under ~107 characters.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

VENV_BIN = Path(sys.executable).parent
PORT_OPTIONS = ("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
                "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RayHead:
    address: str
    token: str
    temp_dir: Path
    session: int

    def processes(self) -> list[psutil.Process]:
        """Every process of this head: its session's, plus their descendants (job drivers start sessions)."""
        roots = []
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) == self.session:
                    roots.append(process)
            except (ProcessLookupError, PermissionError):
                continue
        found = {process.pid: process for process in roots}
        for process in roots:
            try:
                found.update({child.pid: child for child in process.children(recursive=True)})
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def stop(self, kill: bool = False) -> None:
        """Terminate (or SIGKILL, to simulate a crash) every process of the head."""
        processes = self.processes()
        for process in processes:
            try:
                process.kill() if kill else process.terminate()
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(processes, timeout=4)  # the GCS server ignores SIGTERM for long
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(alive, timeout=5)

    def env(self) -> dict[str, str]:
        return {"AIFACTORY_RAY_TOKEN": self.token, "AIFACTORY_RAY_ADDRESS": self.address}


def start_head(temp_dir: Path, token: str) -> RayHead:
    ports = {option: free_port() for option in PORT_OPTIONS}
    home = temp_dir / "home"  # jobs write their default workdir (~/.local/share/...) in here
    home.mkdir()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": token, "HOME": str(home),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
               "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=2", "--num-gpus=1",
               "--disable-usage-stats", f"--temp-dir={temp_dir}",
               *(f"--{option}={port}" for option, port in ports.items())]
    starter = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    head = RayHead(f"http://127.0.0.1:{ports['dashboard-port']}", token, temp_dir, starter.pid)
    try:
        output, _ = starter.communicate(timeout=120)
        if starter.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{output[-3000:]}")
        wait_for_jobs_api(head)
    except BaseException:
        head.stop(kill=True)
        raise
    return head


def wait_for_jobs_api(head: RayHead, timeout: float = 60.0) -> None:
    request = urllib.request.Request(f"{head.address}/api/jobs/", headers={"Authorization": f"Bearer {head.token}"})
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                json.load(response)
                return
        except (urllib.error.URLError, OSError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@contextlib.contextmanager
def running_head() -> Iterator[RayHead]:
    """A head with its own short temp dir and token, stopped (and its temp dir removed) on exit."""
    temp_dir = Path(tempfile.mkdtemp(prefix="aifray-", dir="/tmp"))
    try:
        head = start_head(temp_dir, "aifactory-e2e-" + secrets.token_hex(12))
        try:
            yield head
        finally:
            head.stop()
    finally:
        for _ in range(3):  # a dying Ray process may still drop a file in there
            shutil.rmtree(temp_dir, ignore_errors=True)
            if not temp_dir.exists():
                break
            time.sleep(1)


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """The session's Ray head (started once)."""
    with running_head() as head:
        yield head


@pytest.fixture()
def doomed_ray_head() -> Iterator[RayHead]:
    """A head of its own for a test that kills it."""
    with running_head() as head:
        yield head
