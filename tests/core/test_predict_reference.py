"""The numbers of a prediction against naive whole-array references written from the documentation.

A probe architecture whose output is a known function (a 3 × 3 zero-padded box mean of the normalised bands,
mixed per class by a 1 × 1 convolution, plus a ramp in the tile's column and a parabola in its row, so it is
neither translation- nor rotation-invariant) is registered for these tests only. Its outputs are recomputed in
numpy, tile by tile over the documented grid, weighted by the documented windows, TTA transforms and ensemble
rules, summed over whole-raster float64 planes and divided: what the streamed prediction must reproduce to the
uint8 level (float32 against float64 may round a value sitting at a half level the other way).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from aifactory.config import StrictModel
from aifactory.datasets.format import Normalization
from aifactory.errors import ConfigError
from aifactory.io.raster import tile_offsets
from aifactory.models import ARCHITECTURES
from aifactory.models.card import ModelCard, write_card
from aifactory.prediction import predict
from aifactory.prediction.boxes import BoxMerger, TileBoxes, clip_to_tile
from aifactory.prediction.ensemble import check_weights, weighted_box_fusion
from aifactory.prediction.tiling import TileGrid
from rasterio.features import rasterize
from torch import nn

PROBE = "reference_probe"
MEAN, STD = 5000.0, 3000.0
CLASSES = ["background", "building", "tree"]
#: Per-class coefficients of the probe's column ramp and row parabola.
COL_SLOPE = np.array([0.0, 2.5, -1.5])
ROW_CURVE = np.array([0.0, -2.0, 1.8])


class ProbeParams(StrictModel):
    """No parameters."""


class Probe(nn.Module):
    """logits = mix(boxmean3(x)) + COL_SLOPE · col / w + ROW_CURVE · (row / h)²."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.mix = nn.Conv2d(in_channels, num_classes, 1)
        self.register_buffer("col_slope", torch.tensor(COL_SLOPE[:num_classes], dtype=torch.float32))
        self.register_buffer("row_curve", torch.tensor(ROW_CURVE[:num_classes], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pooled = nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True)
        col = torch.arange(w, dtype=x.dtype, device=x.device) / w
        row = (torch.arange(h, dtype=x.dtype, device=x.device) / h) ** 2
        return self.mix(pooled) + self.col_slope[:, None, None] * col + self.row_curve[:, None, None] * row[:, None]


def probe(params: ProbeParams, in_channels: int, num_classes: int) -> nn.Module:
    """Test probe: a known, position-dependent function."""
    return Probe(in_channels, num_classes)


@pytest.fixture(scope="module", autouse=True)
def probe_architecture() -> Iterator[None]:
    """The probe registered for this module only (other tests list the architectures)."""
    ARCHITECTURES.register(PROBE, ProbeParams)(probe)
    yield
    ARCHITECTURES._entries.pop(PROBE, None)


def probe_run(folder: Path, seed: int, tile: int, classes: list[str] | None = None) -> tuple[Path, dict]:
    """A run directory of the probe with seeded mixing weights; returns it and its weights (numpy)."""
    classes = classes or CLASSES
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 1.2, (len(classes), 4)).astype("float32")
    bias = rng.normal(0, 0.5, len(classes)).astype("float32")
    card = ModelCard(architecture=PROBE, in_channels=4, num_classes=len(classes), classes=classes,
                     bands=[1, 2, 3, 4], normalization=Normalization(mean=[MEAN] * 4, std=[STD] * 4),
                     tile_size=tile, gsd=0.5)
    folder.mkdir(parents=True, exist_ok=True)
    state = {"mix.weight": torch.from_numpy(weight[:, :, None, None]), "mix.bias": torch.from_numpy(bias),
             "col_slope": torch.tensor(COL_SLOPE[:len(classes)], dtype=torch.float32),
             "row_curve": torch.tensor(ROW_CURVE[:len(classes)], dtype=torch.float32)}
    torch.save(state, folder / "model.pt")
    write_card(card, folder)
    return folder, {"weight": weight.astype("float64"), "bias": bias.astype("float64")}


