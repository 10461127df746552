"""Security rules of the job client: job ids, addresses, tokens, entrypoint quoting, archive members."""

from __future__ import annotations

import io
import re
import shlex
import subprocess
import zipfile
from pathlib import Path

import aifactory.jobs
import pytest
from aifactory.errors import ConfigError, InputError
from aifactory.jobs.base import entrypoint
from aifactory.jobs.ledger import JobRecord
from aifactory.jobs.ray import extract, submission
from aifactory.jobs.rayapi import RayAPI
from aifactory.jobs.security import check_access, check_job_id, is_loopback, normalize_address, resolve_token

PIPELINE = "name: tiny\ntasks:\n  scene: {task: synth, params: {width: 32, height: 32}}\n"


@pytest.mark.parametrize("job_id", ["aif-20261128-154508-1b1ae2", "raysubmit_BwqaUU8MVEax3s1b", "a"])
def test_good_job_ids(job_id):
    assert check_job_id(job_id) == job_id


@pytest.mark.parametrize("job_id", ["", "../etc/passwd", "a/b", "-rf", "a b", "x?y=1", "a%2Fb", "é", "a" * 129,
                                    "a\nb", ".."])
def test_bad_job_ids_never_reach_a_url(job_id):
    with pytest.raises(InputError, match="invalid job id"):
        check_job_id(job_id)
    with pytest.raises(InputError, match="invalid job id"):  # checked before any request is made
        RayAPI("http://127.0.0.1:9").job(job_id)


@pytest.mark.parametrize("given, expected", [
    ("127.0.0.1:8265", "http://127.0.0.1:8265"),
    ("http://localhost", "http://localhost:8265"),
    ("https://ray.example.org/", "https://ray.example.org:443"),
    ("http://[::1]:9000", "http://[::1]:9000"),
])
def test_addresses_are_normalized(given, expected):
    assert normalize_address(given) == expected


@pytest.mark.parametrize("address", ["ftp://host:21", "file:///etc/passwd", "http://user:pw@host:8265",
                                     "http://host:8265/api?x=1", "http://host:99999", "http://"])
def test_bad_addresses(address):
    with pytest.raises(ConfigError, match="--address"):
        normalize_address(address)


def test_loopback_and_access_rules():
    assert all(map(is_loopback, ["127.0.0.1:1", "http://localhost:2", "http://[::1]:3", "127.8.9.10"]))
    assert not any(map(is_loopback, ["10.0.0.1", "http://ray.example.org", "http://127.0.0.1.nip.io:1"]))
    assert check_access("http://127.0.0.1:8265", None, insecure=False) == []
    with pytest.raises(ConfigError, match="not a loopback address: give a token"):
        check_access("http://10.0.0.5:8265", None, insecure=False)
    assert "without authentication" in check_access("http://10.0.0.5:8265", None, insecure=True)[0]
    assert "plain HTTP" in check_access("http://10.0.0.5:8265", "t0ken", insecure=False)[0]
    assert check_access("https://10.0.0.5:443", "t0ken", insecure=False) == []


def test_token_precedence_and_config_file_permissions(tmp_path, monkeypatch):
    config = tmp_path / "jobs.yaml"
    monkeypatch.setenv("AIFACTORY_JOBS_CONFIG", str(config))
    monkeypatch.delenv("AIFACTORY_RAY_TOKEN", raising=False)
    assert resolve_token(None) is None
    config.write_text("ray: {token: from-file}\n")
    config.chmod(0o644)
    with pytest.raises(ConfigError, match="other users may read it"):
        resolve_token(None)
    config.chmod(0o600)
    assert resolve_token(None) == "from-file"
    monkeypatch.setenv("AIFACTORY_RAY_TOKEN", "from-env")
    assert resolve_token(None) == "from-env"
    assert resolve_token("from-flag") == "from-flag"
    with pytest.raises(ConfigError, match="whitespace"):
        resolve_token("two words")
    config.write_text("ray: {tokn: x}\n")
    monkeypatch.delenv("AIFACTORY_RAY_TOKEN")
    with pytest.raises(ConfigError, match=r"ray\.tokn: unknown key"):
        resolve_token(None)


def test_entrypoint_arguments_are_quoted_for_the_shell(tmp_path):
    """Ray runs the entrypoint through a shell: a hostile workdir stays one argument and runs nothing."""
    canary = tmp_path / "pwned"
    hostile = f"~/runs/a b; touch {canary} $(touch {canary}) `touch {canary}` 'q\"x"
    job = JobRecord(id="aif-x", runner="ray", address="http://127.0.0.1:1", pipeline_path="/p.yaml",
                    pipeline_text="", workdir=hostile, resources={"gpus": 1.0, "custom": {"a100": 1.0}})
    payload = submission(job, "gcs://_ray_pkg_0.zip")
    expected = entrypoint("python", "pipeline.yaml", hostile)
    assert shlex.split(payload["entrypoint"]) == expected
    echoed = subprocess.run(["/bin/sh", "-c", payload["entrypoint"].replace("python", "printf '%s\\n'", 1)],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert echoed == expected[1:] and not canary.exists()
    assert payload["entrypoint_num_gpus"] == 1.0 and payload["entrypoint_resources"] == {"a100": 1.0}
    assert payload["runtime_env"]["env_vars"]["RAY_JOB_STOP_SIGNAL"] == "SIGINT"


def test_no_shell_true_in_the_jobs_package():
    sources = Path(aifactory.jobs.__file__).parent.glob("*.py")
    offenders = [path.name for path in sources if re.search(r"shell\s*=\s*True", path.read_text())]
    assert offenders == []


def test_fetched_archive_cannot_escape_the_output_folder(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok/info.json", "{}")
        archive.writestr("../../evil.sh", "rm -rf ~")
    buffer.seek(0)
    with pytest.raises(InputError, match="would land outside"):
        extract(buffer, tmp_path / "out")
    assert not (tmp_path / "evil.sh").exists() and not (tmp_path.parent / "evil.sh").exists()


def test_cli_refuses_remote_address_without_token(cli, tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(PIPELINE)
    env = {"AIFACTORY_LEDGER": str(tmp_path / "jobs.db"), "AIFACTORY_RAY_TOKEN": "",
           "AIFACTORY_JOBS_CONFIG": str(tmp_path / "none.yaml")}
    result = cli("submit", str(pipeline), "--runner", "ray", "--address", "http://10.1.2.3:8265", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "aifactory: error: http://10.1.2.3:8265 is not a loopback address: give a token (--token or "
        "$AIFACTORY_RAY_TOKEN) or accept an unauthenticated connection with --insecure"]
    assert cli("jobs", "list", "--json", env=env).stdout.strip() == "[]"


def test_an_address_that_is_no_ray_dashboard_is_one_line(cli, tmp_path):
    """A plain web server at --address refused the package upload: "HTTP 501" and its page's last line."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        pipeline = tmp_path / "p.yaml"
        pipeline.write_text(PIPELINE)
        env = {"AIFACTORY_LEDGER": str(tmp_path / "jobs.db"), "AIFACTORY_RAY_TOKEN": "t",
               "AIFACTORY_JOBS_CONFIG": str(tmp_path / "none.yaml")}
        address = f"http://127.0.0.1:{server.server_port}"
        result = cli("submit", str(pipeline), "--runner", "ray", "--address", address, env=env)
    finally:
        server.shutdown()
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"aifactory: error: {address}: not a Ray dashboard (no Ray version at /api/version)"]
    assert cli("jobs", "list", "--json", env=env).stdout.strip() == "[]"
