"""COCO mAP parity: our per-class AP@0.5 and AP@[.5:.95] equal faster-coco-eval's on the same data.

Boxes are compared through COCO's bbox IoU. Polygons through COCO's segm IoU on RLE masks: the polygons
are rectilinear with integer vertices, so their rasterization is exact and mask IoU equals polygon IoU.
Scenes are dense (more than 100 detections per image) to prove there is no per-image cap.
"""

from __future__ import annotations

import contextlib
import io

import geopandas as gpd
import numpy as np
import pytest
import shapely
from aifactory.evaluation.objects import evaluate_objects
from rasterio.features import rasterize

faster_coco_eval = pytest.importorskip("faster_coco_eval")
from faster_coco_eval import COCO, COCOeval_faster  # noqa: E402
from faster_coco_eval.core import mask as mask_api  # noqa: E402

SIZE = 256
CLASSES = ("building", "tree", "car")


def _shape(rng: np.random.Generator, x: int, y: int, w: int, h: int, polygons: bool) -> shapely.Polygon:
    box = shapely.box(x, y, x + w, y + h)
    if not polygons or w < 4 or h < 4:
        return box
    # an L-shape: the box minus an integer-aligned corner notch
    nw, nh = int(rng.integers(1, w // 2 + 1)), int(rng.integers(1, h // 2 + 1))
    return shapely.difference(box, shapely.box(x + w - nw, y + h - nh, x + w, y + h))


def _scene(seed: int, polygons: bool) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Dense truth per image, and detections: jittered copies (some mislabelled) plus clutter."""
    rng = np.random.default_rng(seed)
    truth_rows, pred_rows = [], []
    for image in range(3):
        n = 120 if image == 0 else int(rng.integers(5, 40))
        for _ in range(n):
            w, h = (int(v) for v in rng.integers(6, 24, 2))
            x, y = int(rng.integers(0, SIZE - w)), int(rng.integers(0, SIZE - h))
            cls = CLASSES[int(rng.integers(0, 3))]
            truth_rows.append((f"img{image}", cls, _shape(rng, x, y, w, h, polygons)))
            for _ in range(int(rng.integers(0, 3))):  # 0, 1 or 2 detections per object
                dx, dy, dw, dh = (int(v) for v in rng.integers(-2, 3, 4))
                pw, ph = max(2, w + dw), max(2, h + dh)
                px, py = min(max(0, x + dx), SIZE - pw), min(max(0, y + dy), SIZE - ph)
                pcls = cls if rng.random() > 0.1 else CLASSES[int(rng.integers(0, 3))]
                score = float(rng.uniform(0.3, 1.0))
                pred_rows.append((f"img{image}", pcls, score, _shape(rng, px, py, pw, ph, polygons)))
        for _ in range(int(rng.integers(10, 30))):  # clutter
            w, h = (int(v) for v in rng.integers(4, 20, 2))
            x, y = int(rng.integers(0, SIZE - w)), int(rng.integers(0, SIZE - h))
            pred_rows.append((f"img{image}", CLASSES[int(rng.integers(0, 3))], float(rng.uniform(0, 0.7)),
                              _shape(rng, x, y, w, h, polygons)))
    truth = gpd.GeoDataFrame([r[:2] for r in truth_rows], columns=["image", "class"],
                             geometry=[r[2] for r in truth_rows])
    pred = gpd.GeoDataFrame([r[:3] for r in pred_rows], columns=["image", "class", "score"],
                            geometry=[r[3] for r in pred_rows])
    return pred, truth


def _rle(geom: shapely.Geometry) -> dict:
    mask = rasterize([geom], out_shape=(SIZE, SIZE), dtype="uint8")
    rle = mask_api.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
    return rle


def _coco_ap(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, iou_type: str) -> dict[str, tuple[float, float]]:
    """Per class (AP@[.5:.95], AP@0.5) from faster-coco-eval with maxDets far above the scene's counts."""
    images = sorted(set(truth["image"]))
    image_id = {name: i + 1 for i, name in enumerate(images)}
    cat_id = {name: i + 1 for i, name in enumerate(CLASSES)}

    def entry(row: object, k: int) -> dict:
        x0, y0, x1, y1 = row.geometry.bounds
        out = {"id": k + 1, "image_id": image_id[row.image], "category_id": cat_id[row["class"]],
               "bbox": [x0, y0, x1 - x0, y1 - y0], "area": row.geometry.area, "iscrowd": 0}
        if iou_type == "segm":
            out["segmentation"] = _rle(row.geometry)
        return out

    dataset = {"images": [{"id": i, "width": SIZE, "height": SIZE} for i in image_id.values()],
               "categories": [{"id": i, "name": n} for n, i in cat_id.items()],
               "annotations": [entry(row, k) for k, (_, row) in enumerate(truth.iterrows())]}
    detections = []
    for k, (_, row) in enumerate(pred.iterrows()):
        det = entry(row, k)
        det["score"] = row["score"]
        if iou_type == "segm":
            det.pop("bbox")
        detections.append(det)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(dataset)
        dt = gt.loadRes(detections)
        ev = COCOeval_faster(gt, dt, iou_type)
        ev.params.maxDets = [1, 10, 100_000]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]  # T, R, K, A, M
    out = {}
    for name, cid in cat_id.items():
        k = ev.params.catIds.index(cid)
        p = precision[:, :, k, 0, -1]
        out[name] = (float(p.mean()), float(p[0].mean()))
    return out


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_map_equals_faster_coco_eval(iou_type: str) -> None:
    pred, truth = _scene(seed=3 if iou_type == "bbox" else 4, polygons=iou_type == "segm")
    assert (pred["image"] == "img0").sum() > 100  # beyond COCO's default cap of 100 per image
    ours = evaluate_objects(pred, truth, by="image", class_field="class")
    theirs = _coco_ap(pred, truth, iou_type)
    for name in CLASSES:
        assert ours.classes[name]["ap"] == pytest.approx(theirs[name][0], abs=1e-12), name
        assert ours.classes[name]["ap50"] == pytest.approx(theirs[name][1], abs=1e-12), name
    assert ours.overall["ap"] == pytest.approx(np.mean([v[0] for v in theirs.values()]), abs=1e-12)
    assert 0.2 < ours.overall["ap50"] < 0.95  # a meaningful scene, not a degenerate one
