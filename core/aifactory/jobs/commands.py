"""CLI of the jobs stage: ``aifactory submit`` and ``aifactory jobs list|status|logs|stop|fetch``.

Human-readable by default; ``--json`` prints ledger records for the QGIS plugin. ``submit --wait``
replays the job's own events through the active reporter, so ``--events jsonl`` gives the plugin the
same stream for a remote job as for a local ``aifactory run``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from aifactory.cli import echo_json, with_events
from aifactory.jobs.ledger import JobRecord

LEDGER_HELP = "Job ledger (SQLite; default $AIFACTORY_LEDGER or ~/.local/share/aifactory/jobs.db)."


def access_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--ledger``, ``--token`` and ``--insecure``, shared by every jobs command."""
    func = click.option("--insecure", is_flag=True,
                        help="Allow a non-loopback Ray address without a token.")(func)
    func = click.option("--token", metavar="TOKEN",
                        help="Ray dashboard token (default $AIFACTORY_RAY_TOKEN or the jobs config file).")(func)
    return click.option("--ledger", type=click.Path(path_type=Path), help=LEDGER_HELP)(func)


def make_client(ledger: Path | None, token: str | None, insecure: bool) -> Any:
    from aifactory.jobs.ledger import Ledger
    from aifactory.jobs.security import resolve_token
    from aifactory.jobs.service import JobClient

    return JobClient(Ledger(ledger), resolve_token(token), insecure)


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"


def describe(record: JobRecord) -> list[tuple[str, str]]:
    progress = f"{record.progress:.0%} ({record.progress_text})" if record.progress is not None else "-"
    code = f"{record.code_ref or '-'} @ {record.code_commit or '?'}"
    rows = [("job", record.id), ("status", record.status + (f" (ray: {record.remote_status})"
                                                          if record.remote_status else "")),
            ("reason", record.message or "-"),
            ("runner", record.runner if record.runner == "local" else f"{record.runner} {record.address}"),
            ("pipeline", record.pipeline_path), ("code", code),
            ("resources", json.dumps({k: v for k, v in record.resources.items() if v}) or "-"),
            ("workdir", record.workdir + ("" if record.shared else " (on the worker)")),
            ("created", _when(record.created)), ("started", _when(record.started)),
            ("finished", _when(record.finished)), ("progress", progress)]
    rows += [("artifact", f"{item['kind']}: {item['path']}") for item in record.artifacts]
    return rows


