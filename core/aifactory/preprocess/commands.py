"""CLI of the pre-processing stage: ``aifactory preprocess``."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from aifactory.cli import with_events
from aifactory.errors import InputError


def _numbers(text: str | None, flag: str, kind: type = int) -> list:
    if text is None:
        return []
    try:
        numbers = [kind(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        numbers = []
    if not numbers:
        raise InputError(f"{flag}: expected comma-separated numbers, got {text!r}")
    return numbers


#: Options that mean something only with another one: what the message names, and the parameters enabling them
NEEDS = {"percentiles": ("--to-8bit", {"to_8bit"}), "stretch": ("--to-8bit", {"to_8bit"}),
         "dem": ("--ortho", {"ortho"}), "height": ("--ortho", {"ortho"}),
         "resampling": ("--dst-crs, --resolution or --ortho", {"dst_crs", "resolution", "ortho"})}


def _refuse_ignored_options() -> None:
    """Refuse an option the user gave that this run would ignore: a run that silently drops ``--percentiles`` or
    ``--stretch`` writes something else than what was asked."""
    ctx = click.get_current_context()
    given = {name for name in NEEDS if ctx.get_parameter_source(name) not in (
        None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}
    enabled = {name for name, value in ctx.params.items() if value}
    for name in sorted(given):
        flags, enabling = NEEDS[name]
        if not enabling & enabled:
            raise InputError(f"--{name} only applies with {flags}")
    if {"percentiles", "stretch"} <= given:
        raise InputError("--percentiles only applies without --stretch: the statistics of --stretch were computed "
                         "with their own percentiles")


@click.command()
@click.argument("source", metavar="IN", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="COG to write.")
@click.option("--bands", help="1-based bands to keep, in output order, e.g. 3,2,1.")
@click.option("--to-8bit", is_flag=True, help="Per-band percentile stretch to uint8 (sidecar OUT.stretch.json).")
@click.option("--percentiles", default="2,98", show_default=True, help="Low,high percentiles of the stretch.")
@click.option("--stretch", type=click.Path(path_type=Path), help="Reuse a .stretch.json instead of computing.")
@click.option("--dst-crs", help="Target CRS, e.g. EPSG:32631.")
@click.option("--resolution", type=click.FloatRange(min=0, min_open=True), help="Target GSD in CRS units.")
@click.option("--resampling", default="bilinear", show_default=True,
              type=click.Choice(["nearest", "bilinear", "cubic", "average", "lanczos"]))
@click.option("--ortho", is_flag=True, help="Orthorectify with the raster's RPCs.")
@click.option("--dem", type=click.Path(path_type=Path), help="DEM for --ortho.")
@click.option("--height", type=float, help="Constant height above the ellipsoid for --ortho (metres).")
@with_events
def preprocess(source: Path, output: Path, bands: str | None, to_8bit: bool, percentiles: str,
               stretch: Path | None, dst_crs: str | None, resolution: float | None, resampling: str,
               ortho: bool, dem: Path | None, height: float | None) -> None:
    """Compose bands, stretch to 8 bits, reproject/resample or orthorectify IN into a COG, streamed."""
    from aifactory.preprocess.process import PreprocessOptions, preprocess_raster

    _refuse_ignored_options()
    low_high = _numbers(percentiles, "--percentiles", float)
    if len(low_high) != 2:
        raise InputError(f"--percentiles: expected LOW,HIGH, got {percentiles!r}")
    options = PreprocessOptions(bands=_numbers(bands, "--bands") or None, to_8bit=to_8bit,
                                percentiles=(low_high[0], low_high[1]), stretch=stretch, dst_crs=dst_crs,
                                resolution=resolution, ortho=ortho, dem=dem, height=height, resampling=resampling)
    summary = preprocess_raster(source, output, options)
    extra = f", stretch statistics in {summary['stretch']}" if "stretch" in summary else ""
    click.echo(f"wrote {output} ({summary['width']} x {summary['height']} x {summary['bands']} {summary['dtype']}, "
               f"{summary['crs'] or 'pixel space'}){extra}", err=True)
