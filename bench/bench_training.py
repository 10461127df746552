"""B7 training feed (CPU): training samples/s and the fraction of step time spent waiting for data.

A is the real training loop (``aifactory.training.train``: GeoTIFF chips read by ``ChipDataset``,
augmented and collated in loader workers, then the model step), with 2 loader workers and with none.
B is the compute ceiling: the same model, loss and optimiser stepping on batches already in memory.
feed efficiency = A samples/s ÷ B samples/s (1.0: the model never waits for data); the data-wait fraction
is the loop's own timer (time blocked on the loader ÷ step time), from ``metrics.jsonl``. A(2 workers),
A(0 workers) and B are alternated and medians reported; the first logging window of each run (loader
start-up, first-step allocation) is left out. Target: data wait ≤ 10 % of step time with workers.

The dataset is built by the project's dataset builder from a synthetic scene (the training tests' helper).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import row

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "core"))

from aifactory.training import TrainConfig, train  # noqa: E402
from test_training_support import config_data, make_dataset  # noqa: E402


def make_config(dataset: Path, steps: int, workers: int, log_every: int, **overrides: Any) -> TrainConfig:
    data = config_data(dataset, **{
        "model": {"architecture": "unet", "params": {"encoder": "resnet18"}},
        "epochs": 1000, "max_steps": steps, "batch_size": 8, "num_workers": workers, "log_every": log_every,
        "checkpoint_every": 10_000, "validation": {"every": 1000},
        "augment": {"scale": [0.8, 1.25], "brightness": 0.1, "contrast": 0.1},
        **overrides})
    return TrainConfig.model_validate(data)


def pipeline(config: TrainConfig, folder: Path, device: str = "cpu") -> tuple[float, float]:
    """Median samples/s and data-wait fraction over the logging windows of one real training run."""
    run = Path(tempfile.mkdtemp(dir=folder))
    train(config, run, device=device)
    windows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    windows = [w for w in windows if w["split"] == "train"][1:]
    return (statistics.median(w["samples_per_s"] for w in windows),
            statistics.median(w["data_wait"] for w in windows))


def compute_only(config: TrainConfig, steps: int, device: str = "cpu", amp: bool = False,
                 channels_last: bool = False) -> float:
    """Samples/s of the bare training step (forward, CE loss, backward, AdamW) on in-memory batches."""
    from aifactory.datasets.format import read_meta
    from aifactory.models import ARCHITECTURES

    meta = read_meta(config.dataset)
    entry = ARCHITECTURES.get(config.model.architecture)
    dev = torch.device(device)
    model = entry.func(entry.parse_params(config.model.params, "bench"), meta.bands, meta.num_classes).to(dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    size, batch = meta.tile_size, config.batch_size
    images = torch.randn(batch, meta.bands, size, size, device=dev).contiguous(memory_format=fmt)
    masks = torch.randint(0, meta.num_classes, (batch, size, size), device=dev)
    dtype = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16

    def step() -> None:
        with torch.autocast(dev.type, dtype=dtype, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(images).float(), masks)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs of each side")
    parser.add_argument("--full", action="store_true", help="a larger scene and more steps per run")
    args = parser.parse_args(argv)
    scene, steps, log_every = (2048, 40, 5) if args.full else (1024, 16, 4)
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        folder = Path(tmp)
        dataset = make_dataset(folder / "data", size=scene, chip=128, bands=4)
        with_workers = make_config(dataset, steps, 2, log_every)
        without = make_config(dataset, steps, 0, log_every)
        a2: list[tuple[float, float]] = []
        a0: list[tuple[float, float]] = []
        b: list[float] = []
        for _ in range(args.repeats):
            a2.append(pipeline(with_workers, folder))
            a0.append(pipeline(without, folder))
            b.append(compute_only(with_workers, steps - log_every))
    speed2, wait2 = statistics.median(x[0] for x in a2), statistics.median(x[1] for x in a2)
    speed0, wait0 = statistics.median(x[0] for x in a0), statistics.median(x[1] for x in a0)
    ceiling = statistics.median(b)
    print(f"B7 training feed: U-Net resnet18, 4 bands, 128² chips, batch 8, CPU, {torch.get_num_threads()} "
          f"threads, medians of {args.repeats} alternated runs", flush=True)
    row("samples/s, loop with 2 workers (A2)", f"{speed2:.1f}")
    row("samples/s, loop without workers (A0)", f"{speed0:.1f}")
    row("samples/s, in-memory batches (B)", f"{ceiling:.1f}", "compute ceiling")
    row("feed efficiency A2 / B", f"{speed2 / ceiling:.2f}", "1.0 = never waits for data")
    row("feed efficiency A0 / B", f"{speed0 / ceiling:.2f}")
    row("data-wait fraction, 2 workers", f"{wait2:.1%}", "target <= 10 %")
    row("data-wait fraction, no workers", f"{wait0:.1%}")
    row("speed-up from 2 workers A2 / A0", f"{speed2 / speed0:.2f}")


if __name__ == "__main__":
    main()
