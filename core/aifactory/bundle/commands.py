"""CLI of deployment: ``aifactory bundle`` (bundle stage) and ``aifactory registry`` (the MLflow model
registry of :mod:`aifactory.tracking.registry`, kept here with the command that makes what it registers)."""

from __future__ import annotations

from pathlib import Path

import click

from aifactory.cli import echo_json, with_events


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path), metavar="RUN_DIR")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Bundle zip to write.")
@click.option("--operating-point", type=click.Path(path_type=Path),
              help="operating_point.json from `aifactory rps`: applied by predictions with the bundle.")
@click.option("--postprocess", type=click.Path(path_type=Path),
              help="Post-processing chain YAML: applied (before the operating point) by predictions.")
@click.option("--report", type=click.Path(path_type=Path), help="Evaluation report folder to include.")
@click.option("--docker", type=click.Path(path_type=Path),
              help="Also extract the bundle here: a ready `docker build` context.")
@click.option("--sample", type=click.Path(path_type=Path),
              help="Raster whose tiles verify the export [default: the run's dataset chips].")
@click.option("--opset", default=18, show_default=True, type=click.IntRange(18, 23), help="ONNX opset.")
@click.option("--overlap", type=click.IntRange(0), help="Tile overlap for predictions, pixels [tile/8].")
@with_events
def bundle(run_dir: Path, out: Path, operating_point: Path | None, postprocess: Path | None, report: Path | None,
           docker: Path | None, sample: Path | None, opset: int, overlap: int | None) -> None:
    """Export RUN_DIR's model to ONNX (verified against torch) and package it with everything to deploy it."""
    from aifactory.bundle.build import build_bundle

    meta = build_bundle(run_dir, out, operating_point=operating_point, postprocess=postprocess, report=report,
                        docker=docker, sample=sample, opset=opset, overlap=overlap)
    worst = max(o.max_rel for c in (meta.verification.random, meta.verification.real) for o in c.outputs)
    click.echo(f"bundled {meta.run} ({meta.model.architecture}, opset {meta.model.opset}; ONNX matches torch "
               f"within {worst:.1e} relative) -> {out}", err=True)


TRACKING_URI = click.option("--tracking-uri", metavar="URI",
                            help="MLflow store [MLFLOW_TRACKING_URI, else sqlite:///./mlruns.db].")


@click.group()
def registry() -> None:
    """The MLflow model registry: register runs and bundles, move aliases, resolve models:/NAME@ALIAS."""


@registry.command("register")
@click.argument("path", type=click.Path(path_type=Path), metavar="RUN_OR_BUNDLE")
@click.option("--name", required=True, help="Registered model name.")
@click.option("--alias", help="Alias to point at the new version (e.g. production).")
@TRACKING_URI
@with_events
def register(path: Path, name: str, alias: str | None, tracking_uri: str | None) -> None:
    """Register a bundle zip or a run directory as a new version of NAME."""
    from aifactory.tracking.registry import register_model

    version = register_model(path, name, alias=alias, tracking_uri=tracking_uri)
    aliases = f" @{', @'.join(version.aliases)}" if version.aliases else ""
    click.echo(f"registered {version.kind} {path} as {name} version {version.version}{aliases}", err=True)


@registry.command("list")
@TRACKING_URI
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(tracking_uri: str | None, as_json: bool) -> None:
    """Every version of every registered model."""
    from aifactory.tracking.registry import list_models

    versions = list_models(tracking_uri=tracking_uri)
    if as_json:
        echo_json([v.to_dict() for v in versions])
        return
    for v in versions:
        click.echo(f"{v.name}\t{v.version}\t{v.kind}\t{','.join(v.aliases) or '-'}\t{v.source}")


@registry.command("alias")
@click.argument("name")
@click.argument("version", type=click.IntRange(1))
@click.argument("alias")
@TRACKING_URI
def alias_command(name: str, version: int, alias: str, tracking_uri: str | None) -> None:
    """Point ALIAS of NAME at VERSION."""
    from aifactory.tracking.registry import set_alias

    set_alias(name, version, alias, tracking_uri=tracking_uri)
    click.echo(f"{name}@{alias} -> version {version}", err=True)


@registry.command("resolve")
@click.argument("uri", metavar="models:/NAME@ALIAS")
@TRACKING_URI
def resolve_command(uri: str, tracking_uri: str | None) -> None:
    """Print the local path of a registered model (what `predict --model` takes)."""
    from aifactory.tracking.registry import resolve_model_uri

    click.echo(str(resolve_model_uri(uri, tracking_uri=tracking_uri)))
