"""Georeferencing through the chain: no half-pixel or one-pixel shift, flipped axis or wrong transform.

Each scene is a raster of bright rectangles whose polygons are known exactly in map coordinates (drawn along
pixel edges), so a stage that moves anything by a pixel, or by half of one, shows as pixels that disagree.
Rasters with a fractional origin, non-square pixels, a rotated grid, a south-up grid, and labels or fences in
another CRS are covered, because those are where such shifts hide.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from aifactory.catalog.build import build_catalog
from aifactory.catalog.store import open_catalog
from aifactory.datasets.config import DatasetConfig
from aifactory.datasets.export import build_dataset
from aifactory.datasets.format import read_chips, read_meta
from aifactory.datasets.plan import plan_dataset
from aifactory.errors import InputError
from aifactory.evaluation.objects import evaluate_objects
from aifactory.io.raster import raster_info
from aifactory.prediction.detections import to_frame
from aifactory.prediction.geofence import Geofence
from aifactory.prediction.tiling import TileGrid
from aifactory.prediction.vectorize import Detections, class_map, vectorize_array
from aifactory.preprocess.process import PreprocessOptions, preprocess_raster
from pyproj import Transformer
from rasterio.features import shapes
from scipy import ndimage

UTM = "EPSG:32631"
FRACTIONAL = Affine(0.3, 0, 500_000.137, 0, -0.7, 5_000_000.911)  # fractional origin, non-square pixels
ROTATED_30 = Affine.translation(500_000, 5_000_000) * Affine.rotation(30) * Affine.scale(0.5, -0.5)
ROTATED_90 = Affine.translation(500_000, 5_000_000) * Affine.rotation(90) * Affine.scale(0.5, -0.5)
SOUTH_UP = Affine(0.5, 0, 500_000, 0, 0.5, 5_000_000)
BRIGHT = 200


def bright_scene(folder: Path, name: str, transform: Affine, size: int = 96, label_crs: str | None = None,
                 bands: int = 1) -> tuple[Path, Path, np.ndarray]:
    """A raster with bright rectangles and their exact polygons (layer ``truth``, in ``label_crs`` if given)."""
    rng = np.random.default_rng(4)
    image = np.full((bands, size, size), 10, dtype="uint8")
    polygons = []
    cells = size // 16
    for cell in rng.choice(cells * cells, 12, replace=False):  # one object per 16 px cell: none touch
        height, width = rng.integers(2, 13, 2)
        row = cell // cells * 16 + rng.integers(1, 16 - height)
        col = cell % cells * 16 + rng.integers(1, 16 - width)
        image[:, row:row + height, col:col + width] = BRIGHT
        xs, ys = transform * (np.array([col, col + width, col + width, col]), np.array([row, row, row + height,
                                                                                         row + height]))
        polygons.append(shapely.Polygon(np.column_stack([xs, ys])))
    raster = folder / f"{name}.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=size, height=size, count=bands, dtype="uint8", crs=UTM,
                       transform=transform) as ds:
        ds.write(image)
    frame = gpd.GeoDataFrame({"class": ["building"] * len(polygons)}, geometry=polygons, crs=UTM)
    labels = folder / f"{name}.gpkg"
    (frame.to_crs(label_crs) if label_crs else frame).to_file(labels, layer="truth")
    return raster, labels, image


def dataset_config(raster: Path, labels: Path, **split: object) -> DatasetConfig:
    return DatasetConfig.model_validate({
        "sources": [{"raster": str(raster), "labels": str(labels), "layer": "truth"}],
        "chips": {"size": 48, "overlap": 8, "negative_ratio": 1.0, "max_nodata": 1.0},
        "split": split or {"method": "image", "fractions": {"train": 1.0}}})


@pytest.mark.parametrize(("transform", "label_crs"), [
    (FRACTIONAL, None), (FRACTIONAL, "EPSG:4326"), (ROTATED_30, "EPSG:3857"), (SOUTH_UP, None)],
    ids=["fractional-origin", "labels-in-4326", "rotated-labels-in-3857", "south-up"])
def test_chip_masks_cover_exactly_the_bright_pixels(tmp_path, transform, label_crs):
    raster, labels, _ = bright_scene(tmp_path, "scene", transform, label_crs=label_crs)
    build_dataset(dataset_config(raster, labels), tmp_path / "d")
    table = read_chips(tmp_path / "d")
    assert len(table) == 9
    for row in table.itertuples():
        with rasterio.open(tmp_path / "d" / row.image) as image, rasterio.open(tmp_path / "d" / row.mask) as mask:
            assert image.transform == mask.transform == transform * Affine.translation(row.col_off, row.row_off)
            bright = image.read(1) == BRIGHT
            np.testing.assert_array_equal(mask.read(1) == 1, bright)
        objects, _ = ndimage.label(bright)
        expected = sorted((s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(objects))
        if transform.b == 0:  # boxes are pixel bounds of the (axis-aligned) objects, clipped to the chip
            assert sorted(tuple(round(v) for v in box[:4]) for box in row.boxes) == expected


def test_rotated_grids_have_their_true_pixel_size(tmp_path):
    """|a| and |e| are not the pixel's sides on a rotated grid: 0 for a quarter turn (a block size of 0 and a
    catalog footprint densified with a step of 0, a GEOS error); the pixel's area is what counts."""
    raster, labels, _ = bright_scene(tmp_path, "quarter", ROTATED_90)
    assert raster_info(raster).res == pytest.approx((0.5, 0.5))  # predict's resampling factor divided by 0
    plan = plan_dataset(dataset_config(raster, labels, method="blocks", block_tiles=1,
                                       fractions={"train": 0.5, "val": 0.25, "test": 0.25}))
    assert plan.sources[0].pixel_size == pytest.approx(0.5)
    config = tmp_path / "catalog.yaml"
    config.write_text(f"images: [{{path: {raster}}}]\nlabels: [{{path: {labels}, layer: truth}}]\n")
    build_catalog(config, tmp_path / "catalog.gpkg")
    with open_catalog(tmp_path / "catalog.gpkg") as catalog:
        assert catalog.images()["gsd"].tolist() == [pytest.approx(0.5)]
    build_dataset(dataset_config(raster, labels), tmp_path / "d")
    assert read_meta(tmp_path / "d").gsd == pytest.approx(0.5)


