"""Objects of ``boundary`` label models claim back their contact pixels, exactly and seam-free.

Scenes are instance maps of rectangles cut by the datasets stage's own contact band
(:func:`aifactory.datasets.render.contact_pixels`, 1 px on each side of a touching line); the vectorized polygons are
rasterized back and compared pixel by pixel with the instances before the band was cut, with a rule written here
from the documentation (each contact pixel goes to the first object among its north, west, east, south
neighbours), and with one pass over the whole array.
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from aifactory.datasets.render import contact_pixels
from aifactory.prediction.vectorize import Detections, StreamingVectorizer, vectorize_array
from rasterio.features import rasterize
from skimage.measure import label

BUILDING, CONTACT = 1, 2
OPTIONS = {"instance_h": 0.0, "claim": True, "ignore": (CONTACT,)}


def boundary_scores(ids: np.ndarray, building: int = 240, contact: int = 240) -> np.ndarray:
    """(2, h, w) uint8 scores of a perfect ``boundary`` model: building, then the contact class."""
    band = contact_pixels(ids)
    scores = np.zeros((2, *ids.shape), dtype="uint8")
    scores[0][(ids > 0) & ~band] = building
    scores[1][band] = contact
    return scores


def vectorize(ids: np.ndarray, strip: int | None) -> Detections:
    return vectorize_array(boundary_scores(ids), np.ones(ids.shape, bool), strip, **OPTIONS)  # type: ignore[arg-type]


def burn(detections: Detections, shape: tuple[int, ...]) -> np.ndarray:
    """Detection k + 1 on the pixels whose centre its polygon covers; polygons must not share a pixel."""
    out = np.zeros(shape, dtype="int32")
    for k, geometry in enumerate(detections.geometry, start=1):
        inside = rasterize([(geometry, 1)], out_shape=shape, dtype="uint8") > 0
        assert not out[inside].any(), "two polygons cover one pixel"
        out[inside] = k
    return out


def same_objects(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label maps hold the same objects (labels may differ), background for background."""
    forward: dict[int, int] = {0: 0}
    backward: dict[int, int] = {0: 0}
    for x, y in set(zip(a.ravel().tolist(), b.ravel().tolist(), strict=True)):
        if forward.setdefault(x, y) != y or backward.setdefault(y, x) != x:
            return False
    return True


def claim_rule(ids: np.ndarray) -> np.ndarray:
    """The documented result, pixel by pixel: objects without the band, each band pixel to its first 4-neighbour."""
    band = contact_pixels(ids)
    objects = label(np.where(band, 0, ids > 0), connectivity=1)
    out = objects.copy()
    padded = np.pad(objects, 1)
    for row, col in zip(*np.nonzero(band), strict=True):
        for value in (padded[row, col + 1], padded[row + 1, col], padded[row + 1, col + 2], padded[row + 2, col + 1]):
            if value:
                out[row, col] = value
                break
    return out


def pairs(seed: int, cells: int = 5, cell: int = 36) -> np.ndarray:
    """Instances: per cell a rectangle alone, or two touching along a side (any offset), or 2 px apart."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((cells * cell, cells * cell), dtype="int32")
    k = 0
    for i in range(cells):
        for j in range(cells):
            r, c = i * cell + 2, j * cell + 2
            h1, w1, h2, w2 = (int(v) for v in rng.integers(3, 15, 4))
            k += 1
            ids[r:r + h1, c:c + w1] = k
            if rng.random() < 0.2:
                continue
            gap = int(rng.choice([0, 0, 2]))
            k += 1
            if rng.random() < 0.5:  # on its right
                r2 = max(r + int(rng.integers(-h2 + 1, h1)), i * cell)
                ids[r2:r2 + h2, c + w1 + gap:c + w1 + gap + w2] = k
            else:  # below it
                c2 = max(c + int(rng.integers(-w2 + 1, w1)), j * cell)
                ids[r + h1 + gap:r + h1 + gap + h2, c2:c2 + w2] = k
    return ids


def clutter(seed: int, size: int = 90, count: int = 28) -> np.ndarray:
    """Overlapping random rectangles: touching objects of any shape, 1 px gaps (their pixels become contact), lone."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((size, size), dtype="int32")
    for k in range(1, count + 1):
        h, w = (int(v) for v in rng.integers(2, 25, 2))
        r, c = (int(v) for v in rng.integers(0, size - 2, 2))
        ids[r:r + h, c:c + w] = k
    return ids


