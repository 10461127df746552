"""B1 read ceiling and the synthetic generator's memory (BENCHMARKS.md).

B1: block-aligned read of a whole 4-band uint16 COG (512 blocks) with GDAL_NUM_THREADS=1 and ALL_CPUS, Mpx/s.
Generator: peak RSS of writing an N × N 4-band uint16 COG in a fresh process (flat in N is the goal; the issue
asks < 500 MB at 20k²).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import rasterio
from rasterio.windows import Window

from bench.common import alternate, peak_rss_mb, row


def read_all(path: Path, threads: str) -> None:
    with rasterio.Env(GDAL_NUM_THREADS=threads, GDAL_CACHEMAX=64), rasterio.open(path) as ds:
        block_h, block_w = ds.block_shapes[0]
        for r in range(0, ds.height, block_h):
            for c in range(0, ds.width, block_w):
                ds.read(window=Window(c, r, min(block_w, ds.width - c), min(block_h, ds.height - r)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096, help="side of the B1 raster in pixels")
    parser.add_argument("--rss-sizes", default="2048,4096,8192", help="comma-separated generator sizes")
    parser.add_argument("--full", action="store_true", help="B1 at 8192², generator up to 20000²")
    args = parser.parse_args(argv)
    if args.full:
        args.size, args.rss_sizes = 8192, "4096,8192,20000"
    from aifactory.io.synthetic import SceneSpec, generate_scene

    with tempfile.TemporaryDirectory() as tmp:
        raster = Path(tmp) / "b1.tif"
        generate_scene(SceneSpec(width=args.size, height=args.size, density=0.2), raster)
        mpx = args.size * args.size / 1e6
        one, many = alternate(lambda: read_all(raster, "1"), lambda: read_all(raster, "ALL_CPUS"))
        row("B1 read ceiling, 1 thread", f"{mpx / one:.1f} Mpx/s", f"{args.size}² 4×uint16 ZSTD COG")
        row("B1 read ceiling, all CPUs", f"{mpx / many:.1f} Mpx/s", f"ratio {one / many:.2f}× vs 1 thread")
        peaks = {}
        for size in (int(s) for s in args.rss_sizes.split(",")):
            out = Path(tmp) / f"g{size}.tif"
            peak, _ = peak_rss_mb(
                "from aifactory.io.synthetic import SceneSpec, generate_scene\n"
                f"generate_scene(SceneSpec(width={size}, height={size}, density=0.2), {str(out)!r})\n")
            peaks[size] = peak
            out.unlink()
            row(f"generator peak RSS {size}²", f"{peak:.0f} MB")
        smallest, largest = min(peaks), max(peaks)
        row(f"generator RSS ratio {largest}²/{smallest}²", f"{peaks[largest] / peaks[smallest]:.2f}")


if __name__ == "__main__":
    main()