def test_a_split_that_drops_every_chip_is_one_line(tmp_path):
    raster, labels, _ = bright_scene(tmp_path, "small", FRACTIONAL, size=64)
    config = dataset_config(raster, labels, method="blocks", block_tiles=1, guard=200,
                            fractions={"train": 0.5, "val": 0.25, "test": 0.25})
    with pytest.raises(InputError, match=r"no chip left to write.*guard"):
        build_dataset(config, tmp_path / "d")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("transform", [FRACTIONAL, SOUTH_UP, ROTATED_30], ids=["north-up", "south-up", "rotated"])
def test_detections_follow_pixel_edges_in_map_coordinates(transform):
    rng = np.random.default_rng(1)
    scores = np.zeros((2, 61, 75), dtype="uint8")
    for k in range(14):
        row, col = rng.integers(0, 55, 2)
        scores[k % 2, row:row + rng.integers(1, 9), col:col + rng.integers(1, 9)] = 220
    valid = np.ones(scores.shape[1:], dtype=bool)
    detections = vectorize_array(scores, valid, strip_rows=16, instance_h=0)
    frame = to_frame(detections, ["a", "b"], transform, UTM, "run", TileGrid(75, 61, 32, 0))
    classes = class_map(scores, valid)
    expected = [(shapely.geometry.shape(g), "ab"[int(v) - 1])
                for g, v in shapes(classes, mask=classes > 0, connectivity=4, transform=transform)]
    assert len(frame) == len(expected)
    for geometry, name in expected:
        same = frame[shapely.equals(frame.geometry.array, geometry)]
        assert same["class"].tolist() == [name]


def test_preprocess_keeps_ground_positions_and_band_order(tmp_path):
    raster, _, _ = bright_scene(tmp_path, "three", FRACTIONAL, size=120, bands=3)
    with rasterio.open(raster, "r+") as ds:
        data = ds.read()
        data[1] += 1
        data[2] += 2
        ds.write(data)
    with rasterio.open(raster) as ds:
        objects, count = ndimage.label(ds.read(1) == BRIGHT)
        centres = np.array([FRACTIONAL * (c + 0.5, r + 0.5)
                            for r, c in ndimage.center_of_mass(objects > 0, objects, range(1, count + 1))])
    preprocess_raster(raster, tmp_path / "bands.tif", PreprocessOptions(bands=[3, 2, 1]))
    with rasterio.open(tmp_path / "bands.tif") as ds:
        assert ds.transform == FRACTIONAL and ds.crs == UTM
        np.testing.assert_array_equal(ds.read(), data[::-1])
    preprocess_raster(raster, tmp_path / "warped.tif", PreprocessOptions(dst_crs="EPSG:3857", resampling="nearest"))
    with rasterio.open(tmp_path / "warped.tif") as ds:
        band, transform = ds.read(1), ds.transform
    found, n = ndimage.label(band >= BRIGHT)
    assert n == count
    moved = np.array([transform * (c + 0.5, r + 0.5)
                      for r, c in ndimage.center_of_mass(found > 0, found, range(1, n + 1))])
    expected = np.column_stack(Transformer.from_crs(UTM, "EPSG:3857", always_xy=True).transform(*centres.T))
    gaps = np.min(np.hypot(*(moved[:, None] - expected[None]).transpose(2, 0, 1)), axis=0)
    assert gaps.max() < 0.5 * np.hypot(transform.a, transform.d) + 0.5 * 0.7  # half an output + an input pixel


