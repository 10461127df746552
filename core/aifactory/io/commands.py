"""CLI commands of the I/O stage: ``info`` and ``synth``."""

from __future__ import annotations

from pathlib import Path

import click

from aifactory.cli import echo_json, with_events
from aifactory.errors import InputError


@click.command()
@click.argument("raster", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(raster: Path, as_json: bool) -> None:
    """Size, bands, dtype, CRS, resolution, nodata, block shape and overviews of RASTER."""
    from aifactory.io.raster import raster_info

    meta = raster_info(raster)
    if as_json:
        echo_json(meta.to_dict())
        return
    rows = [
        ("file", meta.path), ("driver", meta.driver), ("size", f"{meta.width} x {meta.height} px"),
        ("bands", f"{meta.count} ({', '.join(sorted(set(meta.dtypes)))})"),
        ("crs", meta.crs if meta.georeferenced and meta.crs else "none (pixel space, not georeferenced)"),
        ("resolution", f"{meta.res[0]:g} x {meta.res[1]:g}" + ("" if meta.georeferenced else " (pixels)")),
        ("origin", f"{meta.transform.c:.10g}, {meta.transform.f:.10g}"),
        ("bounds", ", ".join(f"{v:.10g}" for v in meta.bounds)),
        ("nodata", "none" if meta.nodata is None else f"{meta.nodata:g}"),
        ("block", f"{meta.block_shape[1]} x {meta.block_shape[0]}"),
        ("overviews", ", ".join(str(o) for o in meta.overviews) or "none"),
        ("compression", meta.compression or "none"),
    ]
    if meta.has_rpcs:
        rows.append(("rpcs", "yes"))
    if any(meta.band_descriptions):
        rows.append(("band names", ", ".join(d or "-" for d in meta.band_descriptions)))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")


@click.command()
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Raster to write (COG).")
@click.option("--truth", type=click.Path(path_type=Path), help="GeoPackage for the objects' vector truth.")
@click.option("--size", default="1024x1024", show_default=True, help="WIDTHxHEIGHT in pixels (up to 20000x20000).")
@click.option("--bands", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--dtype", default="uint16", show_default=True,
              type=click.Choice(["uint8", "uint16", "int16", "float32"]))
@click.option("--crs", default="EPSG:32631", show_default=True, help="CRS, or 'none' for pixel space.")
@click.option("--gsd", default=0.5, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--density", default=0.8, show_default=True, help="Objects per 100 x 100 px.")
@click.option("--nodata-corner", default=0.0, show_default=True, type=click.FloatRange(0, 0.5),
              help="Fraction of the area left as nodata (a corner triangle).")
@click.option("--seed", default=0, show_default=True)
@with_events
def synth(output: Path, truth: Path | None, size: str, bands: int, dtype: str, crs: str, gsd: float,
          density: float, nodata_corner: float, seed: int) -> None:
    """Write a deterministic synthetic scene with known objects (for tests, demos and benchmarks)."""
    from aifactory.config import parse_crs
    from aifactory.io.synthetic import SceneSpec, generate_scene

    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise InputError(f"--size: expected WIDTHxHEIGHT, got {size!r}") from None
    if not (1 <= width <= 100_000 and 1 <= height <= 100_000):
        raise InputError(f"--size: {size} is out of range")
    if crs.lower() != "none":
        parse_crs(crs, "--crs")
    spec = SceneSpec(width=width, height=height, bands=bands, dtype=dtype,
                     crs=None if crs.lower() == "none" else crs, gsd=gsd, density=density,
                     nodata_corner=nodata_corner, seed=seed)
    objects = generate_scene(spec, output, truth)
    click.echo(f"wrote {output} ({width} x {height} x {bands} {dtype}) with {len(objects)} objects", err=True)
