"""torch → ONNX for the dense model families, verified against torch before anything is packaged.

Exported families are those whose output is dense, a fixed set of tensors the size of the input (or of
a fixed stride of it): ``segmentation`` (output ``logits``), ``contact`` (``semantic``, ``boundary``,
``contact``) and ``heatmap`` (``heatmap``, ``size``, ``offset``). Box detectors (``detection``,
``instance``: torchvision's Faster/Mask R-CNN, RetinaNet, FCOS, SSDlite) are refused: they return
per-image lists whose length depends on the data (score filtering, NMS, top-k inside the model), which
does not fit one graph with a dynamic batch axis, and the prediction stage does not consume them yet.

The exporter is torch's current one (``torch.export`` based, ``dynamo=True``; opset ≥ 18) with a
dynamic batch axis and the weights inside the one ``.onnx`` file. Normalisation and the softmax stay
outside the graph (their parameters are in ``bundle.json``), so the graph is exactly the trained module.

Verification runs the torch module and ONNX Runtime (CPU) on the same inputs: random normal tiles (a
batch size other than the export's, which exercises the dynamic axis) and real tiles (a sample raster,
or the run's own dataset chips), normalised with the card's statistics. Every output must agree within
``TOLERANCE_REL`` of its largest magnitude (float32 kernels differ in summation order: measured ≈ 2e-6
here); the errors are written into ``bundle.json``. Exporting a module left in training mode, for
instance, makes batch-norm use batch statistics and fails this check by orders of magnitude.
"""

from __future__ import annotations

import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch import nn

from aifactory.bundle.format import InputCheck, OutputCheck, Verification
from aifactory.bundle.runtime import LOGITS, probabilities
from aifactory.errors import InputError
from aifactory.io.raster import open_raster, raster_info, read_valid_mask, read_window, tile_windows
from aifactory.models.card import ModelCard
from aifactory.progress import reporter

DENSE_TASKS = ("segmentation", "contact", "heatmap")
DEFAULT_OPSET = 18
MIN_OPSET = 18
TOLERANCE_REL = 1e-4
EXPORT_BATCH = 2
RANDOM_BATCH = 3
REAL_TILES = 2
SCAN_WINDOWS = 64


class DenseOutputs(nn.Module):
    """The model with its outputs as a tuple (a dict's values in its order): named graph outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out.values()) if isinstance(out, dict) else (out,)


def check_exportable(card: ModelCard, run: str) -> None:
    """Refuse the families :mod:`this module <aifactory.bundle.export>` does not export, saying why."""
    if card.task not in DENSE_TASKS:
        raise InputError(f"{run}: task {card.task!r} cannot be bundled: box detectors return per-image lists "
                         f"whose length depends on the data, which one ONNX graph with a dynamic batch axis "
                         f"does not carry (dense tasks only: {', '.join(DENSE_TASKS)})")


def output_names(model: nn.Module, example: torch.Tensor) -> list[str]:
    """``["logits"]`` for a tensor output, the dict's keys for a multi-head model."""
    with torch.inference_mode():
        out = model(example)
    return list(out) if isinstance(out, dict) else [LOGITS]


def export_onnx(model: nn.Module, card: ModelCard, path: Path, opset: int = DEFAULT_OPSET) -> list[str]:
    """Write ``model`` (eval mode, float32, CPU) to ``path``; returns the output names."""
    if opset < MIN_OPSET:
        raise InputError(f"--opset {opset}: the torch.export-based exporter writes opset {MIN_OPSET} or newer")
    model = model.float().cpu().eval()
    example = torch.randn(EXPORT_BATCH, card.in_channels, card.tile_size, card.tile_size)
    names = output_names(model, example)
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter about its own internals
            torch.onnx.export(DenseOutputs(model).eval(), (example,), str(path), dynamo=True, external_data=False,
                              input_names=["input"], output_names=names, opset_version=opset,
                              dynamic_shapes=({0: batch},), verbose=False)
    except Exception as exc:  # torch.export raises many types for unsupported constructs
        raise InputError(f"ONNX export of {card.architecture!r} failed: {str(exc).strip().splitlines()[0]}") from None
    if not path.is_file():
        raise InputError(f"ONNX export of {card.architecture!r} wrote no file")
    return names


def normalise(data: np.ndarray, card: ModelCard) -> np.ndarray:
    mean = np.asarray(card.normalization.mean, dtype="float32")[None, :, None, None]
    std = np.asarray(card.normalization.std, dtype="float32")[None, :, None, None]
    return ((data.astype("float32") - mean) / std).astype("float32")


def _mostly_valid(ds: Any, window: Window) -> bool:
    """A tile worth verifying on: at least half of its pixels valid (nodata edges verify nothing)."""
    return bool(read_valid_mask(ds, window).mean() >= 0.5)


