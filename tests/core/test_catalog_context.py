"""Context layers counted with their real geometry, checked against an exact shapely reference.

A context layer is a set of polygons, each with values (percent) for some of cloud, snow, vegetation, fog: the
value holds on the polygon's area. An observation takes, per attribute, the value of the first polygon (layers in
config order, features in file order) that covers its centroid and has that attribute; else its computed tile's
value; else its image's. Until catalog schema 2 a polygon counted as its bounding box, so triangles, rings and
rotated shapes gave their value to objects outside them. The reference below recomputes the answer from the
truth layer and the polygons with shapely only, and random selections must agree with it exactly.
"""

from __future__ import annotations

import sqlite3

import geopandas as gpd
import numpy as np
import pytest
import shapely
import yaml
from aifactory.catalog.build import build_catalog
from aifactory.catalog.schema import SCHEMA_VERSION, metadata
from aifactory.catalog.selection import Selection
from aifactory.catalog.store import open_catalog
from aifactory.errors import InputError
from aifactory.io.synthetic import SceneSpec, generate_scene
from aifactory.io.vector import write_vector
from test_catalog import postgis_server  # noqa: F401  (module fixture)
from test_selection_reference import context_kept

FIELDS = ("cloud", "snow")
VALUES = (0.0, 10.0, 20.0, 45.0, 70.0, 100.0)
#: per-image values given in the config (``snow`` unknown at image level: no range passes there)
IMAGE_VALUES = {"cloud": 10.0, "snow": np.nan}


def _random_polygons(rng: np.random.Generator, x0: float, y0: float, size: float, count: int) -> list:
    """Shapes whose bounding box differs from their area: triangles, rotated squares, discs, rings, L shapes."""
    shapes = []
    for i in range(count):
        cx, cy = x0 + rng.uniform(0.1, 0.9) * size, y0 - rng.uniform(0.1, 0.9) * size
        r = rng.uniform(0.08, 0.22) * size
        kind = i % 5
        if kind == 0:
            angles = np.sort(rng.uniform(0, 2 * np.pi, 3))
            shape = shapely.Polygon(np.column_stack([cx + r * np.cos(angles), cy + r * np.sin(angles)]))
        elif kind == 1:
            a = rng.uniform(0.3, 1.2)
            corners = [(cx + r * np.cos(a + k * np.pi / 2), cy + r * np.sin(a + k * np.pi / 2)) for k in range(4)]
            shape = shapely.Polygon(corners)
        elif kind == 2:
            shape = shapely.Point(cx, cy).buffer(r, 16)
        elif kind == 3:
            shape = shapely.Point(cx, cy).buffer(r, 16).difference(shapely.Point(cx, cy).buffer(r * 0.6, 16))
        else:
            shape = shapely.union(shapely.box(cx - r, cy - r, cx - r / 3, cy + r),
                                  shapely.box(cx - r, cy - r, cx + r, cy - r / 3))
        shapes.append(shape)
    return shapes


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 512 × 512 scene (0.5 m pixels), two context layers of odd shapes, a config; the truth in native CRS."""
    folder = tmp_path_factory.mktemp("ctx")
    spec = SceneSpec(width=512, height=512, seed=21, density=5)
    truth = generate_scene(spec, folder / "a.tif")
    write_vector(truth, folder / "truth.gpkg", layer="truth")
    x0, y0 = spec.transform.c, spec.transform.f
    rng = np.random.default_rng(5)
    layers = []
    for name, count in (("clouds", 16), ("snow", 10)):
        shapes = _random_polygons(rng, x0, y0, 512 * 0.5, count)
        columns = {field: [VALUES[rng.integers(len(VALUES))] if rng.random() < 0.8 else np.nan for _ in shapes]
                   for field in FIELDS}
        frame = gpd.GeoDataFrame(columns, geometry=shapes, crs=truth.crs)
        write_vector(frame, folder / f"{name}.gpkg", layer=name)
        layers.append(frame)
    config = {"images": [{"path": "a.tif", "context": {"cloud": IMAGE_VALUES["cloud"]}}],
              "labels": [{"path": "truth.gpkg", "layer": "truth"}],
              "context_layers": [{"path": "clouds.gpkg"}, {"path": "snow.gpkg"}], "context": {"compute": []}}
    (folder / "catalog.yaml").write_text(yaml.safe_dump(config))
    return {"folder": folder, "truth": truth, "layers": layers, "config": folder / "catalog.yaml"}


def reference_context(points: np.ndarray, layers: list[gpd.GeoDataFrame]) -> dict[str, np.ndarray]:
    """Per point and attribute: the first polygon covering it that has a value, else the image's value."""
    out = {}
    for field in FIELDS:
        values = np.full(len(points), np.nan)
        for frame in layers:
            for geom, value in zip(frame.geometry.array, frame[field], strict=True):
                if np.isnan(value):
                    continue
                hit = shapely.covers(geom, points) & np.isnan(values)
                values[hit] = value
        out[field] = np.where(np.isnan(values), IMAGE_VALUES[field], values)
    return out