def write_raster(path: Path, width: int, height: int, seed: int = 0, nodata_boxes: tuple = (),
                 nodata_pixels: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth 4-band uint16 raster (nodata 0) in EPSG:32631 at 0.5 m; returns its pixels and valid mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    bands = []
    for _ in range(4):
        fx, fy, phase = rng.uniform(0.02, 0.09), rng.uniform(0.02, 0.09), rng.uniform(0, 6)
        field = np.sin(xx * fx + phase) * np.cos(yy * fy - phase) * 3500 + 5000
        bands.append(field + rng.normal(0, 600, field.shape))
    image = np.clip(np.stack(bands), 1, 12000).astype("uint16")
    for r0, r1, c0, c1 in nodata_boxes:
        image[:, r0:r1, c0:c1] = 0
    if nodata_pixels:
        image[:, rng.integers(0, height, nodata_pixels), rng.integers(0, width, nodata_pixels)] = 0
    transform = rasterio.Affine(0.5, 0, 500000.0, 0, -0.5, 5000000.0)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=4, dtype="uint16", nodata=0,
                       crs="EPSG:32631", transform=transform, tiled=True, blockxsize=64, blockysize=64) as ds:
        ds.write(image)
    return image.astype("float64"), (image != 0).any(axis=0)


# --- the references, from the documentation -------------------------------------------------------------------

def probe_logits(tile: np.ndarray, w: dict) -> np.ndarray:
    """The probe in float64 on one (bands, T, T) raw tile."""
    x = (tile - MEAN) / STD
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    size = tile.shape[-1]
    pooled = sum(padded[:, i:i + size, j:j + size] for i in range(3) for j in range(3)) / 9.0
    logits = np.einsum("cb,bhw->chw", w["weight"], pooled) + w["bias"][:, None, None]
    classes = len(w["bias"])
    col = np.arange(size) / size
    row = (np.arange(size) / size) ** 2
    return logits + COL_SLOPE[:classes, None, None] * col + ROW_CURVE[:classes, None, None] * row[:, None]


def probabilities(logits: np.ndarray) -> np.ndarray:
    if len(logits) == 1:
        return 1 / (1 + np.exp(-logits))
    e = np.exp(logits - logits.max(axis=0))
    return e / e.sum(axis=0)


def dihedral(mode: str) -> list[tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]]:
    """(forward, inverse) pairs on (..., H, W) arrays: flips = identity, left-right, up-down, both; d4 = the 8
    symmetries of the square."""
    def lr(a: np.ndarray) -> np.ndarray:
        return a[..., :, ::-1]

    def ud(a: np.ndarray) -> np.ndarray:
        return a[..., ::-1, :]

    def ident(a: np.ndarray) -> np.ndarray:
        return a

    if mode == "none":
        return [(ident, ident)]
    if mode == "flips":
        return [(ident, ident), (lr, lr), (ud, ud), (lambda a: lr(ud(a)), lambda a: ud(lr(a)))]
    pairs = []
    for k in range(4):
        for flip in (False, True):
            def fwd(a: np.ndarray, k: int = k, flip: bool = flip) -> np.ndarray:
                return np.rot90(lr(a) if flip else a, k, axes=(-2, -1))

            def inv(a: np.ndarray, k: int = k, flip: bool = flip) -> np.ndarray:
                back = np.rot90(a, -k, axes=(-2, -1))
                return lr(back) if flip else back
            pairs.append((fwd, inv))
    return pairs


def model_probs(tile: np.ndarray, w: dict, tta: str) -> np.ndarray:
    """One model's (classes, T, T) probabilities on a raw tile, averaged over the TTA passes mapped back."""
    passes = dihedral(tta)
    return sum(inv(probabilities(probe_logits(fwd(tile), w))) for fwd, inv in passes) / len(passes)


def ensemble_probs(per_model: list[np.ndarray], mode: str, weights: list[float] | None) -> np.ndarray:
    """The documented ensemble rules on (classes, T, T) probabilities of each model."""
    stack = np.stack(per_model)
    if len(per_model) == 1:
        return stack[0]
    if mode == "mean":
        return stack.mean(axis=0)
    if mode == "weighted":
        w = np.asarray(weights, dtype="float64")
        return np.tensordot(w / w.sum(), stack, axes=1)
    if mode == "max":
        return stack.max(axis=0)
    assert mode == "vote"
    classes = stack.shape[1]
    if classes == 1:
        return (stack >= 0.5).mean(axis=0)
    winners = stack.argmax(axis=1)
    return np.stack([(winners == c).mean(axis=0) for c in range(classes)])


