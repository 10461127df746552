"""CLI of the training stage: ``aifactory train CONFIG.yaml -o RUN_DIR``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from aifactory.cli import with_events
from aifactory.progress import BarReporter, JsonlReporter, reporter


@click.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(path_type=Path),
              help="Run directory (config, manifest, metrics, checkpoints, model).")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from its newest checkpoint, exactly.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--ref", metavar="GITREF", help="Train with the code of this git branch, tag or commit (worktree).")
@click.option("--tracking-uri", metavar="URI", help="MLflow tracking URI ('none' = off); default: SQLite "
                                                     "mlruns.db next to RUN_DIR.")
@with_events
def train(config: Path, run_dir: Path, resume: bool, device: str, ref: str | None, tracking_uri: str | None) -> None:
    """Train the model described by CONFIG (YAML) into RUN_DIR."""
    if ref:
        from aifactory.training.worktree import run_at_ref

        rep = reporter()
        events = "jsonl" if isinstance(rep, JsonlReporter) else "bar" if isinstance(rep, BarReporter) else "none"
        args = ["train", str(config.resolve()), "-o", str(run_dir.resolve()), "--device", device, "--events", events,
                *(["--resume"] if resume else []), *(["--tracking-uri", tracking_uri] if tracking_uri else [])]
        # the child reports (and ends the event stream) itself
        sys.exit(run_at_ref(ref, args, rep.stream if isinstance(rep, JsonlReporter) else None))

    from aifactory.training.config import TrainConfig
    from aifactory.training.loop import train as run

    out = run(TrainConfig.from_yaml(config), run_dir, resume=resume, device=device, tracking_uri=tracking_uri,
              source=str(config))
    click.echo(f"trained: {out / 'model.pt'}", err=True)