def _expected(context: dict[str, np.ndarray], selection: Selection) -> int:
    if not selection.context:
        return len(next(iter(context.values())))
    return int(context_kept(context, selection).sum())


@pytest.fixture(scope="module")
def built(scene):
    path = scene["folder"] / "catalog.gpkg"
    build_catalog(scene["config"], path)
    return path


def test_polygons_differ_from_their_boxes(scene):
    """The fixture is a real test of the defect: many objects lie in a polygon's box but not in the polygon."""
    points = shapely.centroid(scene["truth"].geometry.array)
    box_only = in_shape = 0
    for frame in scene["layers"]:
        for geom in frame.geometry.array:
            inside = shapely.covers(geom, points)
            box_only += int((shapely.covers(shapely.envelope(geom), points) & ~inside).sum())
            in_shape += int(inside.sum())
    assert box_only >= 30 and in_shape >= 30


def test_random_context_selections_match_the_exact_reference(scene, built):
    points = shapely.centroid(scene["truth"].geometry.array)
    context = reference_context(points, scene["layers"])
    rng = np.random.default_rng(17)
    wrong = []
    with open_catalog(built) as catalog:
        assert len(catalog.select(Selection())) == len(points)
        for _ in range(300):
            ranges = {}
            for field in FIELDS:
                if rng.random() < 0.7 or not ranges:
                    low, high = sorted(rng.choice(VALUES, 2))
                    ranges[field] = (None if rng.random() < 0.25 else float(low),
                                     None if rng.random() < 0.25 else float(high))
            selection = Selection(context=ranges)
            got, expected = len(catalog.select(selection)), _expected(context, selection)
            if got != expected:
                wrong.append((ranges, got, expected))
    assert not wrong, f"{len(wrong)} of 300 selections wrong, e.g. {wrong[:3]}"


def test_observation_context_is_stored_per_observation(scene, built):
    """The exact values are in the catalog itself (QGIS shows them as fields of the observations layer)."""
    points = shapely.centroid(scene["truth"].geometry.array)
    context = reference_context(points, scene["layers"])
    layer = gpd.read_file(built, layer="observations")
    wgs84 = gpd.GeoSeries(scene["truth"].geometry.array, crs=scene["truth"].crs).to_crs(4326)
    order = [int(np.argmin(shapely.distance(shapely.centroid(g), shapely.centroid(wgs84.array))))
             for g in layer.geometry]
    for field in FIELDS:  # the stored column holds layer values only; NULL where no polygon gives one
        stored = layer[field].to_numpy(dtype="float64")
        expected = context[field][order]
        given = ~np.isnan(stored)
        assert np.allclose(stored[given], expected[given])
        assert given.sum() > 0


# ---- other CRS, CSV, chunks ---------------------------------------------------------------------------------------
def _variant(scene, tmp_path, layers_config):
    config = yaml.safe_load(scene["config"].read_text())
    for entry in config["images"] + config["labels"]:
        entry["path"] = str(scene["folder"] / entry["path"])
    config["context_layers"] = layers_config
    (tmp_path / "v.yaml").write_text(yaml.safe_dump(config))
    build_catalog(tmp_path / "v.yaml", tmp_path / "v.gpkg")
    return tmp_path / "v.gpkg"


def _all_agree(path, context, seed=4, cases=60):
    rng = np.random.default_rng(seed)
    with open_catalog(path) as catalog:
        for _ in range(cases):
            field = FIELDS[rng.integers(len(FIELDS))]
            low, high = sorted(rng.choice(VALUES, 2))
            selection = Selection(context={field: (float(low), float(high))})
            assert len(catalog.select(selection)) == _expected(context, selection), selection