def profile(tile: int, overlap: int, kind: str, starts: list[int], index: int) -> np.ndarray:
    """Blending weights along one axis of the tile at ``starts[index]``, as the blending module's docstring states
    them, floor 1e-3. ``crop``: 1 where the tile owns the pixel: between the middles of its overlaps with its
    neighbours (where a neighbour sees the pixel better), whatever the spread grid made of the overlaps."""
    centre = np.arange(tile) + 0.5
    edge = np.minimum(centre, tile - centre)
    if kind == "hann":
        weights = np.sin(np.pi * centre / tile) ** 2
    elif kind == "cosine":
        ramp = max(overlap, 1)
        weights = np.where(edge < ramp, np.sin(np.pi / 2 * edge / ramp) ** 2, 1.0)
    else:
        here = starts[index] + centre
        lo = (starts[index - 1] + tile + starts[index]) / 2 if index > 0 else -np.inf
        hi = (starts[index] + tile + starts[index + 1]) / 2 if index + 1 < len(starts) else np.inf
        weights = np.where((here >= lo) & (here < hi), 1.0, 0.0)
    return np.maximum(weights, 1e-3)


def offsets(size: int, tile: int, overlap: int) -> list[int]:
    """Tile offsets: fewest tiles at most ``tile - overlap`` apart, first and last flush with the edges."""
    found = tile_offsets(size, tile, tile - overlap, spread=True)
    if size <= tile:
        assert found == [0]
    else:
        assert found[0] == 0 and found[-1] == size - tile
        assert max(np.diff(found)) <= tile - overlap and len(found) == -(-(size - tile) // (tile - overlap)) + 1
    return found


def reference_scores(image: np.ndarray, valid: np.ndarray, models: list[dict], tile: int, overlap: int,
                     kind: str = "cosine", tta: str = "none", ensemble: str = "mean",
                     weights: list[float] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """uint8 scores (foreground classes, H, W) and predicted mask by whole-raster float64 sums, and the number of
    tiles with a valid pixel."""
    bands, height, width = image.shape
    classes = len(models[0]["bias"])
    channels = slice(0, 1) if classes == 1 else slice(1, classes)
    sums = np.zeros((classes, height, width))
    total = np.zeros((height, width))
    predicted_tiles = 0
    row_starts, col_starts = offsets(height, tile, overlap), offsets(width, tile, overlap)
    for i, r in enumerate(row_starts):
        for j, c in enumerate(col_starts):
            h, w = min(tile, height - r), min(tile, width - c)
            pixels = np.zeros((bands, tile, tile))  # a raster smaller than a tile is padded with zeros
            pixels[:, :h, :w] = image[:, r:r + h, c:c + w]
            ok = np.zeros((tile, tile), dtype=bool)
            ok[:h, :w] = valid[r:r + h, c:c + w]
            if not ok.any():
                continue
            predicted_tiles += 1
            probs = ensemble_probs([model_probs(pixels, m, tta) for m in models], ensemble, weights)
            weight = np.outer(profile(tile, overlap, kind, row_starts, i),
                              profile(tile, overlap, kind, col_starts, j)) * ok
            sums[:, r:r + h, c:c + w] += probs[:, :h, :w] * weight[:h, :w]
            total[r:r + h, c:c + w] += weight[:h, :w]
    predicted = total > 0
    blended = sums[channels] / np.where(predicted, total, 1.0)
    return np.where(predicted, np.rint(blended * 255), 0).astype("uint8"), predicted, predicted_tiles


def assert_scores_match(result_scores: Path, expected: np.ndarray, predicted: np.ndarray,
                        exact_share: float = 0.999) -> np.ndarray:
    with rasterio.open(result_scores) as ds:
        scores, mask = ds.read(), ds.dataset_mask() > 0
    np.testing.assert_array_equal(mask, predicted)
    diff = np.abs(scores.astype(int) - expected.astype(int))
    assert diff.max() <= 1, f"largest difference {diff.max()} at {np.unravel_index(diff.argmax(), diff.shape)}"
    assert np.mean(diff == 0) >= exact_share, np.mean(diff == 0)
    return scores


# --- the tests --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """300 × 257 px with a nodata block covering whole tiles at the bottom left and scattered nodata pixels."""
    path = tmp_path_factory.mktemp("reference") / "scene.tif"
    image, valid = write_raster(path, 300, 257, seed=4, nodata_boxes=((150, 257, 0, 120), (0, 9, 290, 300)),
                                nodata_pixels=40)
    return path, image, valid


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, dict]]:
    base = tmp_path_factory.mktemp("probe-runs")
    return [probe_run(base / f"probe{seed}", seed, 64) for seed in (1, 2, 3)]


@pytest.mark.parametrize(("kind", "overlap"), [("cosine", 16), ("hann", 16), ("crop", 16), ("crop", 7),
                                               ("cosine", 40), ("cosine", 7)])
