"""Command lines of the worker (`python -m aifactory.cli …`), built in one place.

The plugin never imports ``aifactory``: everything it asks of the core goes through these argument lists,
started by a local QProcess, a Processing algorithm's subprocess or a Ray job entrypoint. When a worker
command changes its options, this module (and its test) is the only thing to adjust.

Every function returns the arguments *after* ``python -m aifactory.cli``; :func:`argv` prefixes the
interpreter and :func:`entrypoint` renders a shell line for remote runners.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

CLI_MODULE = "aifactory.cli"
EVENTS = ("--events", "jsonl")
DEFAULT_SWEEP = "score=0.05:0.95:0.05"


def argv(python: str, args: Sequence[str]) -> list[str]:
    """The full local command: ``python -m aifactory.cli ARGS``."""
    return [python, "-m", CLI_MODULE, *args]


def entrypoint(args: Sequence[str], python: str = "python") -> str:
    """The shell line a remote runner (Ray Jobs) executes: the *same* command as locally."""
    return shlex.join(argv(python, args))


def version() -> list[str]:
    """Cheap probe that the interpreter has ``aifactory`` installed (prints ``aifactory, version X``)."""
    return ["--version"]


def synth(output: str, size: str = "512x512", truth: str | None = None, seed: int = 0) -> list[str]:
    args = ["synth", "-o", output, "--size", size, "--seed", str(seed)]
    if truth:
        args += ["--truth", truth]
    return [*args, *EVENTS]


def dataset_preview(config: str) -> list[str]:
    return ["dataset", "preview", config, "--json"]


def dataset_build(config: str, output: str) -> list[str]:
    return ["dataset", "build", config, "-o", output, *EVENTS]


def train(config: str, output: str, ref: str | None = None, tracking_uri: str | None = None) -> list[str]:
    """Train into OUTPUT; ``ref``: with the code of that git branch/tag/commit; ``tracking_uri``: MLflow store."""
    args = ["train", config, "-o", output]
    if ref:
        args += ["--ref", ref]
    if tracking_uri:
        args += ["--tracking-uri", tracking_uri]
    return [*args, *EVENTS]


def predict(model: str, raster: str, output: str, geofence: str | None = None,
            exclude: str | None = None) -> list[str]:
    """Predict inside ``geofence`` polygons (whole raster if none), never inside ``exclude`` polygons."""
    args = ["predict", "--model", model, "--raster", raster, "-o", output]
    if geofence:
        args += ["--geofence", geofence]
    if exclude:
        args += ["--exclude", exclude]
    return [*args, *EVENTS]


def postprocess(source: str, output: str, ops: str) -> list[str]:
    return ["postprocess", source, "-o", output, "--ops", ops, *EVENTS]


def evaluate(pred: str, truth: str, json_out: str) -> list[str]:
    return ["evaluate", "--pred", pred, "--truth", truth, "--json", json_out, *EVENTS]


def rps(pred: str, truth: str, output: str, sweeps: Sequence[str] = (DEFAULT_SWEEP,),
        truth_layer: str | None = None, score_field: str = "score") -> list[str]:
    """``points.csv`` + ``operating_point.json`` in OUTPUT (one ``--sweep`` per swept parameter)."""
    args = ["rps", "--pred", pred, "--truth", truth, *(["--truth-layer", truth_layer] if truth_layer else [])]
    if score_field != "score":
        args += ["--score-field", score_field]
    for sweep in sweeps:
        args += ["--sweep", sweep]
    return [*args, "-o", output, *EVENTS]


def pipeline(config: str, workdir: str | None = None) -> list[str]:
    return ["run", config, *(["-o", workdir] if workdir else []), *EVENTS]


def al_round(config: str) -> list[str]:
    """One active-learning round: wait for tags → retrain → evaluate → pick the next tiles (``al round``)."""
    return ["al", "round", config, *EVENTS]