@click.command("submit")
@click.argument("pipeline_file", type=click.Path(path_type=Path))
@click.option("--runner", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", metavar="URL", help="Ray dashboard, http(s)://HOST:PORT (default $AIFACTORY_RAY_ADDRESS).")
@click.option("--gpus", type=click.FloatRange(min=0), default=0, help="GPUs the job needs (ray).")
@click.option("--cpus", type=click.FloatRange(min=0), help="CPUs the job needs (ray).")
@click.option("--memory", "memory_gb", type=click.FloatRange(min=0, min_open=True), metavar="GB",
              help="Memory the job needs, GiB (ray).")
@click.option("--resource", "custom", multiple=True, metavar="NAME=N",
              help="A custom Ray resource / node label the job needs (repeatable).")
@click.option("--ref", metavar="GITREF", help="Run the code of this branch, tag or commit (a git worktree).")
@click.option("--shared-dir", type=click.Path(path_type=Path), metavar="DIR",
              help="A folder this machine and the workers see at the same path: the job writes DIR/<id>.")
@click.option("--wait", is_flag=True, help="Follow the job until it ends (exit 1 if it does not succeed).")
@click.option("--json", "as_json", is_flag=True, help="Print the job record as JSON.")
@access_options
@with_events
def submit_command(pipeline_file: Path, runner: str, address: str | None, gpus: float, cpus: float | None,
                   memory_gb: float | None, custom: tuple[str, ...], ref: str | None, shared_dir: Path | None,
                   wait: bool, as_json: bool, ledger: Path | None, token: str | None, insecure: bool) -> None:
    """Submit PIPELINE_FILE as a job to the local machine or a Ray cluster; prints the job id."""
    from aifactory.jobs.resources import Resources, parse_resource
    from aifactory.jobs.service import JobFailed
    from aifactory.progress import reporter

    resources = Resources(gpus=gpus, cpus=cpus, memory_gb=memory_gb, custom=dict(map(parse_resource, custom)))
    client = make_client(ledger, token, insecure)
    record = client.submit(pipeline_file, runner=runner, address=address, resources=resources, ref=ref,
                           shared_dir=shared_dir)
    rep = reporter()
    where = record.runner if record.address in (None, "", record.runner) else f"{record.runner} {record.address}"
    rep.log(f"job {record.id} submitted to {where}")
    if wait:
        def replay(event: dict[str, Any]) -> None:  # the outcome is ours to report, below
            if event["event"] not in ("done", "error"):
                rep.emit(event)

        record = client.wait(record, on_event=replay)
    if as_json:
        echo_json(record.to_dict())
    elif not wait:
        click.echo(record.id)
    if wait and record.status != "succeeded":
        raise JobFailed(f"job {record.id} {record.status}: {record.message}")


@click.group("jobs")
def jobs_group() -> None:
    """Follow submitted jobs: list, status, logs, stop, fetch."""


@jobs_group.command("list")
@click.option("--status", type=click.Choice(["pending", "running", "succeeded", "failed", "stopped"]))
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--no-refresh", is_flag=True, help="Show the ledger as is, without asking the runners.")
@click.option("--json", "as_json", is_flag=True)
@access_options
def list_command(status: str | None, limit: int, no_refresh: bool, as_json: bool, ledger: Path | None,
                 token: str | None, insecure: bool) -> None:
    """Jobs of the ledger, newest first (active ones refreshed)."""
    from aifactory.errors import AIFactoryError
    from aifactory.progress import reporter

    client = make_client(ledger, token, insecure)
    records = client.ledger.list(status, limit)
    if not no_refresh:
        for index, record in enumerate(records):
            if not record.settled:
                try:
                    records[index] = client.refresh(record)
                except AIFactoryError as exc:  # one bad address must not hide the other jobs
                    reporter().warning(f"{record.id}: {exc}")
    if as_json:
        echo_json([record.to_dict(with_pipeline=False) for record in records])
        return
    for record in records:
        progress = f"{record.progress:4.0%}" if record.progress is not None else "   -"
        click.echo(f"{record.id}  {record.status:<9}  {progress}  {record.runner:<5}  "
                   f"{Path(record.pipeline_path).name}  {record.message[:60]}")


@jobs_group.command("status")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@access_options
def status_command(job_id: str, as_json: bool, ledger: Path | None, token: str | None, insecure: bool) -> None:
    """The job's status, reason, progress and artifacts (refreshed from its runner)."""
    record = make_client(ledger, token, insecure).refresh(job_id)
    if as_json:
        echo_json(record.to_dict())
        return
    rows = describe(record)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")


@jobs_group.command("logs")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="The events as JSON lines.")
@click.option("--raw", is_flag=True, help="Everything the job wrote (stderr, Ray's own lines).")
@access_options
def logs_command(job_id: str, as_json: bool, raw: bool, ledger: Path | None, token: str | None,
                 insecure: bool) -> None:
    """The job's events (progress, metrics, artifacts, logs, outcome)."""
    from aifactory.jobs.events import render

    client = make_client(ledger, token, insecure)
    if raw:
        click.echo(client.raw_logs(job_id), nl=False)
        return
    for event in client.events(job_id):
        click.echo(json.dumps(event) if as_json else render(event))


@jobs_group.command("stop")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@access_options
def stop_command(job_id: str, as_json: bool, ledger: Path | None, token: str | None, insecure: bool) -> None:
    """Stop a job (its outputs stay as they are: complete files only)."""
    record = make_client(ledger, token, insecure).stop(job_id)
    if as_json:
        echo_json(record.to_dict(with_pipeline=False))
    else:
        click.echo(f"{record.id} {record.status}" + (f": {record.message}" if record.message else ""))


@jobs_group.command("fetch")
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Folder to copy into.")
@click.option("--all", "everything", is_flag=True, help="The whole workdir, not only the reported artifacts.")
@access_options
@with_events
def fetch_command(job_id: str, output: Path, everything: bool, ledger: Path | None, token: str | None,
                  insecure: bool) -> None:
    """Copy a job's artifacts into a local folder (through the Ray dashboard when needed)."""
    from aifactory.progress import reporter

    paths = make_client(ledger, token, insecure).fetch(job_id, output, everything)
    for path in paths:
        reporter().artifact("fetched", path)
        click.echo(path)
    if not paths:
        reporter().warning("nothing was fetched")