def test_blended_scores_equal_whole_raster_sums(tmp_path, scene, runs, kind, overlap):
    """Every pixel, edges and corners included, is the weighted mean of the tiles covering it; nodata pixels
    are nodata; tiles without a valid pixel never reach the model."""
    path, image, valid = scene
    expected, predicted, tiles = reference_scores(image, valid, [runs[0][1]], 64, overlap, kind)
    assert not predicted[~valid].any() and predicted[valid].all()
    result = predict([runs[0][0]], path, tmp_path / "out", overlap=overlap, blend=kind, precision="fp32",
                     batch_size=3, device="cpu", score_floor=0.0)
    assert result.tiles_predicted == tiles and result.tiles_skipped_nodata > 0
    assert result.tiles_predicted + result.tiles_skipped_nodata == result.tiles_total
    assert_scores_match(result.scores, expected, predicted)


@pytest.mark.parametrize("tta", ["flips", "d4"])
def test_tta_passes_are_mapped_back_and_averaged(tmp_path, scene, runs, tta):
    path, image, valid = scene
    expected, predicted, _ = reference_scores(image, valid, [runs[0][1]], 64, 16, tta=tta)
    plain, _, _ = reference_scores(image, valid, [runs[0][1]], 64, 16)
    assert np.abs(expected.astype(int) - plain).max() > 20  # the probe is far from invariant
    result = predict([runs[0][0]], path, tmp_path / "out", overlap=16, tta=tta, precision="fp32", device="cpu")
    assert_scores_match(result.scores, expected, predicted)


@pytest.mark.parametrize(("mode", "weights"), [("mean", None), ("weighted", [3.0, 1.0, 0.5]), ("max", None),
                                               ("vote", None)])
def test_ensembles_combine_the_models_as_documented(tmp_path, scene, runs, mode, weights):
    path, image, valid = scene
    expected, predicted, _ = reference_scores(image, valid, [m for _, m in runs], 64, 16, ensemble=mode,
                                              weights=weights)
    result = predict([run for run, _ in runs], path, tmp_path / "out", overlap=16, ensemble=mode, weights=weights,
                     precision="fp32", device="cpu")
    # a vote flips where two classes' probabilities tie within float32 rounding: allow a few such pixels
    assert_scores_match(result.scores, expected, predicted, 0.999 if mode != "vote" else 0.995)


