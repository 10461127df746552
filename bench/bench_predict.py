"""B2/B3 prediction: efficiency η = bare forward time / end-to-end predict time, and peak RSS vs raster size.

η (BENCHMARKS.md B3): ``predict()`` on a synthetic 4-band uint16 COG (read → model → blend → scores COG
→ vectorize → GeoPackage) against the model alone on random tensors already in memory, same tile count,
tile size, batch size, precision and memory format, warmed up. Each bare forward runs between two
predicts and is compared with their mean (:func:`bench.common.bracketed`): a full 20000² predict takes
minutes, over which this shared host's speed drifts (one forward and one predict measured minutes apart
gave η from 0.80 to 0.96 on the same code); the median over repeats is reported, with each repeat's η.
The peer baseline's setting: U-Net resnet18, 4 bands, tile 512, overlap 64 (stride 448), batch 8.
Also printed: what channels_last and bf16 autocast do to the forward on this machine.

Peak RSS: ``predict()`` of N × N scenes, each in a fresh interpreter (scene generated beforehand in its
own process), with a lighter U-Net (resnet18 cut to 3 stages) so that 16k² runs in minutes on 2 CPUs;
the goal is a flat curve, ratio largest/smallest ≤ 1.10.

Stages (``--stages``): the same pipeline (its accumulator and ``RowWriter``) run sequentially in one thread
with a timer per stage (read, forward, blend, uint8 scores COG writes, vectorize, closing the outputs,
preview), as seconds per 100 tiles: what each stage costs on the CPU that the reader and writer threads
share with the model. ``--threads``: where the CPU of one predict goes, by thread and idle by phase
(:mod:`bench.predict_cpu`).

``python -m bench.bench_predict`` (4k² η, RSS at 4k², 8k², 16k²); ``--full`` uses 20k² for η (the size the
goal is set at: fixed costs such as loading the model, the bf16 check and the preview weigh ~5 % at 4k²),
``--full --repeats 2 --skip-rss`` (three predicts, two forwards) took 12–19 minutes on 2 CPUs
(warmed up on a 2048² scene).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import bracketed, peak_rss_mb, row
from bench.predict_cpu import predict_cpu_use

if TYPE_CHECKING:  # torch loads only once predict's process settings are made (main)
    import torch

WORK = Path(__file__).resolve().parents[1] / "bench_output" / "predict"
FULL_UNET = {"encoder": "resnet18", "encoder_depth": 5}
LIGHT_UNET = {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16, 8]}


def scene(size: int) -> Path:
    """A cached N × N synthetic scene, generated in its own process (keeps the caller's RSS clean)."""
    path = WORK / f"scene-{size}.tif"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        code = ("from aifactory.io.synthetic import SceneSpec, generate_scene\n"
                f"generate_scene(SceneSpec(width={size}, height={size}, density=0.5, seed=1), {str(path)!r})")
        subprocess.run([sys.executable, "-c", code], check=True)
    return path


def train(card: object, steps: int = 40) -> dict[str, torch.Tensor]:
    """A few dozen steps on a small synthetic scene, so outputs look like a real model's (timing and
    memory of vectorization depend on how many objects a model finds: random weights find noise)."""
    import numpy as np
    import rasterio
    import torch
    from aifactory.io.synthetic import SceneSpec, generate_scene
    from aifactory.models.card import build_model
    from rasterio.features import rasterize

    raster = WORK / "train.tif"
    truth = generate_scene(SceneSpec(width=384, height=384, seed=11, density=1.6), raster)
    with rasterio.open(raster) as ds:
        image = torch.from_numpy((ds.read().astype("float32") - 4000.0) / 2500.0)
        mask = np.zeros((384, 384), dtype="int64")
        for index, name in enumerate(("building", "vegetation/tree"), start=1):
            geoms = truth.geometry[truth["class"] == name]
            mask[rasterize(geoms, out_shape=(384, 384), transform=ds.transform) > 0] = index
    target = torch.from_numpy(mask)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(card)  # type: ignore[arg-type]
    optimizer = torch.optim.Adam(model.parameters(), 5e-3)
    for _ in range(steps):
        rows, cols = rng.integers(0, 384 - 96, 8), rng.integers(0, 384 - 96, 8)
        x = torch.stack([image[:, r:r + 96, c:c + 96] for r, c in zip(rows, cols, strict=True)])
        y = torch.stack([target[r:r + 96, c:c + 96] for r, c in zip(rows, cols, strict=True)])
        loss = torch.nn.functional.cross_entropy(model(x), y, weight=torch.tensor([0.1, 1.0, 1.0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.state_dict()


def run_dir(name: str, params: dict[str, object], tile: int) -> Path:
    """A run directory with a briefly trained U-Net (cached in bench_output/)."""
    from aifactory.datasets.format import Normalization
    from aifactory.models.card import ModelCard, write_card

    path = WORK / name
    if not (path / "model.json").exists():
        card = ModelCard(architecture="unet", params=params, in_channels=4, num_classes=3,
                         classes=["background", "building", "vegetation/tree"], bands=[1, 2, 3, 4],
                         normalization=Normalization(mean=[4000.0] * 4, std=[2500.0] * 4), tile_size=tile, gsd=0.5)
        path.mkdir(parents=True, exist_ok=True)
        import torch

        torch.save(train(card), path / "model.pt")
        write_card(card, path)
    return path


def forward_only(run: Path, tiles: int, batch: int, tile: int, bf16: bool, channels_last: bool = True,
                 passes: int = 1, cpu: list[float] | None = None, device: str = "cpu") -> float:
    """Load the model as predict does, warm it up and run ``tiles`` tiles; returns the seconds of those passes
    (η times the whole call, as it times the whole of predict). ``passes`` > 1: as predict runs on the CPU
    (:data:`aifactory.prediction.runtime.CPU_PASSES`), that many threads share the batches of ``batch / passes``
    tiles, each with its share of torch's threads. Exactly ``tiles`` tiles, in full batches but one: the bare
    forward is the model at its best, and predict's partial batches (batches never span tile rows) count against
    predict (rounding up to whole batches per thread ran 88 tiles for 4096²'s 81, overstating η by 8 %).
    ``cpu``: each pass thread appends the CPU seconds it used (its own clock, so nothing samples the forward).
    ``device``: where predict ran the model (``PredictionResult.device``); on a GPU the tiles already lie in its
    memory and the clock stops once the GPU is done (predict's copies to and from the GPU count against it)."""
    import threading

    import torch
    from aifactory.models.card import load_run_model
    from aifactory.prediction.runtime import inference_module

    model, card = load_run_model(run)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    target = torch.device(device)
    model = inference_module(model, card).to(target).to(memory_format=fmt)  # the model exactly as predict runs it
    size = -(-batch // passes)
    x = torch.randn(size, 4, tile, tile, device=target).contiguous(memory_format=fmt)

    full, rest = divmod(tiles, size)
    batches = [size] * full + ([rest] if rest else [])

    def work(sizes: list[int], used: list[float] | None = None) -> None:
        start = time.thread_time()
        with torch.inference_mode(), torch.autocast(target.type, dtype=torch.bfloat16, enabled=bf16):
            for count in sizes:
                torch.softmax(model(x[:count]).float(), dim=1)
        if target.type == "cuda":
            torch.cuda.synchronize(target)
        if used is not None:
            used.append(time.thread_time() - start)

    work([size])  # warm-up
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // passes))
    try:
        start = time.perf_counter()
        workers = [threading.Thread(target=work, args=(batches[index::passes], cpu)) for index in range(passes)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


def forward_variants(run: Path, batch: int, tile: int, device: str = "cpu") -> None:
    """Seconds per batch of the forward in NCHW fp32, channels_last fp32, channels_last bf16 (on ``device``;
    on a GPU 10 batches a measure, one being too short to time)."""
    import torch
    from aifactory.prediction.runtime import bf16_supported

    variants = {"NCHW fp32": (False, False), "channels_last fp32": (False, True)}
    if bf16_supported(torch.device(device)):
        variants["channels_last bf16"] = (True, True)
    tiles = batch * (10 if device.startswith("cuda") else 1)
    seconds = {}
    for name, (bf16, cl) in variants.items():
        seconds[name] = statistics.median(forward_only(run, tiles, batch, tile, bf16, cl, device=device)
                                          for _ in range(3))
    base = seconds["NCHW fp32"]
    for name, value in seconds.items():
        row(f"forward {name}", f"{base / value:.2f}×",
            "speed vs NCHW fp32 (one batch on the CPU, ten on a GPU; median of 3)")


def stages(run: Path, raster: Path, batch: int) -> None:
    """Seconds per stage per 100 tiles of a sequential replica of predict (see the module docstring)."""
    from collections import Counter

    import numpy as np
    from aifactory.prediction.blending import RowBandAccumulator, tile_weights
    from aifactory.prediction.detections import DetectionWriter
    from aifactory.prediction.predict import RowWriter, label_mode_options, scores_writer
    from aifactory.prediction.preview import write_preview
    from aifactory.prediction.rows import PredictSpec, RowResult, open_prediction
    from aifactory.prediction.source import Batch, ReadStats, iter_batches
    from aifactory.prediction.vectorize import Detections, StreamingVectorizer

    seconds: Counter[str] = Counter()
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        seconds[name] += now - clock[0]
        clock[0] = now

    out = WORK / "out-stages"
    stats = ReadStats()
    with open_prediction(PredictSpec((str(run),), str(raster), batch_size=batch)) as job:
        width, grid, classes, window = job.ds.width, job.grid, job.classes, job.window
        accumulator = RowBandAccumulator(grid, len(classes))
        vectorizer = StreamingVectorizer(width, score_floor=0.1, **label_mode_options(job.card.extra, classes, 2.0))
        feed = vectorizer.feed

        def timed_feed(row0: int, scores: np.ndarray, valid: np.ndarray) -> Detections:
            lap("scores COG writes")  # RowWriter writes each piece into the COG, then vectorizes it
            found = feed(row0, scores, valid)
            lap("vectorize")
            return found

        vectorizer.feed = timed_feed  # type: ignore[method-assign]
        with scores_writer(out / "scores.tif", job.ds, classes) as scores_out, \
                DetectionWriter(out / "detections.gpkg", classes, job.ds.transform, job.ds.crs, "bench",
                                grid) as detections_out:
            writer = RowWriter(scores_out, detections_out, job.fence, vectorizer, None)
            clock[0] = time.perf_counter()
            for item in iter_batches(job.ds, grid, job.source.bands, job.fence, batch, stats):
                lap("read")
                if isinstance(item, Batch):
                    scores = job.source(item.data, item.valid, job.channels)
                    item.release()
                    lap("forward (normalise, model, softmax)")
                    for index, (tile, valid) in enumerate(zip(item.tiles, item.valid, strict=True)):
                        accumulator.add(tile, scores[index], tile_weights(window, valid))
                    lap("blend + uint8")
                    continue
                top, values, predicted = accumulator.finish_row()
                lap("blend + uint8")
                writer(RowResult(top, values, predicted))
                lap("vectorize")  # the last piece's detections going to the GeoPackage
            detections_out.add(vectorizer.finish())
            lap("vectorize")
        lap("close (COG conversion, GeoPackage)")
    write_preview(out / "scores.tif", out / "preview.png", classes)
    lap("preview")
    total = sum(seconds.values())
    for name, value in seconds.most_common():
        row(f"stage {name}", f"{100 * value / stats.tiles_predicted:.2f} s",
            f"per 100 tiles, {100 * value / total:.1f} % of {total:.1f} s ({stats.tiles_predicted} tiles, sequential)")


def child(size: int, tile: int, batch: int) -> str:
    """Code run in a fresh interpreter for the RSS measurement."""
    out = WORK / f"out-rss-{size}"
    return ("from aifactory.prediction import predict\n"
            f"r = predict([{str(run_dir('run-light', LIGHT_UNET, tile))!r}], {str(scene(size))!r}, {str(out)!r}, "
            f"batch_size={batch}, precision='fp32')\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096, help="side of the η raster in pixels")
    parser.add_argument("--rss-sizes", default="4096,8192,16384", help="comma-separated sides for peak RSS")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-eta", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--full", action="store_true", help="η on a 20000² scene")
    parser.add_argument("--stages", action="store_true", help="also time each stage, sequentially")
    parser.add_argument("--threads", action="store_true",
                        help="also show where one predict's CPU goes, by thread and idle by phase")
    parser.add_argument("--device", default="auto",
                        help="where predict runs the model: auto, cpu or cuda (cpu on a GPU machine: η with its cores)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.full:
        args.size = 20_000
    from aifactory.prediction import predict
    from aifactory.prediction.predict import process_settings

    process_settings()  # predict's own, made before torch loads: the model alone runs under them too

    if not args.skip_eta:
        run = run_dir("run-full", FULL_UNET, args.tile)
        raster = scene(args.size)
        results = []

        def end_to_end_once() -> None:
            results.append(predict([run], raster, WORK / "out-eta", batch_size=args.batch_size, device=args.device))

        forward_cpu: list[float] = []  # CPU seconds of the last bare forward's passes

        def forward_once() -> None:  # the same tile count and precision as the predict just before
            forward_cpu.clear()
            forward_only(run, results[-1].tiles_predicted, args.batch_size, args.tile, results[-1].precision == "bf16",
                         passes=results[-1].passes, cpu=forward_cpu, device=results[-1].device)

        if not args.full:
            end_to_end_once()  # warm-up (lazy imports, file cache)
        else:  # warm up on a small scene, and read the big one into the file cache
            predict([run], scene(2048), WORK / "out-warm-up", batch_size=args.batch_size, device=args.device)
            with raster.open("rb") as stream:
                while stream.read(1 << 26):
                    pass
        pairs = bracketed(end_to_end_once, forward_once, args.repeats)
        etas = sorted(forward / end_to_end for forward, end_to_end in pairs)
        first = results[-1]
        row(f"B3 η = forward / end-to-end, {args.size}²", f"{statistics.median(etas):.3f}",
            f"{first.tiles_predicted} tiles of {args.tile}, batch {args.batch_size} in {first.passes} passes at once, "
            f"{first.precision}, "
            f"{first.device}; median of {args.repeats}, each forward between two predicts: "
            + ", ".join(f"{eta:.3f}" for eta in etas))
        row("B3 forward / mean of the predicts around it", "", "; ".join(f"{f:.1f} / {e:.1f} s" for f, e in pairs))
        end_to_end = statistics.median(seconds for _, seconds in pairs)
        row("B3 end-to-end throughput", f"{args.size ** 2 / 1e6 / end_to_end:.2f} Mpx/s",
            f"{first.detections_count} detections, heap policy {first.heap} (AIFACTORY_HEAP)")
        forward_variants(run, args.batch_size, args.tile, first.device)
        if args.stages:
            stages(run, raster, args.batch_size)
        if args.threads:
            predict_cpu_use(run, raster, WORK / "out-cpu", args.batch_size, sum(forward_cpu), args.device)
    if not args.skip_rss:
        peaks = {}
        for size in (int(s) for s in args.rss_sizes.split(",")):
            scene(size)
            start = time.perf_counter()
            peak, _ = peak_rss_mb(child(size, args.tile, args.batch_size))
            peaks[size] = peak
            summary = json.loads((WORK / f"out-rss-{size}" / "prediction.json").read_text())
            row(f"predict peak RSS {size}²", f"{peak:.0f} MB",
                f"{summary['tiles_predicted']} tiles, {time.perf_counter() - start:.0f} s, light U-Net fp32")
        smallest, largest = min(peaks), max(peaks)
        row(f"predict RSS ratio {largest}²/{smallest}²", f"{peaks[largest] / peaks[smallest]:.3f}", "goal ≤ 1.10")


if __name__ == "__main__":
    main()
