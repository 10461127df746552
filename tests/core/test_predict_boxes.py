"""Boxes across tiles without models: TTA box inversion, ownership, the streamed merge, coverage painting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from aifactory.prediction.boxes import BoxMerger, TileBoxes, clip_to_tile, owned, paint_coverage, pairwise_iou
from aifactory.prediction.tiling import TileGrid
from aifactory.prediction.tta import transforms


def bbox(image: np.ndarray) -> list[float]:
    rows, cols = np.nonzero(image)
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


@pytest.mark.parametrize("transform", transforms("d4"), ids=lambda t: f"rot{t.rot}-flip{int(t.flip)}")
def test_boxes_found_in_a_transformed_tile_map_back_to_the_object(transform):
    image = torch.zeros(1, 1, 32, 32)
    image[..., 5:12, 3:20] = 1  # rows 5..11, columns 3..19: x0, y0, x1, y1 = 3, 5, 20, 12
    seen = transform.forward(image)[0, 0].numpy()
    back = transform.inverse_boxes(np.array([bbox(seen)], float), 32)
    np.testing.assert_allclose(back, [[3, 5, 20, 12]])


def boxes_of(*rows: list[float], label: int = 1) -> TileBoxes:
    array = np.array([r[:4] for r in rows], float).reshape(-1, 4)
    return TileBoxes(array, np.array([r[4] for r in rows], float), np.full(len(rows), label))


def test_ownership_drops_centres_in_a_tiles_outer_overlap_band():
    grid = TileGrid(180, 100, 100, 20)  # tiles at columns 0 and 80, overlap 20: the line is at x = 90
    left, right = grid.row(0)
    centres = np.array([84.0, 94.0, 96.0])  # left keeps centres < 90 + 5, right keeps ≥ 90 - 5
    boxes = np.column_stack([centres - 2, [40] * 3, centres + 2, [44] * 3])
    assert owned(grid, left, boxes).tolist() == [True, True, False]
    assert owned(grid, right, boxes).tolist() == [False, True, True]


def test_an_object_straddling_a_tile_line_is_one_detection_from_the_tile_that_sees_it_best():
    grid = TileGrid(180, 100, 100, 20)
    left, right = grid.row(0)
    merger = BoxMerger(grid)
    # the same object seen by both tiles (left: truncated by its edge at x = 100, centre near it)
    merger.add(left, boxes_of([82, 30, 100, 50, 0.9]))
    merger.add(right, boxes_of([84, 30, 104, 50, 0.6]))
    # two different objects of one tile overlapping a lot stay two (the model's NMS kept them apart)
    merger.add(right, boxes_of([150, 10, 170, 30, 0.8], [153, 12, 173, 32, 0.7]))
    out = merger.close(np.inf)
    assert len(out) == 3
    first = np.argmin([g.bounds[0] for g in out.geometry])
    assert out.geometry[first].bounds == (84, 30, 104, 50)  # right tile: centre 94 is 14 px from its edge
    assert out.score[first] == pytest.approx(0.6) and out.score_max[first] == pytest.approx(0.9)
    assert sorted(out.pixels.tolist()) == [400, 400, 400]


def test_merging_is_streamed_and_equals_merging_everything_at_once():
    grid = TileGrid(400, 380, 100, 24)
    rng = np.random.default_rng(0)
    objects = np.column_stack([rng.uniform(0, 380, 120), rng.uniform(0, 360, 120)])
    sizes = rng.uniform(12, 20, (120, 1))
    classes = rng.integers(1, 3, 120)
    truth = np.column_stack([objects, objects + sizes])
    i, j = np.triu_indices(120, 1)
    clash = (pairwise_iou(truth[i], truth[j]) > 0.3) & (classes[i] == classes[j])
    alone = ~np.isin(np.arange(120), np.concatenate([i[clash], j[clash]]))
    objects, sizes, classes = objects[alone], sizes[alone], classes[alone]
    per_tile = {}
    for row in grid.rows():
        for tile in row:
            inside = (objects[:, 0] >= tile.col_off) & (objects[:, 0] < tile.col_off + 80) & \
                     (objects[:, 1] >= tile.row_off) & (objects[:, 1] < tile.row_off + 80)
            # each tile sees them a bit apart; at σ = 0.5 px two views of an object overlap with IoU ≥ MERGE_IOU
            # (0.5) but for ~4e-6 of pairs (at σ = 1 px, 1.5 % of pairs fail to merge: the test passed by luck)
            corner = objects[inside] + rng.normal(0, 0.5, (int(inside.sum()), 2))
            raw = np.column_stack([corner, corner + sizes[inside]]) - [tile.col_off, tile.row_off] * 2
            found = TileBoxes(clip_to_tile(raw, tile, 400, 380), rng.uniform(0.2, 1, len(corner)), classes[inside])
            per_tile[tile] = found
    streamed, whole = BoxMerger(grid), BoxMerger(grid)
    parts = []
    for index, row in enumerate(grid.rows()):
        for tile in row:
            streamed.add(tile, per_tile[tile])
            whole.add(tile, per_tile[tile])
        parts.append(streamed.close(grid.final_rows(index)[1]))
    assert len(streamed.finish()) == 0  # the last row closed everything
    at_once = whole.finish()

    def key(d):
        return sorted((int(c), tuple(np.round(g.bounds, 6)), round(float(s), 9))
                      for g, c, s in zip(d.geometry, d.class_index, d.score, strict=True))

    merged = [item for part in parts for item in key(part)]
    assert sorted(merged) == key(at_once)
    assert len(merged) == len(objects) > 60  # each object exactly once
    # no object comes out twice, whichever tiles saw it
    boxes = np.array([g.bounds for part in parts for g in part.geometry])
    labels = np.concatenate([part.class_index for part in parts])
    i, j = np.triu_indices(len(boxes), 1)
    same = labels[i] == labels[j]
    assert (pairwise_iou(boxes[i[same]], boxes[j[same]]) < 0.5).all()


def test_coverage_is_the_highest_score_per_pixel_and_class():
    grid = TileGrid(64, 64, 64, 0)
    tile = grid.row(0)[0]
    found = TileBoxes(np.array([[0, 0, 10, 10], [5, 5, 20, 20], [2, 2, 4, 4.5]], float), np.array([0.3, 0.8, 0.5]),
                      np.array([1, 1, 2]))
    cover = paint_coverage(found, tile, 2)
    assert cover.shape == (2, 64, 64)
    assert cover[0, 1, 1] == pytest.approx(0.3) and cover[0, 7, 7] == pytest.approx(0.8)
    assert cover[0, 30, 30] == 0 and cover[1, 4, 3] == pytest.approx(0.5) and cover[1, 5, 3] == 0
    masks = np.zeros((3, 64, 64), dtype=bool)
    masks[1, 6, 6] = True
    only = paint_coverage(found, tile, 2, masks)
    assert only[0, 6, 6] == pytest.approx(0.8) and only[0, 7, 7] == 0