def test_weights_are_refused_with_an_unweighted_ensemble(tmp_path, scene, runs):
    """Weights with ``mean`` (the default), ``max`` or ``vote`` would be ignored: refused, before any output."""
    path, _, _ = scene
    with pytest.raises(ConfigError, match="takes no weights"):
        check_weights("max", [1.0, 2.0], 2)
    with pytest.raises(ConfigError, match="ensemble 'mean' takes no weights") as excinfo:
        predict([runs[0][0], runs[1][0]], path, tmp_path / "out", weights=[3.0, 1.0], device="cpu")
    assert "\n" not in str(excinfo.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_raster_smaller_than_a_tile_is_padded_and_cut_back(tmp_path, runs):
    path = tmp_path / "small.tif"
    image, valid = write_raster(path, 50, 37, seed=9, nodata_boxes=((0, 5, 0, 5),))
    expected, predicted, _ = reference_scores(image, valid, [runs[1][1]], 64, 8)
    result = predict([runs[1][0]], path, tmp_path / "out", overlap=8, precision="fp32", device="cpu")
    assert_scores_match(result.scores, expected, predicted)


def test_detection_scores_are_the_mean_and_max_of_the_quantized_scores_inside(tmp_path, scene, runs):
    """``score`` and ``score_max`` of each polygon are the mean and the max of its class's band of scores.tif
    over the pixels it covers, and no polygon covers a nodata pixel."""
    path, _, valid = scene
    result = predict([runs[2][0]], path, tmp_path / "out", overlap=16, precision="fp32", device="cpu",
                     score_floor=0.05)
    with rasterio.open(result.scores) as ds:
        scores, transform = ds.read(), ds.transform
    detections = gpd.read_file(result.detections, layer="detections")
    assert len(detections) > 5
    for row in detections.itertuples():
        inside = rasterize([row.geometry], out_shape=valid.shape, transform=transform) > 0
        assert inside.any() and valid[inside].all()
        band = scores[result.classes.index(row._1)][inside]
        assert row.score == pytest.approx(band.mean() / 255, abs=1e-9)
        assert row.score_max == pytest.approx(band.max() / 255, abs=1e-9)
        assert row.score >= 0.05
        assert row.area == pytest.approx(shapely.area(row.geometry)) and row.area == pytest.approx(inside.sum() / 4)


# --- boxes ------------------------------------------------------------------------------------------------------

def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def naive_wbf(boxes: list[np.ndarray], scores: list[np.ndarray], labels: list[np.ndarray], weights: list[float],
              thr: float) -> list[tuple[int, tuple[float, ...], float]]:
    """Weighted box fusion as documented, one box at a time: boxes in descending weighted score join the fused
    box they overlap best (IoU > thr, same label), which becomes the mean of its members weighted by score ×
    model weight; a cluster's score is its members' summed score × weight / their count × the number of models
    among them / the total model weight (the weighted mean score when every model saw it once)."""
    n = len(boxes)
    items = [(float(s) * weights[m], m, np.asarray(b, float), int(lab))
             for m in range(n) for b, s, lab in zip(boxes[m], scores[m], labels[m], strict=True)]
    out = []
    for label in sorted({lab for *_, lab in items}):
        mine = sorted((it for it in items if it[3] == label), key=lambda it: -it[0])
        clusters: list[list[tuple]] = []
        fused: list[np.ndarray] = []
        for item in mine:
            best, best_iou = -1, thr
            for k, box in enumerate(fused):
                value = iou(item[2], box)
                if value > best_iou:
                    best, best_iou = k, value
            if best < 0:
                clusters.append([item])
                fused.append(item[2])
            else:
                clusters[best].append(item)
                fused[best] = sum(ws * b for ws, _, b, _ in clusters[best]) / sum(ws for ws, *_ in clusters[best])
        for cluster, box in zip(clusters, fused, strict=True):
            models = len({m for _, m, _, _ in cluster})
            score = sum(ws for ws, *_ in cluster) / len(cluster) * models / sum(weights)
            out.append((label, tuple(np.round(box, 9)), round(score, 9)))
    return sorted(out)


def test_weighted_box_fusion_equals_a_naive_fusion():
    rng = np.random.default_rng(7)
    objects = rng.uniform(0, 200, (25, 2))
    sizes = rng.uniform(8, 30, (25, 2))
    for weights in ([1.0, 1.0, 1.0], [3.0, 1.0, 0.5], [0.2, 0.2, 0.6]):
        boxes, scores, labels = [], [], []
        for _ in weights:
            seen = rng.random(25) < 0.7
            jitter = rng.normal(0, 2.0, (int(seen.sum()), 4))
            found = np.column_stack([objects[seen], objects[seen] + sizes[seen]]) + jitter
            boxes.append(found)
            scores.append(rng.uniform(0.05, 1, len(found)))
            labels.append(rng.integers(1, 3, len(found)))
        normalised = list(np.asarray(weights) / sum(weights))
        got_boxes, got_scores, got_labels = weighted_box_fusion(boxes, scores, labels, normalised, iou_threshold=0.55)
        got = sorted((int(lab), tuple(np.round(b, 9)), round(float(s), 9))
                     for b, s, lab in zip(got_boxes, got_scores, got_labels, strict=True))
        assert got == naive_wbf(boxes, scores, labels, normalised, 0.55)
        assert (np.diff(got_scores) <= 0).all() and 10 < len(got) < 75


def naive_merge(grid: TileGrid, per_tile: dict, thr: float = 0.5) -> list[tuple]:
    """The cross-tile merge as the boxes module documents it, on every box at once."""
    splits = {}
    for axis, starts in (("row", grid.row_offsets), ("col", grid.col_offsets)):
        splits[axis] = [(a + grid.tile + b) / 2 for a, b in itertools.pairwise(starts)]
    margin = grid.overlap / 4
    items = []  # (box, score, label, tile key, depth)
    for tile, found in per_tile.items():
        for box, score, label in zip(found.boxes, found.scores, found.labels, strict=True):
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            inside = True
            for centre, axis, index in ((cx, "col", tile.col), (cy, "row", tile.row)):
                lo = splits[axis][index - 1] - margin if index > 0 else -np.inf
                hi = splits[axis][index] + margin if index < len(splits[axis]) else np.inf
                inside &= lo <= centre < hi
            if not inside:
                continue
            edges = [cx - tile.col_off if tile.col > 0 else np.inf,
                     tile.col_off + grid.tile - cx if tile.col < len(grid.col_offsets) - 1 else np.inf,
                     cy - tile.row_off if tile.row > 0 else np.inf,
                     tile.row_off + grid.tile - cy if tile.row < len(grid.row_offsets) - 1 else np.inf]
            items.append((box, float(score), int(label), (tile.row, tile.col), min(edges)))
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            a, b = items[i], items[j]
            if a[2] == b[2] and a[3] != b[3] and iou(a[0], b[0]) >= thr:
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(items)):
        groups.setdefault(find(i), []).append(i)
    out = []
    for members in groups.values():
        left = sorted(members, key=lambda i: (-items[i][4], -items[i][1], items[i][3], i))
        while left:
            rep = left.pop(0)
            taken = [rep]
            for key in sorted({items[i][3] for i in left} - {items[rep][3]}):
                candidates = [(iou(items[rep][0], items[i][0]), i) for i in left if items[i][3] == key]
                value, best = max(candidates, key=lambda c: (c[0], -left.index(c[1])))
                if value >= thr:
                    taken.append(best)
                    left.remove(best)
            out.append((items[rep][2], tuple(np.round(items[rep][0], 6)), round(items[rep][1], 9),
                        round(max(items[i][1] for i in taken), 9)))
    return sorted(out)