def test_geofence_in_4326_follows_its_parallels_in_utm(tmp_path):
    """A 0.2° box drawn in EPSG:4326: its north edge is a parallel, a curve in UTM that bulges 4.9 m past the
    chord between its corners; the fence must follow the curve, as gdalwarp's cutlines do."""
    box = shapely.box(5.3, 45.0, 5.5, 45.2)
    gpd.GeoDataFrame(geometry=[box], crs="EPSG:4326").to_file(tmp_path / "fence.gpkg")
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    x0, _ = to_utm.transform(5.25, 45.25)
    _, y0 = to_utm.transform(5.4, 45.25)
    transform = Affine(10, 0, round(x0), 0, -10, round(y0))  # 10 m pixels covering the box
    fence = Geofence.load(2000, 3000, UTM, transform, tmp_path / "fence.gpkg")
    north = np.column_stack(to_utm.transform(np.linspace(5.3, 5.5, 9), np.full(9, 45.2)))
    pixels = np.column_stack((~transform) * (north[:, 0], north[:, 1]))
    gaps = shapely.distance(fence.region.boundary, shapely.points(pixels))
    assert gaps.max() < 0.01  # px, i.e. 10 cm


@pytest.mark.parametrize("hair", [1e-7, -1e-7], ids=["outward", "inward"])
def test_geofence_rounding_cuts_no_slivers(tmp_path, hair):
    """A fence along pixel edges, stored in another CRS, comes back a hair (1e-9 px) off them, to either side
    (1e-7 px here, well above the coordinates' own rounding):
    detections beside it are neither cut into slivers (clip) nor dropped as partly outside (drop-partial)."""
    transform = Affine(0.5, 0, 500_000.25, 0, -0.5, 5_000_000.75)
    region = shapely.buffer(shapely.box(10, 20, 70, 90), hair, join_style="mitre")
    fence = gpd.GeoDataFrame(geometry=[shapely.transform(region, lambda xy: np.column_stack(transform * xy.T))],
                             crs=UTM)
    fence.to_file(tmp_path / "fence.gpkg")
    boxes = [shapely.box(70, 30, 80, 40), shapely.box(60, 50, 70, 60), shapely.box(5, 20, 10, 30),
             shapely.box(65, 85, 75, 95), shapely.box(10, 80, 20, 90)]  # out, in, out, across, in at a corner
    detections = Detections(np.array(boxes, dtype=object), np.ones(5, "int32"), np.full(5, 0.9), np.full(5, 0.9),
                            np.full(5, 100))
    clip = Geofence.load(150, 120, UTM, transform, tmp_path / "fence.gpkg", rule="clip").apply(detections)
    assert shapely.area(clip.geometry).round(3).tolist() == [100, 25, 100]
    partial = Geofence.load(150, 120, UTM, transform, tmp_path / "fence.gpkg", rule="drop-partial")
    kept = partial.apply(detections).geometry
    assert len(kept) == 2 and shapely.equals(kept[0], boxes[1]) and shapely.equals(kept[1], boxes[4])


def test_truth_in_another_crs_than_the_predictions_scores_perfectly(tmp_path):
    _, labels, _ = bright_scene(tmp_path, "eval", FRACTIONAL)
    truth = gpd.read_file(labels, layer="truth")
    pred = truth.to_crs("EPSG:4326").assign(score=0.9)
    result = evaluate_objects(pred, truth)
    assert result.overall["f1"] == pytest.approx(1.0) and result.overall["tp"] == len(truth)


@pytest.mark.parametrize("transform", [FRACTIONAL, SOUTH_UP, ROTATED_30, ROTATED_90],
                         ids=["north-up", "south-up", "rotated-30", "rotated-90"])
def test_pixel_evaluation_of_a_perfect_class_raster_is_perfect(tmp_path, transform):
    """Each window looked truth up by the box of two opposite corners: on a grid turned by 30° the other two
    fall outside it, and objects of the window were missed (IoU 0.44 for a perfect prediction)."""
    from aifactory.evaluation.pixels import evaluate_pixels

    raster, labels, image = bright_scene(tmp_path, "scene", transform)
    classes = tmp_path / "classes.tif"
    with rasterio.open(raster) as ds:
        profile = ds.profile
    with rasterio.open(classes, "w", **profile) as out:
        out.write((image[:1] == BRIGHT).astype("uint8"))
    result = evaluate_pixels(classes, labels, classes=["building"], kind="classes", tile=32)
    assert result.per_class()["building"]["iou"] == 1.0


def test_a_truth_raster_one_pixel_off_is_not_on_the_same_grid(tmp_path):
    """Affine.almost_equals' fixed 1e-5 tolerance is wider than a pixel in degrees: a truth raster shifted by a
    pixel on the ground was taken as on the grid (F1 1.0)."""
    from aifactory.evaluation.pixels import evaluate_pixels

    grid = Affine(4.5e-6, 0, 3, 0, -4.5e-6, 45)
    paths = []
    for name, transform in (("pred", grid), ("truth", grid * Affine.translation(1, 1))):
        path = tmp_path / f"{name}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint8", crs="EPSG:4326",
                           transform=transform) as ds:
            ds.write(np.ones((1, 16, 16), dtype="uint8"))
        paths.append(path)
    with pytest.raises(InputError, match="they must share the grid"):
        evaluate_pixels(paths[0], paths[1], classes=["building"], kind="classes")
