"""B5 post-processing: a chain of ops on 50 000 polygons, vectorized (``apply_chain``) vs a per-feature loop.

The chain is what a building job runs: make_valid → score_filter → area_filter → remove_holes → nms →
simplify (Douglas-Peucker) → smooth (Chaikin) → attributes. The baseline does the same work the way a
per-feature script would: pandas row iteration, one shapely call per geometry (an STRtree query per feature
for NMS), numpy per ring for Chaikin. Both produce the same features (checked), A and B are alternated and
the medians compared; per-op ratios come from the same alternation. ``--plot`` draws them.
About 10 minutes on 2 shared cores, nearly all of it in the loop side (``--features`` for a quicker look).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from bench.common import alternate, row

CHAIN: list[dict[str, Any]] = [
    {"name": "make_valid"},
    {"name": "score_filter", "min_score": 0.3},
    {"name": "area_filter", "min_area": 20},
    {"name": "remove_holes", "max_area": 10},
    {"name": "nms", "iou_threshold": 0.5},
    {"name": "simplify", "tolerance": 0.5},
    {"name": "smooth", "iterations": 1},
    {"name": "attributes"},
]


def synthetic_detections(count: int, seed: int = 0) -> gpd.GeoDataFrame:
    """Noisy rotated rectangles (24 vertices) like segmentation outlines; 15 % duplicated (NMS), 10 % holed."""
    rng = np.random.default_rng(seed)
    base = int(count / 1.15)
    side = math.sqrt(base) * 40
    t = np.linspace(0, 4, 24, endpoint=False)  # perimeter parameter: 6 points per side
    unit = np.stack([np.clip(np.abs((t + 0.5) % 4 - 2) - 0.5, 0, 1) - 0.5,
                     np.clip(np.abs((t + 1.5) % 4 - 2) - 0.5, 0, 1) - 0.5], axis=1)
    size = rng.uniform(4, 20, (base, 1, 2))
    angle = rng.uniform(0, np.pi, (base, 1))
    local = unit[None] * size + rng.normal(0, 0.3, (base, 24, 2))
    rotated = np.stack([local[..., 0] * np.cos(angle) - local[..., 1] * np.sin(angle),
                        local[..., 0] * np.sin(angle) + local[..., 1] * np.cos(angle)], axis=-1)
    centers = rng.uniform(0, side, (base, 1, 2))
    polygons = shapely.polygons(rotated + centers)
    duplicates = rng.choice(base, count - base, replace=False)
    polygons = np.concatenate([polygons, shapely.transform(polygons[duplicates],
                                                           lambda xy: xy + rng.normal(0, 1.0, 2))])
    holed = (rng.random(len(polygons)) < 0.1) & shapely.is_valid(polygons)
    holes = shapely.buffer(shapely.centroid(polygons[holed]), rng.uniform(0.8, 2.5, holed.sum()), quad_segs=2)
    polygons[holed] = shapely.difference(polygons[holed], holes)
    n = len(polygons)
    return gpd.GeoDataFrame({
        "class": rng.choice(["building", "shed"], n, p=[0.8, 0.2]), "score": rng.uniform(0.1, 1.0, n),
        "model_run": "bench", "tile_id": [f"t{i % 97}" for i in range(n)], "area": shapely.area(polygons),
        "review": "unreviewed", "reviewed_class": None,
    }, geometry=polygons, crs="EPSG:32631")


# -- the per-feature baseline: same results, one feature at a time ------------------------------------------

def loop_make_valid(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    kept = []
    for _, feature in frame.iterrows():
        geom = feature.geometry
        if geom is None or geom.is_empty:
            continue
        if not geom.is_valid:
            geom = shapely.make_valid(geom, method="structure")
        feature.geometry = shapely.orient_polygons(geom)
        kept.append(feature)
    return gpd.GeoDataFrame(kept, crs=frame.crs)


def loop_filter(frame: gpd.GeoDataFrame, test: Callable[[pd.Series], bool]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame([feature for _, feature in frame.iterrows() if test(feature)], crs=frame.crs)


def loop_remove_holes(frame: gpd.GeoDataFrame, max_area: float) -> gpd.GeoDataFrame:
    rows = []
    for _, feature in frame.iterrows():
        polygons = getattr(feature.geometry, "geoms", [feature.geometry])
        parts = [shapely.Polygon(p.exterior, [r for r in p.interiors if shapely.Polygon(r).area >= max_area])
                 for p in polygons]
        feature.geometry = parts[0] if feature.geometry.geom_type == "Polygon" else shapely.MultiPolygon(parts)
        feature["area"] = feature.geometry.area
        rows.append(feature)
    return gpd.GeoDataFrame(rows, crs=frame.crs)


def loop_nms(frame: gpd.GeoDataFrame, threshold: float) -> gpd.GeoDataFrame:
    frame = frame.reset_index(drop=True)
    tree = shapely.STRtree(frame.geometry.array)
    order = sorted(range(len(frame)), key=lambda i: (-frame["score"].iat[i], i))
    kept: set[int] = set()
    for i in order:
        geom, cls = frame.geometry.iat[i], frame["class"].iat[i]
        suppressed = False
        for j in tree.query(geom):
            if j in kept and frame["class"].iat[j] == cls:
                other = frame.geometry.iat[j]
                inter = geom.intersection(other).area
                if inter / (geom.area + other.area - inter) > threshold:
                    suppressed = True
                    break
        if not suppressed:
            kept.add(i)
    return frame.loc[sorted(kept)]


def loop_simplify(frame: gpd.GeoDataFrame, tolerance: float) -> gpd.GeoDataFrame:
    rows = []
    for _, feature in frame.iterrows():
        feature.geometry = feature.geometry.simplify(tolerance, preserve_topology=True)
        feature["area"] = feature.geometry.area
        rows.append(feature)
    return gpd.GeoDataFrame(rows, crs=frame.crs)


def chaikin_ring(ring: Any) -> np.ndarray:
    xy = np.asarray(ring.coords)[:-1]
    there = np.roll(xy, -1, axis=0)
    return np.stack([0.75 * xy + 0.25 * there, 0.25 * xy + 0.75 * there], axis=1).reshape(-1, 2)


def loop_smooth(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    rows = []
    for _, feature in frame.iterrows():
        polygons = getattr(feature.geometry, "geoms", [feature.geometry])
        parts = [shapely.Polygon(chaikin_ring(p.exterior), [chaikin_ring(r) for r in p.interiors]) for p in polygons]
        geom = parts[0] if feature.geometry.geom_type == "Polygon" else shapely.MultiPolygon(parts)
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
        feature.geometry = geom
        feature["area"] = geom.area
        rows.append(feature)
    return gpd.GeoDataFrame(rows, crs=frame.crs)


def loop_attributes(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    rows = []
    for _, feature in frame.iterrows():
        geom = feature.geometry
        box = np.asarray(geom.minimum_rotated_rectangle.exterior.coords)
        a, b = box[1] - box[0], box[2] - box[1]
        long_side, short_side = max(np.hypot(*a), np.hypot(*b)), min(np.hypot(*a), np.hypot(*b))
        along = a if np.hypot(*a) >= np.hypot(*b) else b
        feature["area"], feature["perimeter"] = geom.area, geom.length
        feature["elongation"] = long_side / short_side if short_side > 0 else np.nan
        feature["orientation"] = math.degrees(math.atan2(along[1], along[0])) % 180
        feature["compactness"] = 4 * math.pi * geom.area / geom.length**2
        rows.append(feature)
    return gpd.GeoDataFrame(rows, crs=frame.crs)


LOOPS: list[Callable[[gpd.GeoDataFrame], gpd.GeoDataFrame]] = [
    loop_make_valid,
    lambda f: loop_filter(f, lambda feature: 0.3 <= feature["score"] <= 1.0),
    lambda f: loop_filter(f, lambda feature: feature.geometry.area >= 20),
    lambda f: loop_remove_holes(f, 10),
    lambda f: loop_nms(f, 0.5),
    lambda f: loop_simplify(f, 0.5),
    loop_smooth,
    loop_attributes,
]


def timed_steps(frame: gpd.GeoDataFrame, steps: list[Callable[[gpd.GeoDataFrame], gpd.GeoDataFrame]],
                times: list[list[float]]) -> gpd.GeoDataFrame:
    for index, step in enumerate(steps):
        start = time.perf_counter()
        frame = step(frame)
        times[index].append(time.perf_counter() - start)
    return frame


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", type=int, default=50_000, help="polygons in the input")
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs of each side")
    parser.add_argument("--plot", help="write a bar chart of the per-op speed-ups to this PNG")
    parser.add_argument("--full", action="store_true", help="(same sizes: B5 is fixed at 50 000 polygons)")
    args = parser.parse_args(argv)
    from aifactory.postprocess import OPS, apply_chain

    OPS.names()  # import the built-in ops now: module imports are not the ops' cost
    frame = synthetic_detections(args.features)
    vector_steps = [lambda f, spec=spec: apply_chain(f, [spec]) for spec in CHAIN]
    times_a: list[list[float]] = [[] for _ in CHAIN]
    times_b: list[list[float]] = [[] for _ in CHAIN]
    results: dict[str, gpd.GeoDataFrame] = {}

    def side_a() -> None:
        results["vectorized"] = timed_steps(frame, vector_steps, times_a)

    def side_b() -> None:
        results["loop"] = timed_steps(frame, LOOPS, times_b)

    total_a, total_b = alternate(side_a, side_b, args.repeats)
    fast, slow = results["vectorized"], results["loop"]
    assert len(fast) == len(slow), (len(fast), len(slow))
    assert np.allclose(np.sort(fast["area"]), np.sort(slow["area"]), rtol=1e-6), "the two sides disagree"
    row("B5 input", f"{len(frame)} polygons", f"{len(fast)} after the chain, identical on both sides")
    ratios = []
    for spec, a, b in zip(CHAIN, times_a, times_b, strict=True):
        ratio = float(np.median(b) / np.median(a))
        ratios.append(ratio)
        row(f"  {spec['name']}", f"{ratio:.1f}×", f"vectorized {np.median(a):.2f} s, loop {np.median(b):.2f} s")
    row("B5 chain speed-up (loop / vectorized)", f"{total_b / total_a:.1f}×",
        f"medians of {args.repeats} alternated runs; goal ≥ 10×")
    if args.plot:
        plot_ratios([spec["name"] for spec in CHAIN], ratios, total_b / total_a, len(frame), args.plot)
        row("plot", args.plot)


def plot_ratios(names: list[str], ratios: list[float], total: float, count: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar([*names, "chain"], [*ratios, total], color=["#4c78a8"] * len(names) + ["#f58518"])
    ax.axhline(10, color="grey", linestyle="--", linewidth=1, label="goal 10×")
    ax.set_yscale("log")
    ax.set_ylabel("speed-up vs per-feature loop")
    ax.set_title(f"B5 post-processing, {count:,} polygons".replace(",", " "))
    ax.tick_params(axis="x", rotation=30)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
