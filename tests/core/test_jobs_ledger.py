"""The job ledger: round trips, lookups, restarts, bad files and concurrent writers (real SQLite)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest
from aifactory.errors import ConfigError, InputError
from aifactory.jobs.ledger import JobRecord, Ledger, default_path


def record(job_id: str, **values) -> JobRecord:
    return JobRecord(id=job_id, runner="local", address="local", pipeline_path="/p.yaml",
                     pipeline_text="tasks: {}\n", workdir="/w", **values)


def test_round_trip_survives_reopening(tmp_path):
    path = tmp_path / "jobs.db"
    with Ledger(path) as ledger:
        ledger.add(record("aif-1", resources={"gpus": 1.0, "custom": {"a100": 1.0}}, code_ref="main",
                          code_commit="abc123"))
        ledger.update("aif-1", status="running", pid=4242, progress=0.5, progress_text="train 50%",
                      artifacts=[{"kind": "train", "path": "/w/model.pt"}], extra={"node_id": "n1"})
    with Ledger(path) as ledger:  # a new client process, later
        job = ledger.get("aif-1")
        assert (job.status, job.pid, job.progress, job.code_commit) == ("running", 4242, 0.5, "abc123")
        assert job.resources == {"gpus": 1.0, "custom": {"a100": 1.0}}
        assert job.artifacts == [{"kind": "train", "path": "/w/model.pt"}] and job.extra == {"node_id": "n1"}
        assert job.settled is False and job.pipeline_text == "tasks: {}\n"
        assert ledger._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_lookup_by_prefix_and_listing(tmp_path):
    with Ledger(tmp_path / "jobs.db") as ledger:
        ledger.add(record("aif-20260101-a", created=1.0))
        ledger.add(record("aif-20260102-b", created=2.0, status="failed"))
        assert ledger.get("aif-20260102").id == "aif-20260102-b"
        with pytest.raises(InputError, match="is ambiguous"):
            ledger.get("aif-2026")
        with pytest.raises(InputError, match="'nope' is not in the ledger"):
            ledger.get("nope")
        with pytest.raises(InputError, match="invalid job id"):
            ledger.get("../etc")
        with pytest.raises(InputError, match="already exists"):
            ledger.add(record("aif-20260101-a"))
        assert [job.id for job in ledger.list()] == ["aif-20260102-b", "aif-20260101-a"]
        assert [job.id for job in ledger.list(status="failed")] == ["aif-20260102-b"]
        with pytest.raises(ValueError, match="unknown job status"):
            ledger.update("aif-20260101-a", status="exploded")


def test_default_location_and_bad_files(tmp_path, monkeypatch):
    monkeypatch.delenv("AIFACTORY_LEDGER", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_path() == tmp_path / "data" / "aifactory" / "jobs.db"
    monkeypatch.setenv("AIFACTORY_LEDGER", str(tmp_path / "mine.db"))
    assert default_path() == tmp_path / "mine.db"
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a usable job ledger"):
        Ledger(garbage)
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(ConfigError, match="format 99 is newer"):
        Ledger(newer)


def test_older_ledger_gets_new_columns(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # a ledger written before the 'extra' column existed
        db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, runner TEXT, status TEXT)")
        db.execute("INSERT INTO jobs (id, runner, status) VALUES ('aif-old', 'local', 'succeeded')")
    with Ledger(path) as ledger:
        old = ledger.get("aif-old")
        assert old.status == "succeeded" and old.extra == {} and old.artifacts == []


WRITER = textwrap.dedent("""
    import sys
    from aifactory.jobs.ledger import JobRecord, Ledger
    with Ledger(sys.argv[1]) as ledger:
        for i in range(40):
            job = f"w{sys.argv[2]}-{i}"
            ledger.add(JobRecord(id=job, runner="local", address="local", pipeline_path="p",
                                 pipeline_text="", workdir="w"))
            ledger.update(job, status="running", progress=i / 40)
            ledger.update("shared", progress=i / 40, message=f"writer {sys.argv[2]}")
""")


def test_concurrent_writers(tmp_path):
    path = tmp_path / "jobs.db"
    with Ledger(path) as ledger:
        ledger.add(record("shared"))
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n)], stderr=subprocess.PIPE,
                                text=True) for n in range(3)]
    errors = [writer.communicate(timeout=120)[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0, 0], errors
    with Ledger(path) as ledger:
        assert len(ledger.list()) == 1 + 3 * 40
        assert all(job.status == "running" for job in ledger.list() if job.id != "shared")
