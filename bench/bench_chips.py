"""B6 chip building: chips/s under vector labels as a ratio to the B1 read ceiling on the same raster.

A: ``dataset build`` of the whole raster (512 px chips, no overlap, every chip kept, fill masks, boxes,
train statistics, manifest hashes, chart). B: block-aligned read of the same raster (all CPUs), the
physical ceiling. Both are timed alternately; the ratio of medians is reported (target ≥ 0.8).
W: the same bytes as the build's chip files written by a bare loop, the other physical ceiling: at
20000² the chips are 3.2 GB, and on a virtual disk the kernel's write path costs more CPU per chip than
decoding it.
Then where a build's CPU goes: each step's CPU seconds per 100 chips, timed on the build's own code path
with one chip-writing thread (and the once-per-build steps), against the CPU of B1, with the best ratio
those figures allow on this machine's cores if every step ran in parallel with no overhead.
Last, the peak RSS of a build in a fresh process, at the chosen size and at 2048² (flat is the goal).
``python -m bench.bench_chips [--size 4096] [--repeats 3]``; ``--full`` uses 20000².
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from blake3 import blake3

from bench.bench_io import read_all
from bench.common import alternate, peak_rss_mb, row


def write_files(sizes: list[int], folder: Path) -> None:
    """Write files of these sizes (random bytes, one buffer reused) and remove them: the disk's share."""
    folder.mkdir()
    buffer = os.urandom(max(sizes, default=0))
    for i, size in enumerate(sizes):
        (folder / f"{i}.tif").write_bytes(buffer[:size])
    shutil.rmtree(folder)


def build_config(raster: Path, truth: Path, tile: int, workers: int = 0) -> dict[str, Any]:
    return {"sources": [{"raster": str(raster), "labels": str(truth), "layer": "truth"}],
            "chips": {"size": tile, "max_nodata": 1.0, "negative_ratio": 1000.0, "workers": workers},
            "split": {"block_tiles": 4}}


def build_code(raster: Path, truth: Path, out: Path, tile: int) -> str:
    """Python source building a dataset (used in-process for timing and in a subprocess for RSS)."""
    return (
        "from aifactory.datasets.config import DatasetConfig\n"
        "from aifactory.datasets.export import build_dataset\n"
        f"config = DatasetConfig.model_validate({build_config(raster, truth, tile)!r})\n"
        f"plan = build_dataset(config, {str(out)!r})\n"
    )


