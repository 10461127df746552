"""B4 vectorize + seam merge: Mpx/s of scores → polygons, and seam splits against a single pass (must be 0).

The scores are what a good model gives on a synthetic scene: the generator's objects (buildings, trees,
cars; pixel space) burnt into class maps and blurred into uint8 probabilities, so object sizes,
densities and touching neighbours are realistic. Measured:

- throughput of the streamed vectorizer (strips of 448 rows, as ``predict`` feeds it with tile 512 and
  overlap 64), with instance separation, in Mpx/s, and its time against a single pass over the whole
  array (the cost of streaming and seam merging), alternated, medians;
- seam splits on a crop: reference polygons (single pass) that the streamed output does not contain
  exactly, and the same count for naive per-tile vectorization without merging, for scale.

``python -m bench.bench_vectorize [--size 4096] [--crop 2048]``; ``--full`` uses 20000² (needs ~4 GB).
"""

from __future__ import annotations

import argparse

import numpy as np
import shapely
from rasterio.features import rasterize
from scipy import ndimage

from bench.common import alternate, row

STRIP = 448
TILE = 512


def synthetic_scores(size: int, seed: int = 0) -> np.ndarray:
    """(3, size, size) uint8 softmax-like scores for building, tree and car objects."""
    from aifactory.io.synthetic import SceneSpec, generate_objects

    spec = SceneSpec(width=size, height=size, density=1.5, seed=seed)
    objects = generate_objects(spec)
    classes = np.zeros((size, size), dtype="uint8")
    for index, name in enumerate(spec.classes, start=1):
        geoms = objects.geometry[objects["class"] == name]
        if len(geoms):
            classes[rasterize(geoms, out_shape=(size, size)) > 0] = index
    scores = np.zeros((len(spec.classes), size, size), dtype="uint8")
    for index in range(1, len(spec.classes) + 1):
        blurred = ndimage.gaussian_filter((classes == index).astype("float32"), 1.5)
        scores[index - 1] = np.rint(blurred * 250).astype("uint8")
    return scores


def keys(detections: object) -> set[tuple[int, str]]:
    return {(int(c), shapely.normalize(g).wkt)
            for g, c in zip(detections.geometry, detections.class_index, strict=True)}  # type: ignore[attr-defined]


def per_tile(scores: np.ndarray, valid: np.ndarray) -> set[tuple[int, str]]:
    """Naive: each tile vectorized on its own, no merge across tile lines."""
    from aifactory.prediction.vectorize import vectorize_array

    out: set[tuple[int, str]] = set()
    for r in range(0, scores.shape[1], TILE):
        for c in range(0, scores.shape[2], TILE):
            part = vectorize_array(scores[:, r:r + TILE, c:c + TILE], valid[r:r + TILE, c:c + TILE], instance_h=2.0)
            part.geometry = shapely.transform(part.geometry, lambda xy, c=c, r=r: xy + np.array([c, r]))
            out |= keys(part)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096, help="side of the scores raster for throughput")
    parser.add_argument("--crop", type=int, default=2048, help="side of the crop for the seam check")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args(argv)
    if args.full:
        args.size = 20_000
    from aifactory.prediction.vectorize import vectorize_array

    scores = synthetic_scores(args.size)
    valid = np.ones(scores.shape[1:], dtype=bool)
    mpx = args.size ** 2 / 1e6
    result = {}

    def streamed() -> None:
        result["streamed"] = vectorize_array(scores, valid, STRIP, instance_h=2.0)

    def single() -> None:
        result["single"] = vectorize_array(scores, valid, instance_h=2.0)

    t_streamed, t_single = alternate(streamed, single, args.repeats)
    row(f"B4 vectorize streamed, {args.size}²", f"{mpx / t_streamed:.2f} Mpx/s",
        f"{len(result['streamed'])} polygons, strips of {STRIP} rows, instance separation on")
    row("B4 streamed / single-pass time", f"{t_streamed / t_single:.2f}", "cost of streaming + seam merge")
    crop = slice(0, args.crop)
    c_scores, c_valid = scores[:, crop, crop], valid[crop, crop]
    reference = keys(vectorize_array(c_scores, c_valid, instance_h=2.0))
    split = len(reference - keys(vectorize_array(c_scores, c_valid, STRIP, instance_h=2.0)))
    naive = len(reference - per_tile(c_scores, c_valid))
    row(f"B4 seam splits vs single pass, {args.crop}² crop", f"{split}", f"of {len(reference)} polygons (must be 0)")
    row("   naive per-tile vectorization, same crop", f"{naive}", f"polygons cut or changed by {TILE}-px tile lines")


if __name__ == "__main__":
    main()
