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
interpreter's imports. ``python -m bench.bench_peer`` (4096²), ``--full`` 8192² (the peer's memory grows
with the scene; at 20000² its accumulator alone would be 3.6 GB).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench.bench_predict import FULL_UNET, WORK, run_dir, scene
from bench.common import peak_rss_mb, row

VARIANTS = ("ours", "peer", "peer + our forward")


def offsets(length: int, tile: int, stride: int) -> list[int]:
    """Window starts along one axis, as a grid sampler makes them: every ``stride``, the last flush with the end."""
    starts = list(range(0, max(length - tile, 0) + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def peer_predict(run: Path, raster: Path, out_dir: Path, batch: int, our_forward: bool,
                 stride: int = 448) -> int:
    """The peer-style loop (module docstring); returns the number of detections written."""
    import geopandas as gpd
    import numpy as np
    import rasterio
    import shapely
    import torch
    from aifactory.models.card import load_run_model
    from aifactory.prediction.runtime import bf16_supported, inference_module
    from rasterio.features import shapes
    from rasterio.windows import Window

    model, card = load_run_model(run)
    bf16 = our_forward and bf16_supported(torch.device("cpu"))
    if our_forward:
        model = inference_module(model, card).to(memory_format=torch.channels_last)
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
            x = (torch.from_numpy(pixels) - mean) / std
            if our_forward:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                probabilities = torch.softmax(model(x).float(), dim=1).numpy()
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
    return len(frame)


def child(variant: str, raster: Path, batch: int) -> str:
    """Code run in a fresh interpreter: one prediction, its seconds and detections as JSON."""
    out = WORK / f"out-peer-{VARIANTS.index(variant)}"
    run = run_dir("run-full", FULL_UNET, 512)
    if variant == "ours":
        call = (f"from aifactory.prediction import predict\n"
                f"count = predict([{str(run)!r}], {str(raster)!r}, {str(out)!r}, batch_size={batch})"
                ".detections_count\n")
    else:
        call = (f"from bench.bench_peer import peer_predict\nfrom pathlib import Path\n"
                f"count = peer_predict(Path({str(run)!r}), Path({str(raster)!r}), Path({str(out)!r}), {batch}, "
                f"{variant != 'peer'})\n")
    return ("import time, json\n_start = time.perf_counter()\n" + call +
            "print(json.dumps({'seconds': time.perf_counter() - _start, 'detections': count}))\n")


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
    peaks: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    detections: dict[str, int] = {}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            peak, data = peak_rss_mb(child(variant, raster, args.batch_size))
            seconds[variant].append(data["seconds"])
            peaks[variant].append(peak)
            detections[variant] = data["detections"]
    ours = statistics.median(seconds["ours"])
    ours_peak = statistics.median(peaks["ours"])
    for variant in VARIANTS:
        taken, peak = statistics.median(seconds[variant]), statistics.median(peaks[variant])
        row(f"B3 {variant}, {size}²", f"{size ** 2 / 1e6 / taken:.2f} Mpx/s",
            f"{taken:.1f} s, peak RSS {peak:.0f} MB, {detections[variant]} detections; runs: "
            + ", ".join(f"{s:.1f}" for s in seconds[variant]) + " s")
        if variant != "ours":
            row(f"B3 ours against {variant}", f"{taken / ours:.2f}× faster",
                f"peak RSS {ours_peak / peak:.2f}× theirs")


if __name__ == "__main__":
    main()
