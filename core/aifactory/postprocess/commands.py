"""CLI of the post-processing stage: ``aifactory postprocess``."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from aifactory.cli import with_events


def _check_outputs(source: Path, output: Path, plot: Path | None) -> None:
    """Refuse, before any work, outputs that could only fail at the end or destroy the input: the input file
    itself (it would be replaced by its own result) or a folder where a file is to be written."""
    from aifactory.io.output_paths import absolute, check_file_output, refuse_inputs_as_output

    refuse_inputs_as_output(output, {"input": source})
    for path in (output, plot):
        if path is not None:
            check_file_output(absolute(path))


@click.command()
@click.argument("source", required=False, type=click.Path(path_type=Path), metavar="IN")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Vector file to write (GeoPackage).")
@click.option("--ops", "ops_file", type=click.Path(path_type=Path), help="Chain file: {ops: [{name: ..., ...}]}.")
@click.option("--layer", help="Layer of IN (default: 'detections' if present, else the first); also the output's.")
@click.option("--plot", type=click.Path(path_type=Path), help="Also write a before/after PNG.")
@click.option("--list", "list_ops", is_flag=True, help="List the ops with their parameters and exit.")
@with_events
def postprocess(source: Path | None, output: Path | None, ops_file: Path | None, layer: str | None,
                plot: Path | None, list_ops: bool) -> None:
    """Apply a chain of vector ops (filters, cleaning, NMS, merging, regularization…) to detections in IN."""
    from aifactory.io.atomic import atomic_path
    from aifactory.io.vector import list_layers, read_vector, write_vector
    from aifactory.postprocess import OPS, apply_chain, load_chain
    from aifactory.postprocess.base import SCORE, score_values
    from aifactory.postprocess.plot import before_after_figure, save_png
    from aifactory.progress import reporter

    if list_ops:
        for line in OPS.describe_lines():
            click.echo(line)
        return
    missing = [flag for flag, value in (("IN", source), ("-o/--output", output), ("--ops", ops_file)) if not value]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)} (or use --list)")
    assert source is not None and output is not None and ops_file is not None
    _check_outputs(source, output, plot)
    chain = load_chain(ops_file)  # every op validated before the data is read
    if layer is None:
        layers = list_layers(source) if source.suffix.lower() != ".csv" else []
        layer = "detections" if "detections" in layers else (layers[0] if layers else None)
    frame = read_vector(source, layer=layer)
    if SCORE in frame.columns:
        score_values(frame, str(source))
    result = apply_chain(frame, chain, str(ops_file))
    # the picture goes to its temporary first: the output is published only once the picture is written too
    with atomic_path(plot) if plot is not None else contextlib.nullcontext() as picture:
        if picture is not None:
            save_png(before_after_figure(frame, result, title=f"{source.name} → {ops_file.name}"), picture)
        write_vector(result, output, layer=layer or "detections")
    reporter().artifact("vector", output)
    if plot is not None:
        reporter().artifact("plot", plot)
    reporter().log(f"{len(frame)} features in, {len(result)} out: {output}")