def sample_tiles(raster: Path, card: ModelCard, count: int = REAL_TILES) -> np.ndarray:
    """Up to ``count`` tiles of ``raster`` (the card's bands) that are mostly valid pixels, raw values.

    A raster at another GSD than the model's still verifies the export (the same tiles go to torch and ONNX
    Runtime), but on tiles unlike those the model will see: that gets a warning, not a refusal."""
    from aifactory.prediction.source import GSD_TOLERANCE, raster_gsd_m

    gsd = raster_gsd_m(raster_info(raster))
    if card.gsd is not None and gsd is not None and abs(card.gsd / gsd - 1.0) > GSD_TOLERANCE:
        reporter().warning(f"{raster}: GSD {gsd:.3g} m differs from the model's {card.gsd:.3g} m: the export is "
                           "verified on tiles unlike those the model will see")
    tiles = []
    with open_raster(raster) as ds:
        if max(card.bands) > ds.count:
            raise InputError(f"{raster}: has {ds.count} band(s) but the model reads bands {card.bands}")
        for window in tile_windows(ds.width, ds.height, card.tile_size)[:SCAN_WINDOWS]:
            if _mostly_valid(ds, window):
                tiles.append(read_window(ds, window, card.bands))
            if len(tiles) == count:
                break
    if not tiles:
        raise InputError(f"{raster}: no tile with valid pixels to verify the ONNX export on")
    return np.stack(tiles)


def dataset_tiles(run_dir: Path, card: ModelCard, count: int = REAL_TILES) -> tuple[np.ndarray, str] | None:
    """Up to ``count`` mostly valid chips of the run's own dataset (validation first), or None when it is not here
    or has none."""
    from aifactory.config import load_yaml
    from aifactory.datasets.format import read_chips

    config = run_dir / "config.yaml"
    dataset = load_yaml(config).get("dataset") if config.is_file() else None
    if not dataset or not (Path(dataset) / "chips.csv").is_file():
        return None
    chips = read_chips(dataset)
    order = {"val": 0, "test": 1, "train": 2}
    chips = chips.sort_values("split", key=lambda s: s.map(order), kind="stable").head(SCAN_WINDOWS)
    tiles = []
    window = Window(0, 0, card.tile_size, card.tile_size)
    for image in chips["image"]:
        with open_raster(Path(dataset) / image) as ds:
            if _mostly_valid(ds, window):
                tiles.append(read_window(ds, window, card.bands))
        if len(tiles) == count:
            break
    return (np.stack(tiles), f"dataset {dataset}") if tiles else None


def compare(model: nn.Module, session: object, x: np.ndarray, names: list[str], source: str) -> InputCheck:
    """Errors of ONNX Runtime against torch on the normalised batch ``x``."""
    with torch.inference_mode():
        expected = [t.numpy() for t in DenseOutputs(model).eval()(torch.from_numpy(x))]
    got = session.run(names, {"input": x})  # type: ignore[attr-defined]
    checks, prob_error = [], None
    for name, ref, out in zip(names, expected, got, strict=True):
        error = float(np.abs(out - ref).max())
        checks.append(OutputCheck(output=name, max_abs=error, max_rel=error / max(float(np.abs(ref).max()), 1e-12)))
        if name == LOGITS:
            prob_error = float(np.abs(probabilities(out) - probabilities(ref)).max())
    return InputCheck(source=source, tiles=len(x), outputs=checks, prob_max_abs=prob_error)


def verify(model: nn.Module, onnx_path: Path, names: list[str], card: ModelCard, real: np.ndarray,
           real_source: str) -> Verification:
    """Compare ONNX Runtime with torch on random and on real tiles; outside the tolerance is an error."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model = model.float().cpu().eval()
    generator = np.random.default_rng(0)
    noise = generator.standard_normal((RANDOM_BATCH, card.in_channels, card.tile_size, card.tile_size))
    result = Verification(tolerance_rel=TOLERANCE_REL, torch=torch.__version__, onnxruntime=version("onnxruntime"),
                          random=compare(model, session, noise.astype("float32"), names, "random"),
                          real=compare(model, session, normalise(real, card), names, real_source))
    for check in (result.random, result.real):
        for output in check.outputs:
            if output.max_rel > TOLERANCE_REL:
                raise InputError(f"ONNX export does not match torch on {check.source} input: output "
                                 f"{output.output!r} is off by {output.max_rel:.2e} of its range "
                                 f"(tolerance {TOLERANCE_REL:.0e})")
    worst = max(o.max_rel for check in (result.random, result.real) for o in check.outputs)
    reporter().log(f"ONNX export verified on random and real tiles: max relative error {worst:.1e}")
    return result
