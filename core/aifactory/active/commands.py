"""CLI of the active-learning stage: ``aifactory al select | round | simulate`` and ``aifactory al --list``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from aifactory.cli import with_events
from aifactory.errors import ConfigError


def parse_params(values: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (values read as YAML scalars: 16, 0.3, true) for the acquisition function."""
    params: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE, e.g. samples=16")
        params[key.strip()] = yaml.safe_load(value)
    return params


@click.group(invoke_without_command=True)
@click.option("--list", "list_all", is_flag=True, help="Print the acquisition functions with their parameters.")
@click.pass_context
def al(ctx: click.Context, list_all: bool) -> None:
    """Active learning: pick the tiles worth annotating, run tagging rounds, measure the label savings."""
    if list_all:
        from aifactory.active import ACQUISITIONS

        for line in ACQUISITIONS.describe_lines():
            click.echo(line)
    elif ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@al.command("select")
@click.option("--model", "model", type=click.Path(path_type=Path), help="Trained run directory "
              "(model.json + model.pt); not needed for --strategy random without diversity.")
@click.option("--raster", "rasters", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Raster to pick tiles from (repeat for several).")
@click.option("--n", "n", type=int, required=True, help="Number of tiles to pick.")
@click.option("--strategy", default="entropy", show_default=True, help="Acquisition function (al --list).")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Acquisition parameter, e.g. -p samples=16 for bald (repeatable).")
@click.option("--aggregate", type=click.Choice(["mean", "topk", "max"]), default="mean", show_default=True,
              help="Pixel scores → tile score.")
@click.option("--top-k", type=float, default=0.1, show_default=True, help="topk: fraction of pixels averaged.")
@click.option("--diversity", type=click.Choice(["none", "kcenter"]), default="none", show_default=True,
              help="kcenter: k-center greedy on encoder embeddings among the --top-m most uncertain tiles.")
@click.option("--top-m", type=int, help="kcenter: candidates kept by uncertainty (default 3 × --n).")
@click.option("--min-distance", type=float, default=0.0, show_default=True,
              help="Minimum distance between picked tile centres (CRS units; pixels without georeferencing).")
@click.option("--tile-size", type=int, help="Tile side in pixels (default: the model's tile size).")
@click.option("--exclude-labelled", "exclude", multiple=True, metavar="CATALOG_OR_LAYER",
              help="Skip tiles over labelled ground: a catalog, or a vector layer such as earlier tiles (repeatable).")
@click.option("--round", "round_number", type=int, default=1, show_default=True, help="Round number recorded.")
@click.option("--min-valid", type=float, default=0.5, show_default=True,
              help="Skip tiles with a smaller fraction of valid pixels.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Tiles GeoPackage to write.")
@with_events
def select(model: Path | None, rasters: tuple[Path, ...], n: int, strategy: str, params: tuple[str, ...],
           aggregate: str, top_k: float, diversity: str, top_m: int | None, min_distance: float,
           tile_size: int | None, exclude: tuple[Path, ...], round_number: int, min_valid: float, batch_size: int,
           device: str, seed: int, output: Path) -> None:
    """Pick the N tiles of the rasters most worth annotating into a tiles layer (for the Tagging dock)."""
    from aifactory.active.options import SelectOptions
    from aifactory.active.select import select_tiles, write_tiles
    from aifactory.config import validate
    from aifactory.progress import reporter

    if output.suffix.lower() != ".gpkg":  # the Tagging dock and al round read a GeoPackage layer
        raise ConfigError(f"-o {output}: the tiles layer is a GeoPackage; give a path ending in .gpkg")
    spec: str | dict[str, Any] = {"name": strategy, **parse_params(params)} if params else strategy
    options = validate(SelectOptions, {"strategy": spec, "aggregate": aggregate, "top_k": top_k,
                                       "diversity": diversity, "top_m": top_m, "min_distance": min_distance,
                                       "min_valid": min_valid, "batch_size": batch_size, "seed": seed},
                       "al select options")
    tiles = select_tiles(model, list(rasters), n, options, tile_size=tile_size, exclude=list(exclude),
                         round_number=round_number, device=device)
    write_tiles(tiles, output)
    reporter().log(f"{len(tiles)} tiles to tag ({options.label}, round {round_number}): {output}")


@al.command("round")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@with_events
def round_command(config: Path, device: str) -> None:
    """One tagging round: wait for tags → retrain → evaluate → record in rounds.jsonl → select the next tiles."""
    from aifactory.active.rounds import run_round

    result = run_round(config, device=device)
    click.echo(result.message)


@al.command("simulate")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Folder for curve.csv, curve.png, summary.json (re-running resumes).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@with_events
def simulate_command(config: Path, output: Path, device: str) -> None:
    """Label-efficiency curves of each strategy against random sampling on a fully labelled dataset."""
    from aifactory.active.simulate import simulate

    summary = simulate(config, output, device=device)
    for line in summary.lines():
        click.echo(line)