def test_layers_in_another_crs_and_as_csv_chunk_by_chunk(scene, tmp_path, monkeypatch):
    """A layer in WGS 84 (GeoPackage) and one as CSV with WKT, read 3 features at a time: the same exact answer as
    the polygons reprojected into the image's CRS (the first polygon still wins across chunks)."""
    import aifactory.catalog.build as build

    monkeypatch.setattr(build, "CONTEXT_CHUNK", 3)
    clouds, snow = scene["layers"]
    write_vector(clouds.to_crs(4326), tmp_path / "clouds4326.gpkg", layer="c")
    snow_wgs84 = snow.to_crs(4326)
    snow_wgs84.assign(wkt=shapely.to_wkt(snow_wgs84.geometry.array, rounding_precision=-1)).drop(
        columns="geometry").to_csv(tmp_path / "snow.csv", index=False)
    path = _variant(scene, tmp_path, [{"path": str(tmp_path / "clouds4326.gpkg")},
                                      {"path": str(tmp_path / "snow.csv"), "crs": "EPSG:4326"}])
    native = [frame.to_crs(4326).to_crs(scene["truth"].crs) for frame in (clouds, snow)]
    context = reference_context(shapely.centroid(scene["truth"].geometry.array), native)
    _all_agree(path, context)


@pytest.mark.parametrize("case", ["text_value", "unknown_image", "no_fields", "fraction", "image_fraction"])
def test_bad_context_layers_exit_2(cli, scene, tmp_path, case):
    config = yaml.safe_load(scene["config"].read_text())
    for entry in config["images"] + config["labels"]:
        entry["path"] = str(scene["folder"] / entry["path"])
    frame = scene["layers"][0].copy()
    if case == "text_value":
        frame["cloud"] = frame["cloud"].astype(object)
        frame.loc[frame.index[2], "cloud"] = "high"
    if case == "no_fields":
        frame = frame.rename(columns={"cloud": "nuages", "snow": "neige"})
    if case == "fraction":
        frame.loc[frame.index[1], "snow"] = 130.0
    if case == "image_fraction":
        config["images"][0]["context"] = {"cloud": 1.5e2}
    write_vector(frame, tmp_path / "ctx.gpkg", layer="ctx")
    config["context_layers"] = [{"path": str(tmp_path / "ctx.gpkg"),
                                 **({"image": "elsewhere"} if case == "unknown_image" else {})}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = cli("catalog", "build", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "c.gpkg"), "--events", "none")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("aifactory: error")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert {"text_value": "'high'", "unknown_image": "'elsewhere'", "no_fields": "needs at least one",
            "fraction": "'snow' holds 130; context values are percentages from 0 to 100",
            "image_fraction": "less than or equal to 100"}[case] in lines[0]
    assert not (tmp_path / "c.gpkg").exists()


