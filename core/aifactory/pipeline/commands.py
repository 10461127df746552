"""CLI of the orchestrator: ``aifactory run PIPELINE.yaml`` and ``aifactory tasks --list``."""

from __future__ import annotations

from pathlib import Path

import click

from aifactory.cli import with_events


@click.command("run")
@click.argument("pipeline_file", type=click.Path(path_type=Path))
@click.option("-o", "--workdir", type=click.Path(path_type=Path), help="Run folder (default: the file's workdir).")
@click.option("--dry-run", is_flag=True, help="Print the plan (run/skip per task) and stop.")
@click.option("--from", "from_task", metavar="TASK",
              help="Start TASK over (no resume of a failed attempt) and re-run everything downstream of it.")
@with_events
def run_command(pipeline_file: Path, workdir: Path | None, dry_run: bool, from_task: str | None) -> None:
    """Run a YAML pipeline: tasks wired by ${task.output} references, unchanged tasks skipped."""
    from aifactory.pipeline.runner import plan, run
    from aifactory.pipeline.spec import load_pipeline

    pipeline = load_pipeline(pipeline_file)
    if workdir is not None:
        pipeline.workdir = workdir.expanduser().resolve()
    if dry_run:
        for step in plan(pipeline, from_task):
            task = pipeline.tasks[step.name]
            after = f" after {', '.join(sorted(task.depends_on))}" if task.depends_on else ""
            click.echo(f"{step.action:<4}  {step.name} ({task.kind}){after}: {step.reason}")
        return
    outputs = run(pipeline, from_task)
    for name, produced in outputs.items():
        for key, value in produced.items():
            click.echo(f"{name}.{key} = {value}", err=True)


@click.command("tasks")
@click.option("--list", "list_", is_flag=True, help="List the registered pipeline tasks with their parameters.")
def tasks_command(list_: bool) -> None:
    """Pipeline tasks (use --list)."""
    from aifactory.pipeline import TASKS

    for line in TASKS.describe_lines():
        click.echo(line)