def key(detections: Detections) -> list[tuple[str, float, float, int]]:
    return sorted((shapely.normalize(g).wkt, round(float(s), 9), round(float(m), 9), int(p))
                  for g, s, m, p in zip(detections.geometry, detections.score, detections.score_max,
                                        detections.pixels, strict=True))


@pytest.mark.parametrize("strip", [1, 3, 7, 16, None])
def test_a_lone_object_comes_back_exactly_its_pixels(strip):
    ids = np.zeros((64, 64), dtype="int32")
    ids[10:42, 20:52] = 1  # 32 × 32 px: a 1 px buffer made it 34 × 34 (+13 %)
    found = vectorize(ids, strip)
    assert len(found) == 1 and found.geometry[0].geom_type == "Polygon"
    assert shapely.equals(found.geometry[0], shapely.box(20, 10, 52, 42))
    assert found.pixels.tolist() == [1024]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("strip", [1, 2, 5, 13, None])
def test_touching_objects_come_back_their_original_masks(seed, strip):
    ids = pairs(seed)
    found = vectorize(ids, strip)
    assert set(found.geometry[i].geom_type for i in range(len(found))) == {"Polygon"}
    assert same_objects(burn(found, ids.shape), ids)


@pytest.mark.parametrize("seed", range(8))
def test_any_strip_height_gives_the_one_pass_result_and_the_documented_rule(seed):
    ids = clutter(seed)
    whole = vectorize(ids, None)
    assert same_objects(burn(whole, ids.shape), claim_rule(ids))
    for strip in (1, 2, 3, 4, 7, 11, 30):
        assert key(vectorize(ids, strip)) == key(whole), strip


@pytest.mark.parametrize("strip", range(1, 12))
def test_contact_pixels_are_claimed_across_strip_lines(strip):
    """A horizontal touching line on rows 4 | 5: with strips of 4 the north claim crosses a strip line (the group
    above is still open), with strips of 5 none does, with strips of 6 the south claim waits for the next strip."""
    ids = np.zeros((12, 20), dtype="int32")
    ids[0:5, 2:15] = 1
    ids[5:11, 5:18] = 2
    ids[2:9, 0] = 3  # 1 px from object 1: the gap between them is contact (both in its 3 × 3 neighbourhood)
    found = vectorize(ids, strip)
    assert key(found) == key(vectorize(ids, None))
    assert same_objects(burn(found, ids.shape), claim_rule(ids))
    expected = ids.copy()  # the touching line comes back exact
    expected[1, 1] = 1  # the gap goes to the first object north, west, east or south of each pixel
    expected[2:6, 1] = 3
    assert same_objects(burn(found, ids.shape), expected)


def test_scores_and_pixel_counts_are_the_objects_own():
    ids = np.zeros((20, 30), dtype="int32")
    ids[2:12, 2:12] = 1
    ids[2:12, 12:22] = 2
    found = vectorize_array(boundary_scores(ids, building=200, contact=250), np.ones(ids.shape, bool), 3,
                            **OPTIONS)  # type: ignore[arg-type]
    assert sorted(found.pixels.tolist()) == [90, 90]  # a column of each went to the contact band
    assert np.allclose(found.score, 200 / 255) and np.allclose(found.score_max, 200 / 255)
    assert sorted(round(g.area) for g in found.geometry) == [100, 100]


def test_contact_pixels_beside_no_object_stay_background():
    scores = np.zeros((2, 10, 10), dtype="uint8")
    scores[1, :, 4] = 240  # a contact line alone
    scores[1, 9, 7] = 240  # and a pixel in the last row: it waits for a strip that never comes
    assert len(vectorize_array(scores, np.ones((10, 10), bool), 3, **OPTIONS)) == 0  # type: ignore[arg-type]


def test_claiming_needs_objects_separated_by_the_model():
    with pytest.raises(ValueError, match="instance_h 0"):
        StreamingVectorizer(10, instance_h=2.0, claim=True, ignore=(CONTACT,))
