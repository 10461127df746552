"""B6 chip building: chips/s under vector labels as a ratio to the B1 read ceiling on the same raster.

A: ``dataset build`` of the whole raster (512 px chips, no overlap, every chip kept, fill masks, boxes,
train statistics, manifest hashes, chart). B: block-aligned read of the same raster (all CPUs), the
physical ceiling. Both are timed alternately; the ratio of medians is reported (target ≥ 0.8).
Then the peak RSS of a build in a fresh process, at the chosen size and at 2048² (flat is the goal).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from bench.bench_io import read_all
from bench.common import alternate, peak_rss_mb, row


def build_code(raster: Path, truth: Path, out: Path, tile: int) -> str:
    """Python source building a dataset (used in-process for timing and in a subprocess for RSS)."""
    return (
        "from aifactory.datasets.config import DatasetConfig\n"
        "from aifactory.datasets.export import build_dataset\n"
        f"config = DatasetConfig.model_validate({{'sources': [{{'raster': {str(raster)!r}, "
        f"'labels': {str(truth)!r}, 'layer': 'truth'}}], 'chips': {{'size': {tile}, 'max_nodata': 1.0, "
        "'negative_ratio': 1000.0}, 'split': {'block_tiles': 4}})\n"
        f"plan = build_dataset(config, {str(out)!r})\n"
    )


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

        def build() -> None:
            exec(code, {})
            shutil.rmtree(out)

        build_time, read_time = alternate(build, lambda: read_all(raster, "ALL_CPUS"), repeats=args.repeats)
        mpx = args.size * args.size / 1e6
        chips = (args.size // args.tile) ** 2
        row("B6 chip building", f"{mpx / build_time:.1f} Mpx/s", f"≈{chips / build_time:.0f} chips/s of {args.tile} px")
        row("B1 read ceiling, all CPUs", f"{mpx / read_time:.1f} Mpx/s", f"{args.size}² 4×uint16 ZSTD COG")
        row("B6 / B1 ratio", f"{read_time / build_time:.2f}", "target ≥ 0.8")
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
