"""CLI of the model library: ``aifactory models --list``."""

from __future__ import annotations

import click


@click.command()
@click.option("--list", "list_all", is_flag=True, help="Print every architecture and brick with its parameters.")
def models(list_all: bool) -> None:
    """The model library: architectures (by task family) and bricks, with their parameters."""
    from aifactory.models import ARCHITECTURES, BRICKS, task_of

    if not list_all:
        click.echo(click.get_current_context().get_help())
        return
    click.echo(f"architectures ({len(ARCHITECTURES)}):")
    for entry, line in zip(ARCHITECTURES, ARCHITECTURES.describe_lines(), strict=True):
        click.echo(f"  [{task_of(entry.name)}] {line}")
    click.echo(f"bricks ({len(BRICKS)}):")
    for line in BRICKS.describe_lines():
        click.echo(f"  {line}")