@contextlib.contextmanager
def cpu_timers(targets: dict[str, tuple[Any, str]]) -> Iterator[Counter[str]]:
    """Wrap ``owner.attribute`` for each step name; yields the CPU seconds each step's thread spent in it."""
    spent: Counter[str] = Counter()
    originals = {name: getattr(owner, attr) for name, (owner, attr) in targets.items()}

    def timed(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.thread_time() - start
        return wrapper

    for name, (owner, attr) in targets.items():
        setattr(owner, attr, timed(name, originals[name]))
    try:
        yield spent
    finally:
        for name, (owner, attr) in targets.items():
            setattr(owner, attr, originals[name])


def decomposition(raster: Path, truth: Path, out: Path, tile: int) -> None:
    """CPU seconds per 100 chips of each step of a build (one chip thread), against B1's CPU."""
    from aifactory.datasets import export, render
    from aifactory.datasets.config import DatasetConfig
    from aifactory.datasets.plan import plan_dataset

    config = DatasetConfig.model_validate(build_config(raster, truth, tile, workers=1))
    start = time.process_time()
    plan = plan_dataset(config)
    plan_cpu = time.process_time() - start
    steps = {"read (decode)": (render, "read_window"), "valid pixels": (render, "valid_pixels"),
             "objects in chip": (render.LabelIndex, "hits"), "rasterize": (render, "render_mask"),
             "boxes": (render, "chip_boxes"), "write + hash chips": (export, "write_chip"),
             "statistics": (export.RunningStats, "update"), "source hash": (export, "blake3_file"),
             "balance chart": (export, "balance_chart")}
    with cpu_timers(steps) as spent:
        start = time.process_time()
        export.export_plan(plan, out)
        export_cpu = time.process_time() - start
    chips = len(plan.chips)
    chip_bytes = sum(f.stat().st_size for f in out.glob("*s/*.tif"))
    shutil.rmtree(out)
    # the hash inside write_chip, timed alone on as many bytes (2 MiB buffers)
    buffer, digest = os.urandom(2 << 20), blake3()
    start = time.process_time()
    for _ in range(max(1, chip_bytes // len(buffer))):
        digest.update(buffer)
    spent["hash chips (of write + hash)"] = time.process_time() - start
    spent["plan"] = plan_cpu
    spent["other (threads, tables, manifest)"] = plan_cpu + export_cpu - sum(
        v for k, v in spent.items() if not k.startswith("hash chips"))
    start = time.process_time()
    read_all(raster, "1")
    read_cpu = time.process_time() - start
    per100 = 100 / chips
    for name, seconds in spent.items():
        row(f"  CPU {name}", f"{seconds * per100:.3f} s", "per 100 chips")
    total = plan_cpu + export_cpu
    row("  CPU whole build", f"{total * per100:.3f} s", f"per 100 chips ({chips} chips)")
    row("  CPU B1 read", f"{read_cpu * per100:.3f} s", "per 100 chips' worth of blocks")
    cores = os.cpu_count() or 1
    row(f"  best B6 / B1 on {cores} cores", f"{min(1.0, read_cpu * cores / total):.2f}",
        "if all steps ran in parallel, no overhead")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096, help="side of the source raster in pixels")
    parser.add_argument("--tile", type=int, default=512, help="chip side in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="20000² source, one repeat")
    args = parser.parse_args(argv)
    if args.full:
        args.size, args.repeats = 20_000, 1
    from aifactory.io.synthetic import SceneSpec, generate_scene

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        raster, truth, out = folder / "src.tif", folder / "truth.gpkg", folder / "dataset"
        generate_scene(SceneSpec(width=args.size, height=args.size, density=0.5), raster, truth)
        code = build_code(raster, truth, out, args.tile)

        file_sizes: list[int] = []

        def build() -> None:
            exec(code, {})
            file_sizes[:] = [f.stat().st_size for f in out.glob("*s/*.tif")]
            shutil.rmtree(out)

        build_time, read_time = alternate(build, lambda: read_all(raster, "ALL_CPUS"), repeats=args.repeats)
        write_time, _ = alternate(lambda: write_files(file_sizes, folder / "bare"),
                                  lambda: read_all(raster, "ALL_CPUS"), repeats=args.repeats)
        mpx = args.size * args.size / 1e6
        chips = (args.size // args.tile) ** 2
        row("B6 chip building", f"{mpx / build_time:.1f} Mpx/s", f"≈{chips / build_time:.0f} chips/s of {args.tile} px")
        row("B1 read ceiling, all CPUs", f"{mpx / read_time:.1f} Mpx/s", f"{args.size}² 4×uint16 ZSTD COG")
        row("B6 / B1 ratio", f"{read_time / build_time:.2f}", "target ≥ 0.8")
        row("W write ceiling", f"{mpx / write_time:.1f} Mpx/s",
            f"the chips' {sum(file_sizes) / 1e9:.2f} GB as {len(file_sizes)} files, bare loop")
        row("B6 / (B1 then W) ratio", f"{(read_time + write_time) / build_time:.2f}",
            "against reading and writing the same bytes one after the other")
        decomposition(raster, truth, out, args.tile)
        peaks = {}
        for size in sorted({2048, args.size}):
            if size == args.size:
                src, labels = raster, truth
            else:
                src, labels = folder / f"s{size}.tif", folder / f"t{size}.gpkg"
                generate_scene(SceneSpec(width=size, height=size, density=0.5), src, labels)
            peaks[size], _ = peak_rss_mb(build_code(src, labels, folder / f"d{size}", args.tile))
            shutil.rmtree(folder / f"d{size}")
            row(f"chip building peak RSS {size}²", f"{peaks[size]:.0f} MB")
        if len(peaks) > 1:
            row(f"peak RSS ratio {max(peaks)}²/{min(peaks)}²", f"{peaks[max(peaks)] / peaks[min(peaks)]:.2f}")


if __name__ == "__main__":
    main()