@pytest.mark.parametrize(("width", "height", "overlap"), [(400, 380, 24), (330, 290, 24)])
def test_streamed_box_merge_equals_a_naive_merge(width, height, overlap):
    """Objects seen (jittered, cut at tile edges) by every tile that holds part of them, on grids whose spread
    overlaps are the requested ones or much larger."""
    grid = TileGrid(width, height, 100, overlap)
    rng = np.random.default_rng(1)
    count = 150
    corner = np.column_stack([rng.uniform(-10, width - 5, count), rng.uniform(-10, height - 5, count)])
    size = rng.uniform(10, 40, (count, 2))
    classes = rng.integers(1, 3, count)
    per_tile = {}
    for row in grid.rows():
        for tile in row:
            view = np.column_stack([corner, corner + size]) + rng.normal(0, 0.7, (count, 4))
            local = view - [tile.col_off, tile.row_off] * 2
            seen = (local[:, 2] > 2) & (local[:, 3] > 2) & (local[:, 0] < 98) & (local[:, 1] < 98)
            boxes = clip_to_tile(local[seen], tile, width, height)
            per_tile[tile] = TileBoxes(boxes, rng.uniform(0.1, 1, int(seen.sum())), classes[seen])
    merger = BoxMerger(grid)
    got = []
    for index, row in enumerate(grid.rows()):
        for tile in row:
            merger.add(tile, per_tile[tile])
        part = merger.close(grid.final_rows(index)[1])
        got += [(int(c), tuple(np.round(g.bounds, 6)), round(float(s), 9), round(float(m), 9))
                for g, c, s, m in zip(part.geometry, part.class_index, part.score, part.score_max, strict=True)]
    expected = naive_merge(grid, per_tile)
    assert sorted(got) == expected and len(expected) > count // 2


def test_each_pixel_belongs_to_the_tile_that_sees_it_best():
    """Ownership (tile ids, the crop window, box ownership) splits each overlap at its middle, also where spreading
    the tiles made the overlaps far larger than requested."""
    from aifactory.prediction.blending import TileWindows

    grid = TileGrid(1000, 600, 512, 64)
    assert grid.col_offsets == [0, 244, 488] and grid.row_offsets == [0, 88]  # overlaps of 268 and 424 px
    for offsets, axis in ((grid.col_offsets, "col"), (grid.row_offsets, "row")):
        size = offsets[-1] + 512
        centres = np.arange(size) + 0.5
        other = np.full(size, 0.5)
        ids = grid.tile_ids(other, centres) if axis == "col" else grid.tile_ids(centres, other)
        owner = np.array([int(i[1:].split("c")[1 if axis == "col" else 0]) for i in ids])
        for x, mine in zip(centres, owner, strict=True):
            depth = {j: min(x - start if j > 0 else np.inf, start + 512 - x if j < len(offsets) - 1 else np.inf)
                     for j, start in enumerate(offsets) if start <= x < start + 512}
            assert depth[mine] == max(depth.values()), (axis, x)
        windows = TileWindows(grid, "crop")
        for j, start in enumerate(offsets):
            tile = grid.row(0)[j] if axis == "col" else grid.row(j)[0]
            weights = windows(tile, np.ones((512, 512), dtype=bool))
            line = weights[0] if axis == "col" else weights[:, 0]
            ones = line / line.max() == 1
            np.testing.assert_array_equal(ones, owner[start:start + 512] == j)
