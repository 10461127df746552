"""B3 against a peer: ``predict()`` and a peer-style prediction loop on the same scene, model and batch size.

BENCHMARKS.md's peer baseline: a grid sampler feeding a U-Net (resnet18, 4 bands, tile 512, stride 448,
batch 8) into a whole-scene accumulator. :func:`peer_predict` does what such a loop does, written here with
the same libraries (rasterio, torch, numpy) rather than installing TorchGeo and Lightning for a benchmark:
every tile read on its own (boundless windows, in the main thread, while the model waits), the model as
trained (float32, contiguous NCHW), probabilities added into float32 sums and a uint8 count covering the
whole scene (5 bytes a pixel with one foreground class, ~9 here with two), then the scores written and
vectorized in one go (``rasterio.features.shapes`` on each class's mask, written with geopandas).
``peer + our forward`` is the same loop with the model exactly as predict runs it (batch norms folded,
channels-last, bf16 where :func:`~aifactory.prediction.runtime.bf16_supported` says so): what is left of the
difference is the pipeline.

Each run is a fresh interpreter (its peak RSS is its own, ``VmHWM``); runs alternate, medians reported;
wall time counts the prediction call (loading the model, reading, the model, writing both outputs), not the
interpreter's imports nor the first prediction's set-up (a 2048² prediction runs first, as in ``bench_predict``).
Each run then times the bare forward of its model, as it ran, on as many tiles (predict's
two passes as in ``bench_predict``; the peer's one batch at a time): η = that / the prediction, each loop against
its own forward (BENCHMARKS.md's 0.9–1.0 for the peer is against its float32 forward). The peak RSS covers
the whole interpreter's run (warm-up, prediction, forward). ``python -m bench.bench_peer``
(4096²), ``--full`` 8192² (the peer's memory grows with the scene; at 20000² its accumulator alone would be
3.6 GB).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.bench_predict import FULL_UNET, WORK, run_dir, scene
from bench.common import peak_rss_mb, row

if TYPE_CHECKING:
    from aifactory.models.card import ModelCard
    from torch import nn

VARIANTS = ("ours", "peer", "peer + our forward")


def offsets(length: int, tile: int, stride: int) -> list[int]:
    """Window starts along one axis, as a grid sampler makes them: every ``stride``, the last flush with the end."""
    starts = list(range(0, max(length - tile, 0) + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


@dataclass
class PeerModel:
    """The model as the peer loop runs it: as trained (float32, NCHW), or exactly as predict runs it."""

    module: nn.Module
    card: ModelCard
    bf16: bool
    channels_last: bool

    @classmethod
    def load(cls, run: Path, our_forward: bool) -> PeerModel:
        import torch
        from aifactory.models.card import load_run_model
        from aifactory.prediction.runtime import bf16_supported, inference_module

        module, card = load_run_model(run)
        if our_forward:
            module = inference_module(module, card).to(memory_format=torch.channels_last)
        return cls(module, card, our_forward and bf16_supported(torch.device("cpu")), our_forward)

    def __call__(self, x: Any) -> Any:
        """Class probabilities of a normalised (N, bands, T, T) float32 batch, as a numpy array."""
        import torch

        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return torch.softmax(self.module(x).float(), dim=1).numpy()

    def forward_seconds(self, tiles: int, batch: int) -> float:
        """The bare forward of ``tiles`` random tiles in batches of ``batch`` (after one batch of warm-up)."""
        import torch

        x = torch.randn(batch, len(self.card.bands), self.card.tile_size, self.card.tile_size)
        self(x)
        start = time.perf_counter()
        for first in range(0, tiles, batch):
            self(x[:min(batch, tiles - first)])
        return time.perf_counter() - start


def peer_predict(run: Path, raster: Path, out_dir: Path, batch: int, our_forward: bool,
                 stride: int = 448) -> tuple[int, int]:
    """The peer-style loop (module docstring); returns the tiles predicted and the detections written."""
    import geopandas as gpd
    import numpy as np
    import rasterio
    import shapely
    import torch
    from rasterio.features import shapes
    from rasterio.windows import Window

    model = PeerModel.load(run, our_forward)
    card = model.card
    mean = torch.tensor(card.normalization.mean)[None, :, None, None]
    std = torch.tensor(card.normalization.std)[None, :, None, None]
    tile, classes = card.tile_size, len(card.classes) - 1
    out_dir.mkdir(parents=True, exist_ok=True)
    with rasterio.open(raster) as ds:
        height, width, profile = ds.height, ds.width, ds.profile
        sums = np.zeros((classes, height, width), dtype="float32")
        counts = np.zeros((height, width), dtype="uint8")
        windows = [(r, c) for r in offsets(height, tile, stride) for c in offsets(width, tile, stride)]
        for start in range(0, len(windows), batch):
            group = windows[start:start + batch]
            pixels = np.stack([ds.read(window=Window(c, r, tile, tile), boundless=True, fill_value=0)
                               for r, c in group]).astype("float32")
            probabilities = model((torch.from_numpy(pixels) - mean) / std)
            for (r, c), probability in zip(group, probabilities, strict=True):
                h, w = min(tile, height - r), min(tile, width - c)
                sums[:, r:r + h, c:c + w] += probability[1:, :h, :w]
                counts[r:r + h, c:c + w] += 1
    scores = np.round(sums / np.maximum(counts, 1) * 255).astype("uint8")
    del sums, counts
    profile.update(count=classes, dtype="uint8", nodata=None, compress="deflate", tiled=True, predictor=1)
    with rasterio.open(out_dir / "scores.tif", "w", **profile) as dst:
        dst.write(scores)
    geometries, names = [], []
    for index, name in enumerate(card.classes[1:]):
        mask = scores[index] >= 128
        for geometry, _ in shapes(mask.astype("uint8"), mask=mask, transform=profile["transform"]):
            geometries.append(shapely.geometry.shape(geometry))
            names.append(name)
    frame = gpd.GeoDataFrame({"class": names}, geometry=geometries, crs=profile["crs"])
    frame.to_file(out_dir / "detections.gpkg", driver="GPKG")
    return len(windows), len(frame)


def child(variant: str, raster: Path, batch: int) -> str:
    """Code run in a fresh interpreter: a warm-up prediction of a 2048² scene, the prediction timed, then the bare
    forward of the model as it ran on as many tiles (predict's: :func:`bench.bench_predict.forward_only`, two
    passes on the CPU); prints the seconds of both and the detections as JSON."""
    out = WORK / f"out-peer-{VARIANTS.index(variant)}"
    run, warm_up = run_dir("run-full", FULL_UNET, 512), scene(2048)
    if variant == "ours":
        code = ("from aifactory.prediction import predict\n"
                "from bench.bench_predict import forward_only\n"
                "def once(raster, out):\n"
                f"    return predict([{str(run)!r}], raster, out, batch_size={batch})\n"
                "def forward(r):\n"
                f"    return forward_only(Path({str(run)!r}), r.tiles_predicted, {batch}, 512, r.precision == 'bf16', "
                "passes=r.passes)\n"
                "def detections(r):\n    return r.detections_count\n")
    else:
        our_forward = variant != "peer"
        code = ("from bench.bench_peer import PeerModel, peer_predict\n"
                "def once(raster, out):\n"
                f"    return peer_predict(Path({str(run)!r}), Path(raster), Path(out), {batch}, {our_forward})\n"
                "def forward(r):\n"
                f"    return PeerModel.load(Path({str(run)!r}), {our_forward}).forward_seconds(r[0], {batch})\n"
                "def detections(r):\n    return r[1]\n")
    return ("import time, json\nfrom pathlib import Path\n" + code +
            f"once({str(warm_up)!r}, {str(out) + '-warm-up'!r})\n"
            f"start = time.perf_counter()\nr = once({str(raster)!r}, {str(out)!r})\n"
            "seconds = time.perf_counter() - start\n"
            "print(json.dumps({'seconds': seconds, 'forward': forward(r), 'detections': detections(r)}))\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="an 8192² scene")
    args = parser.parse_args(argv)
    size = 8192 if args.full else args.size
    raster = scene(size)
    run_dir("run-full", FULL_UNET, 512)  # trained once, outside the timed runs
    seconds: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    etas: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    peaks: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    detections: dict[str, int] = {}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            peak, data = peak_rss_mb(child(variant, raster, args.batch_size))
            seconds[variant].append(data["seconds"])
            etas[variant].append(data["forward"] / data["seconds"])
            peaks[variant].append(peak)
            detections[variant] = data["detections"]
    ours = statistics.median(seconds["ours"])
    ours_peak = statistics.median(peaks["ours"])
    for variant in VARIANTS:
        taken, peak = statistics.median(seconds[variant]), statistics.median(peaks[variant])
        row(f"B3 {variant}, {size}²", f"{size ** 2 / 1e6 / taken:.2f} Mpx/s",
            f"{taken:.1f} s, peak RSS {peak:.0f} MB, {detections[variant]} detections; runs: "
            + ", ".join(f"{s:.1f}" for s in seconds[variant]) + " s")
        row(f"B3 {variant}, η = its bare forward / it", f"{statistics.median(etas[variant]):.3f}",
            "runs: " + ", ".join(f"{eta:.3f}" for eta in etas[variant]))
        if variant != "ours":
            row(f"B3 ours against {variant}", f"{taken / ours:.2f}× faster",
                f"peak RSS {ours_peak / peak:.2f}× theirs")


if __name__ == "__main__":
    main()
