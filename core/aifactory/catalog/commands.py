"""CLI of the catalog stage: ``aifactory catalog build`` and ``aifactory catalog query``."""

from __future__ import annotations

from pathlib import Path

import click

from aifactory.cli import echo_json, with_events


@click.group()
def catalog() -> None:
    """Catalog of images, observations and context (GeoPackage or PostGIS)."""


@catalog.command("build")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, help="GeoPackage to write, or a postgresql:// URL.")
@with_events
def build(config: Path, output: str) -> None:
    """Ingest the rasters, label layers and context listed in CONFIG into a catalog."""
    from aifactory.catalog.build import build_catalog

    counts = build_catalog(config, output)
    click.echo(f"catalog {output}: {counts['images']} images, {counts['observations']} observations", err=True)


@catalog.command("query")
@click.argument("target", metavar="CATALOG")
@click.option("--select", "select_path", type=click.Path(path_type=Path), help="Selection YAML (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@with_events
def query(target: str, select_path: Path | None, as_json: bool) -> None:
    """Count the observations a selection picks, per class (at the selection's level)."""
    from aifactory.catalog.selection import Selection, check_classes, load_selection
    from aifactory.catalog.store import open_catalog

    selection = load_selection(select_path) if select_path else Selection()
    base = select_path.resolve().parent if select_path else None
    aoi = selection.aoi.to_wgs84(base) if selection.aoi is not None else None
    with open_catalog(target) as store:
        check_classes(selection, store.class_paths(), store.label, f"{select_path}: ")
        counts = store.counts(selection, aoi)
    if as_json:
        echo_json({"catalog": str(target), "level": selection.level,
                   "classes": counts.to_dict(orient="records"), "objects": int(counts["objects"].sum())})
        return
    if counts.empty:
        click.echo("no observation matches the selection")
        return
    import pandas as pd

    total = pd.DataFrame([{"class": "total", "objects": int(counts["objects"].sum()), "images": "-"}])
    click.echo(pd.concat([counts.astype(object), total], ignore_index=True).to_string(index=False))
