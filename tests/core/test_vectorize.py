"""Vectorization: seam-free streaming against single-pass references, instance separation, scores."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from aifactory.prediction.vectorize import (
    Detections,
    StreamingVectorizer,
    _separate_all,
    class_map,
    label_classes,
    vectorize_array,
)
from rasterio.features import shapes
from scipy import ndimage
from skimage.measure import label
from skimage.morphology import h_maxima
from skimage.segmentation import watershed


def random_scores(height: int, width: int, classes: int = 2, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 softmax-like scores: blobs of each class that touch and merge."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((classes, height, width)), (0, 3, 3))
    field = (field - field.min()) / (field.max() - field.min())
    scores = np.clip(field * 420 - 160, 0, 255)
    total = scores.sum(axis=0)
    return (scores * np.minimum(1, 255 / np.maximum(total, 1))).astype("uint8")


def key(detections: Detections) -> list[tuple[int, str, float, float]]:
    return sorted((int(c), shapely.normalize(g).wkt, round(float(s), 9), round(float(m), 9))
                  for g, c, s, m in zip(detections.geometry, detections.class_index, detections.score,
                                        detections.score_max, strict=True))


@pytest.mark.parametrize("instance_h", [0.0, 2.0])
@pytest.mark.parametrize("strip", [1, 5, 37, 64])
def test_streaming_equals_single_pass(strip, instance_h):
    scores = random_scores(160, 210, seed=strip)
    valid = np.ones(scores.shape[1:], dtype=bool)
    valid[:30, :40] = False
    whole = vectorize_array(scores, valid, instance_h=instance_h)
    streamed = vectorize_array(scores, valid, strip, instance_h=instance_h)
    assert len(whole) > 20
    assert key(streamed) == key(whole)


def test_streaming_matches_an_independent_whole_raster_trace():
    """Reference: label the whole class map at once and trace it with rasterio (no union-find, no strips)."""
    scores = random_scores(150, 170, classes=3, seed=4)
    valid = np.ones(scores.shape[1:], dtype=bool)
    classes = class_map(scores, valid)
    labels = label(classes, background=0, connectivity=1)
    reference = []
    best = scores.max(axis=0)
    for geom, value in shapes(labels.astype("int32"), mask=labels > 0, connectivity=4):
        pixels = labels == value
        cls = int(classes[pixels][0])
        reference.append((cls, shapely.normalize(shapely.geometry.shape(geom)).wkt,
                          round(float(best[pixels].mean() / 255), 9), round(float(best[pixels].max() / 255), 9)))
    streamed = vectorize_array(scores, valid, 16, instance_h=0.0)
    assert key(streamed) == sorted(reference)
    assert len(reference) > 20


def test_no_polygon_is_cut_at_strip_lines():
    """A ring and a comb crossing many strips each come out as one polygon (with its hole)."""
    scores = np.zeros((1, 100, 100), dtype="uint8")
    scores[0, 10:90, 10:90] = 250
    scores[0, 30:70, 30:70] = 0  # hole
    scores[0, 95:100, 0:100] = 200  # comb spine at the bottom
    scores[0, 60:100:1, 92:94] = 200  # a tooth reaching up
    out = vectorize_array(scores, np.ones((100, 100), bool), 7, instance_h=0.0)
    areas = sorted(shapely.area(out.geometry).tolist())
    assert len(out) == 2
    assert areas == sorted([80 * 80 - 40 * 40, 5 * 100 + 35 * 2])
    ring = out.geometry[np.argmax(shapely.area(out.geometry))]
    assert len(ring.interiors) == 1


def test_touching_objects_are_separated_and_whole_ones_are_not():
    yy, xx = np.mgrid[0:80, 0:120]
    two_discs = ((yy - 40) ** 2 + (xx - 35) ** 2 < 20 ** 2) | ((yy - 40) ** 2 + (xx - 74) ** 2 < 22 ** 2)
    scores = np.where(two_discs, 230, 0).astype("uint8")[None]
    valid = np.ones(two_discs.shape, bool)
    separated = vectorize_array(scores, valid, 9, instance_h=2.0)
    assert len(separated) == 2
    assert shapely.area(shapely.union_all(separated.geometry)) == two_discs.sum()
    whole = vectorize_array(scores, valid, 9, instance_h=0.0)
    assert len(whole) == 1
    rectangle = np.zeros((1, 60, 90), dtype="uint8")
    rectangle[0, 10:40, 5:85] = 240
    assert len(vectorize_array(rectangle, np.ones((60, 90), bool), 11, instance_h=2.0)) == 1


def test_scores_classes_and_masks():
    scores = np.zeros((2, 40, 40), dtype="uint8")
    scores[0, 5:15, 5:15] = 200  # class 1, mean 200
    scores[0, 5:10, 5:15] = 250  # upper half brighter: mean 225, max 250
    scores[1, 20:30, 20:35] = 180  # class 2
    scores[1, 0:3, 30:33] = 100  # below background (255 - 100 = 155): not an object
    valid = np.ones((40, 40), bool)
    valid[20:30, 20:25] = False  # part of class 2 not predicted
    out = vectorize_array(scores, valid, 6, instance_h=0.0)
    order = np.argsort(out.class_index)
    out = out.select(order)
    assert out.class_index.tolist() == [1, 2]
    assert out.score[0] == pytest.approx(225 / 255)
    assert out.score_max[0] == pytest.approx(250 / 255)
    assert shapely.area(out.geometry[1]) == 10 * 10
    assert out.pixels.tolist() == [100, 100]
    floored = vectorize_array(scores, valid, 6, instance_h=0.0, score_floor=0.8)
    assert floored.class_index.tolist() == [1]


def test_single_sigmoid_class_threshold_is_half():
    scores = np.array([[[127, 128, 200]]], dtype="uint8")
    assert class_map(scores, np.ones((1, 3), bool)).tolist() == [[0, 1, 1]]


def test_grow_back_core_labels_and_ignored_contact_class():
    scores = np.zeros((2, 60, 60), dtype="uint8")
    scores[0, 20:30, 20:30] = 240  # a core of 10 × 10
    scores[1, 0:60, 45] = 240  # a contact line
    grown = vectorize_array(scores, np.ones((60, 60), bool), 8, instance_h=0.0, grow_factor=2.0, ignore=(2,))
    assert len(grown) == 1
    assert shapely.equals(grown.geometry[0], shapely.box(15, 15, 35, 35))


def test_strips_must_come_in_order():
    vectorizer = StreamingVectorizer(10)
    vectorizer.feed(0, np.zeros((1, 4, 10), "uint8"), np.ones((4, 10), bool))
    with pytest.raises(ValueError, match="contiguous"):
        vectorizer.feed(5, np.zeros((1, 4, 10), "uint8"), np.ones((4, 10), bool))


def traced_reference(classes: np.ndarray) -> list[tuple[int, str]]:
    """Class and normalized outline of every 4-connected component of a class map, traced in one piece."""
    labels = label(classes, background=0, connectivity=1)
    return sorted((int(classes[labels == value][0]), shapely.normalize(shapely.geometry.shape(geom)).wkt)
                  for geom, value in shapes(labels.astype("int32"), mask=labels > 0, connectivity=4))


@pytest.mark.parametrize("strip", [1, 4, 9, 23, None])
def test_components_giving_up_their_crops_midway_match_the_single_pass(strip):
    """Tall dumbbells cross 3+ strips before their box outgrows max_separate_px; their crops are traced then."""
    yy, xx = np.mgrid[0:130, 0:150]
    tall = ((yy - 22) ** 2 + (xx - 30) ** 2 < 18 ** 2) | ((yy - 58) ** 2 + (xx - 30) ** 2 < 19 ** 2)  # 76 × 38
    small = ((yy - 110) ** 2 + (xx - 40) ** 2 < 9 ** 2) | ((yy - 110) ** 2 + (xx - 57) ** 2 < 9 ** 2)  # 18 × 35
    side = ((yy - 40) ** 2 + (xx - 110) ** 2 < 16 ** 2) | ((yy - 72) ** 2 + (xx - 110) ** 2 < 17 ** 2)
    scores = np.zeros((2, 130, 150), dtype="uint8")
    scores[0][tall | small] = 230
    scores[1][side] = 200  # a second class beside the first, over the same strips
    scores[0, 100:130, 0:8] = 210  # a bar touching the last row: closed by finish
    valid = np.ones((130, 150), bool)
    options = dict(instance_h=2.0, max_separate_px=1500)  # tall and side outgrow it, small does not
    out = vectorize_array(scores, valid, strip, **options)
    assert key(out) == key(vectorize_array(scores, valid, **options))
    whole = [int(tall.sum()), int(side.sum()), 30 * 8]  # not separated (tall, side) or nothing to separate
    kept = np.isin(out.pixels, whole)
    assert sorted(out.pixels[kept].tolist()) == sorted(whole)
    assert (~kept).sum() == 2 and out.pixels[~kept].sum() == small.sum()  # small is separated
    reference = set(traced_reference(class_map(scores, valid)))
    assert {(c, w) for c, w, _, _ in key(out.select(kept))} <= reference
    assert len(vectorize_array(scores, valid, strip, instance_h=2.0)) == len(out) + 2  # all three split


def test_lazily_traced_outlines_equal_a_whole_raster_trace():
    """With separation on but no split possible, every outline comes from the closing trace of its crops;
    it must equal tracing the labelled raster at once (no strips, no union). Over 255 components close in
    one trace, so the packed labels must not wrap."""
    scores = random_scores(150, 170, classes=3, seed=7)
    scores[0, 130:150] = 0
    scores[0, 131:149:2, 1:169:2] = 240  # 9 × 84 single pixels: components of their own
    valid = np.ones(scores.shape[1:], dtype=bool)
    reference = traced_reference(class_map(scores, valid))
    for strip in (None, 6, 50):
        out = vectorize_array(scores, valid, strip, instance_h=1000.0)
        assert sorted((c, w) for c, w, _, _ in key(out)) == reference
        assert key(out) == key(vectorize_array(scores, valid, strip, instance_h=0.0))
    assert len(reference) > 9 * 84


def test_batched_separation_equals_h_maxima_and_watershed_component_by_component():
    """_separate_all packs the components on one canvas and skips the reconstruction where no second seed can
    exist: each result must be exactly what skimage's h-maxima and watershed give on the component alone."""
    rng = np.random.default_rng(3)
    blobs = ndimage.gaussian_filter(rng.standard_normal((300, 300)), 2) > 0  # many necks and small bulges
    labels, count = ndimage.label(blobs)
    masks = [np.pad(labels[box] == k, 1) for k, box in enumerate(ndimage.find_objects(labels), start=1)]
    outcomes = set()
    for h in (0.5, 1.0, 1.5, 2.0, 3.0):
        batched = _separate_all(masks, h)
        for mask, result in zip(masks, batched, strict=True):
            distance = ndimage.distance_transform_edt(mask)
            seeds, found = label(h_maxima(distance, h) & mask, connectivity=2, return_num=True)
            if found < 2:
                assert result is None
            else:
                assert result is not None and np.array_equal(result, watershed(-distance, seeds, mask=mask))
            outcomes.add((h, found >= 2))
    assert {split for _, split in outcomes} == {False, True} and count > 20
    split = next(mask for mask, result in zip(masks, _separate_all(masks, 2.0), strict=True) if result is not None)
    alone = _separate_all([split], 2.0)[0]  # one component: the canvas is its own mask
    distance = ndimage.distance_transform_edt(split)
    assert alone is not None and np.array_equal(alone, watershed(-distance, label(h_maxima(distance, 2.0) & split,
                                                                                 connectivity=2), mask=split))
    assert _separate_all([], 2.0) == []


@pytest.mark.parametrize("touching", [False, True])
def test_label_classes_matches_per_class_labelling(touching):
    """Components of one class each, numbered in raster order: scipy's boolean labelling where no two classes
    touch, scikit-image's per-value labelling where they do; both give what scikit-image gives."""
    rng = np.random.default_rng(3)
    classes = np.zeros((96, 160), dtype="uint8")
    for _ in range(40):
        r, c, h, w = rng.integers(0, 90), rng.integers(0, 150), rng.integers(1, 7), rng.integers(1, 11)
        classes[r:r + h, c:c + w] = rng.integers(1, 4)
    if not touching:  # a background ring around every blob's class boundary keeps classes apart
        edges = np.zeros_like(classes, dtype=bool)
        edges[1:] |= classes[1:] != classes[:-1]
        edges[:, 1:] |= classes[:, 1:] != classes[:, :-1]
        classes[edges] = 0
    expected, count = label(classes, background=0, connectivity=1, return_num=True)
    labels, found = label_classes(classes)
    assert found == count > 10 and np.array_equal(labels, expected)
    assert labels.dtype == (np.int64 if touching else np.int32)
