"""CLI of the post-processing stage: ``aifactory postprocess``."""

from __future__ import annotations

from pathlib import Path

import click

from aifactory.cli import with_events


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
    from aifactory.io.vector import list_layers, read_vector, write_vector
    from aifactory.postprocess import OPS, apply_chain, load_chain
    from aifactory.progress import reporter

    if list_ops:
        for line in OPS.describe_lines():
            click.echo(line)
        return
    missing = [flag for flag, value in (("IN", source), ("-o/--output", output), ("--ops", ops_file)) if not value]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)} (or use --list)")
    assert source is not None and output is not None and ops_file is not None
    chain = load_chain(ops_file)  # every op validated before the data is read
    if layer is None:
        layers = list_layers(source) if source.suffix.lower() != ".csv" else []
        layer = "detections" if "detections" in layers else (layers[0] if layers else None)
    frame = read_vector(source, layer=layer)
    result = apply_chain(frame, chain, str(ops_file))
    write_vector(result, output, layer=layer or "detections")
    reporter().artifact("vector", output)
    if plot is not None:
        from aifactory.postprocess.plot import plot_before_after

        reporter().artifact("plot", plot_before_after(frame, result, plot, title=f"{source.name} → {ops_file.name}"))
    reporter().log(f"{len(frame)} features in, {len(result)} out: {output}")