def test_pixel_space_image_takes_a_pixel_space_layer(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((150, 200, 3), dtype="uint8")).save(tmp_path / "d.png")
    boxes = [shapely.box(x, y, x + 10, y + 10) for x in range(0, 190, 20) for y in range(0, 140, 20)]
    write_vector(gpd.GeoDataFrame({"class": ["car"] * len(boxes)}, geometry=boxes), tmp_path / "l.gpkg", layer="l")
    triangle = shapely.Polygon([(0, 0), (200, 0), (0, 150)])
    write_vector(gpd.GeoDataFrame({"fog": [60.0]}, geometry=[triangle]), tmp_path / "fog.gpkg", layer="fog")
    config = {"images": [{"path": "d.png", "name": "drone"}], "labels": [{"path": "l.gpkg", "image": "drone"}],
              "context_layers": [{"path": "fog.gpkg", "image": "drone"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    build_catalog(tmp_path / "c.yaml", tmp_path / "c.gpkg")
    inside = int(shapely.covers(triangle, shapely.centroid(np.array(boxes))).sum())
    assert 0 < inside < len(boxes)
    with open_catalog(tmp_path / "c.gpkg") as catalog:
        assert len(catalog.select(Selection(context={"fog": (50, None)}))) == inside


# ---- precedence: a layer's value beats the computed tile, which beats the image --------------------------------
def test_layer_value_beats_computed_tile_and_image(tmp_path):
    spec = SceneSpec(width=256, height=256, seed=2, density=3)
    truth = generate_scene(spec, tmp_path / "a.tif")
    write_vector(truth, tmp_path / "truth.gpkg", layer="truth")
    x0, y0 = spec.transform.c, spec.transform.f
    triangle = shapely.Polygon([(x0, y0), (x0 + 128, y0), (x0, y0 - 128)])  # north-west half of the scene
    write_vector(gpd.GeoDataFrame({"vegetation": [99.0]}, geometry=[triangle], crs=truth.crs),
                 tmp_path / "veg.gpkg", layer="veg")
    config = {"images": [{"path": "a.tif", "band_names": ["blue", "green", "red", "nir"]}],
              "labels": [{"path": "truth.gpkg", "layer": "truth"}], "context_layers": [{"path": "veg.gpkg"}],
              "context": {"compute": ["vegetation"], "tile_size": 64}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    build_catalog(tmp_path / "c.yaml", tmp_path / "c.gpkg")
    inside = shapely.covers(triangle, shapely.centroid(truth.geometry.array))
    assert 0 < inside.sum() < len(truth)
    with open_catalog(tmp_path / "c.gpkg") as catalog:
        exactly = catalog.select(Selection(context={"vegetation": (99.0, 99.0)}))
        assert len(exactly) == int(inside.sum())  # computed tiles never give exactly 99.0 on this scene
        assert len(catalog.select(Selection(context={"vegetation": (0, 100)}))) == len(truth)


# ---- both backends -----------------------------------------------------------------------------------------------


def test_postgis_gives_the_same_exact_answer(scene, postgis_server):  # noqa: F811
    points = shapely.centroid(scene["truth"].geometry.array)
    context = reference_context(points, scene["layers"])
    build_catalog(scene["config"], postgis_server.url)
    try:
        with open_catalog(postgis_server.url) as catalog:
            for ranges in ({"cloud": (None, 20.0)}, {"cloud": (45.0, None)}, {"snow": (0.0, 100.0)},
                           {"cloud": (70.0, 100.0), "snow": (None, 45.0)}):
                selection = Selection(context=ranges)
                assert len(catalog.select(selection)) == _expected(context, selection), ranges
        # a database that holds a schema-1 catalog is not silently half-upgraded by a new build
        with open_catalog(postgis_server.url) as catalog, catalog.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE catalog_info SET value = '1' WHERE key = 'schema_version'")
        with pytest.raises(InputError, match="holds a schema-1 catalog"):
            build_catalog(scene["config"], postgis_server.url)
    finally:
        with open_catalog(postgis_server.url) as catalog:
            metadata.drop_all(catalog.engine)


# ---- schema 1 ----------------------------------------------------------------------------------------------------
def _make_schema_1(built, path):
    """What an older aifactory wrote: no per-observation context columns, schema_version 1."""
    path.write_bytes(built.read_bytes())
    with sqlite3.connect(path) as conn:
        for field in ("cloud", "snow", "vegetation", "fog"):
            conn.execute(f"ALTER TABLE observations DROP COLUMN {field}")
        conn.execute("UPDATE catalog_info SET value = '1' WHERE key = 'schema_version'")


def test_schema_1_catalog_refuses_context_selections_in_one_line(cli, built, tmp_path):
    old = tmp_path / "old.gpkg"
    _make_schema_1(built, old)
    select = tmp_path / "select.yaml"
    select.write_text(yaml.safe_dump({"context": {"cloud": [None, 20]}}))
    result = cli("catalog", "query", str(old), "--select", str(select))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("aifactory: error: ") and "schema 1" in lines[0]
    assert "rebuild it with aifactory catalog build" in lines[0] and str(old) in lines[0]
    # what schema 1 got right still works: selections without context
    select.write_text(yaml.safe_dump({"classes": ["building"]}))
    result = cli("catalog", "query", str(old), "--select", str(select), "--json")
    assert result.returncode == 0, result.stderr


def test_newer_schema_is_refused(built, tmp_path):
    new = tmp_path / "new.gpkg"
    new.write_bytes(built.read_bytes())
    with sqlite3.connect(new) as conn:
        conn.execute("UPDATE catalog_info SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(InputError, match="newer"):
        open_catalog(new)
