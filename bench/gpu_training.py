"""Training on a GPU: AMP and channels-last throughput, and how busy the GPU stays in the real loop.

A short prepared script for a lent GPU machine (a few minutes); it also runs on a CPU, with smaller sizes
and without AMP (there it measures channels-last only). Compute-only steps (in-memory batches) for each of
fp32 / AMP × contiguous / channels-last are alternated, medians reported as ratios to fp32 contiguous;
then the real loop (``aifactory.training.train``, AMP + channels-last as its config defaults, loader
workers) runs on the same model and batch size. GPU busy fraction = loop samples/s ÷ compute-only
samples/s in the same precision and layout (1.0: the GPU never waits for data); data wait is the loop's
own timer. With ``$OUT`` set, the figures are also written to ``$OUT/gpu_training.json``.

    python -m bench.gpu_training [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch

from bench.bench_training import compute_only, make_config, make_dataset, pipeline
from bench.common import row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="(sizes follow the device)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if cuda:
        scene, chip, batch, encoder, steps, workers = 3072, 256, 16, "resnet34", 30, 6
    else:
        scene, chip, batch, encoder, steps, workers = 768, 128, 4, "resnet18", 8, 2
    results: dict[str, float | str] = {"device": torch.cuda.get_device_name() if cuda else "cpu"}
    with tempfile.TemporaryDirectory(prefix="gpu_training_") as tmp:
        folder = Path(tmp)
        dataset = make_dataset(folder / "data", size=scene, chip=chip, bands=4)
        config = make_config(dataset, steps, workers, max(2, steps // 5), batch_size=batch,
                             model={"architecture": "unet", "params": {"encoder": encoder}})
        variants = [(amp, cl) for amp in ([False, True] if cuda else [False]) for cl in (False, True)]
        speeds: dict[tuple[bool, bool], list[float]] = {v: [] for v in variants}
        loop = []
        compute_only(config, 2, device)  # one-time kernel selection and allocator warm-up, not measured
        for _ in range(args.repeats):
            for amp, cl in variants:
                speeds[(amp, cl)].append(compute_only(config, steps, device, amp=amp, channels_last=cl))
            loop.append(pipeline(config, folder, device))
        median = {v: statistics.median(s) for v, s in speeds.items()}
        if cuda:
            results["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    base = median[(False, False)]
    fastest = (True, True) if cuda else (False, False)  # what the loop uses (AMP, channels-last: CUDA only)
    loop_speed = statistics.median(s for s, _ in loop)
    loop_wait = statistics.median(w for _, w in loop)
    print(f"training on {results['device']}: U-Net {encoder}, 4 bands, {chip}² chips, batch {batch}", flush=True)
    row("compute-only samples/s, fp32 contiguous", f"{base:.1f}")
    for (amp, cl), speed in median.items():
        name = f"{'amp' if amp else 'fp32'}_{'channels_last' if cl else 'contiguous'}"
        results[f"compute_{name}_samples_per_s"] = speed
        if (amp, cl) != (False, False):
            row(f"speed-up {name.replace('_', ' ')} / fp32 contiguous", f"{speed / base:.2f}")
    results.update(loop_samples_per_s=loop_speed, loop_data_wait=loop_wait, busy=loop_speed / median[fastest])
    row("loop samples/s (AMP + channels-last on CUDA)", f"{loop_speed:.1f}")
    row("busy fraction loop / compute-only", f"{loop_speed / median[fastest]:.2f}", "1.0 = never waits for data")
    row("data-wait fraction of step time", f"{loop_wait:.1%}")
    if "peak_gpu_memory_gb" in results:
        row("peak GPU memory", f"{results['peak_gpu_memory_gb']:.1f} GB")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_training.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
