"""CLI of the dataset stage: ``aifactory dataset build`` and ``aifactory dataset preview``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from aifactory.cli import echo_json, with_events

if TYPE_CHECKING:
    from aifactory.datasets.plan import DatasetPlan


@click.group()
def dataset() -> None:
    """Chip datasets from rasters and vector labels (with spatial splits)."""


def _report(plan: DatasetPlan, as_json: bool, extra: dict[str, str] | None = None) -> None:
    if as_json:
        echo_json({**plan.summary(), **(extra or {})})
        return
    click.echo(plan.table().to_string(index=False))
    dropped = ", ".join(f"{k} {v}" for k, v in plan.dropped.items() if v)
    if dropped:
        click.echo(f"dropped chips: {dropped}")


@dataset.command("preview")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (for the QGIS dock).")
@with_events
def preview(config: Path, as_json: bool) -> None:
    """Objects per class and split, and chips per split, that a build would write (no chips written)."""
    from aifactory.config import told_in
    from aifactory.datasets.config import load_dataset_config
    from aifactory.datasets.plan import plan_dataset

    with told_in(config):
        _report(plan_dataset(load_dataset_config(config)), as_json)


@dataset.command("build")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Dataset folder to write.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@with_events
def build(config: Path, output: Path, as_json: bool) -> None:
    """Export chips, masks, boxes, splits, statistics, manifest.json and balance.png into OUTPUT."""
    from aifactory.config import told_in
    from aifactory.datasets.config import load_dataset_config
    from aifactory.datasets.export import build_dataset

    with told_in(config):
        plan = build_dataset(load_dataset_config(config), output)
    _report(plan, as_json, {"output": str(output)})
    if not as_json:
        click.echo(f"wrote {output} (manifest.json, balance.png)")
