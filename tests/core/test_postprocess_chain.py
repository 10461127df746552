"""Chains: YAML files, validation errors with key paths, contracts every op keeps, third-party ops."""

from __future__ import annotations

import textwrap
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from aifactory.errors import ConfigError, InputError
from aifactory.io.vector import write_vector
from aifactory.postprocess import OPS, apply_chain, load_chain
from aifactory.progress import CallbackReporter, use_reporter
from shapely import box
from test_postprocess_helpers import ORIGIN, SCHEMA, UTM, detections, noisy_rectangle

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "resources" / "examples").glob("postprocess*.yaml"))


@pytest.fixture(scope="module")
def fence(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fence") / "fence.gpkg"
    area = shapely.transform(box(-10, -10, 60, 60), lambda xy: xy + np.array(ORIGIN))
    write_vector(gpd.GeoDataFrame(geometry=[area], crs=UTM), path, layer="fence")
    return path


def sample_specs(fence: Path) -> dict[str, dict]:
    """One working spec per built-in op (a new op must add its own here)."""
    return {
        "area_filter": {"min_area": 5}, "score_filter": {"min_score": 0.6}, "class_filter": {"exclude": ["tree"]},
        "geofence": {"path": str(fence)}, "make_valid": {}, "remove_holes": {"max_area": 10},
        "remove_slivers": {"min_area": 2}, "simplify": {"tolerance": 0.5},
        "regularize": {"tolerance": 0.5}, "straighten_lines": {}, "smooth": {}, "buffer": {"distance": 1},
        "open": {"distance": 0.5}, "close": {"distance": 0.5}, "merge": {}, "nms": {}, "explode": {},
        "convex_hull": {}, "oriented_box": {}, "bounding_box": {}, "centroids": {},
        "skeletonize": {"tile_cells": 64}, "snap_to_grid": {"grid_size": 0.5}, "attributes": {},
        "dedupe": {"distance": 2}, "reproject": {"crs": "EPSG:4326"}, "scale": {"factor": 0.8},
    }


def mixed_frame(crs: str | None = UTM) -> gpd.GeoDataFrame:
    donut = box(0, 0, 20, 20).difference(box(5, 5, 7, 7))
    return detections([
        donut, box(18, 0, 30, 12), noisy_rectangle(20, 10, 15, (40, 40), 0.2),
        box(100, 0, 160, 6), shapely.LineString([(0, 30), (10, 31), (20, 30)]), shapely.Point(5, 50),
        shapely.MultiPolygon([box(70, 0, 72, 2), box(75, 0, 80, 5)]),
    ], classes=["building", "building", "building", "road", "road", "tree", "tree"], crs=crs)


def test_there_are_at_least_twenty_documented_ops(fence):
    assert len(OPS) >= 20
    builtin = {entry.name for entry in OPS if entry.func.__module__.startswith("aifactory.postprocess.")}
    assert set(sample_specs(fence)) == builtin  # the schema test below skips an op without a spec
    for entry in OPS:
        assert entry.doc, entry.name
        for name, field in entry.params.model_fields.items():
            assert field.description, f"{entry.name}.{name} has no description"


@pytest.mark.parametrize("crs", [UTM, None], ids=["utm", "pixels"])
def test_every_op_keeps_schema_crs_and_area(fence, crs):
    specs = sample_specs(fence)
    frame = mixed_frame(crs)
    for name in OPS.names():
        if name not in specs or (crs is None and name in ("geofence", "reproject")):
            continue
        out = apply_chain(frame, [{"name": name, **specs[name]}])
        assert isinstance(out, gpd.GeoDataFrame), name
        assert list(out.columns[: len(SCHEMA)]) == SCHEMA, name
        expected = None if crs is None else ("EPSG:4326" if name == "reproject" else UTM)
        assert out.crs is None if expected is None else out.crs == expected, name
        assert np.allclose(out["area"], shapely.area(out.geometry.array)), name
        assert len(out) > 0, name


def test_every_op_maps_an_empty_frame_to_an_empty_frame(fence):
    specs = sample_specs(fence)
    empty = mixed_frame().iloc[:0]
    for name in OPS.names():
        out = apply_chain(empty, [{"name": name, **specs.get(name, {})}])
        assert len(out) == 0 and list(out.columns[: len(SCHEMA)]) == SCHEMA, name


def test_pixel_space_ops_refuse_georeferenced_only_steps():
    with pytest.raises(InputError, match="no CRS"):
        apply_chain(mixed_frame(None), [{"name": "reproject", "crs": "EPSG:4326"}])


def test_yaml_chain_runs_in_order_and_reports_progress(tmp_path):
    path = tmp_path / "chain.yaml"
    path.write_text(textwrap.dedent("""\
        ops:
          - make_valid
          - {name: area_filter, min_area: 50}
          - {remove_holes: {max_area: 10}}
          - name: regularize
            classes: [building]
            tolerance: 0.5
          - {name: attributes, measures: [elongation]}
    """))
    specs = load_chain(path)
    assert [spec["name"] for spec in specs] == ["make_valid", "area_filter", "remove_holes", "regularize",
                                                "attributes"]
    events: list[dict] = []
    with use_reporter(CallbackReporter(events.append)):
        out = apply_chain(mixed_frame(), specs)
    assert out["tile_id"].tolist() == ["t0", "t1", "t2", "t3"]  # the 6 m² part, line and point dropped by area
    assert shapely.get_num_interior_rings(out.geometry.array[0]) == 0
    assert "elongation" in out.columns
    progress = [e for e in events if e["event"] == "progress" and e["task"] == "postprocess"]
    assert [e["value"] for e in progress] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert "regularize" in progress[3]["message"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_chains_validate_and_run(example):
    frame = mixed_frame()
    frame.loc[frame["class"] == "tree", "class"] = "vegetation/tree"
    out = apply_chain(frame, load_chain(example))
    assert len(out) and shapely.is_valid(out.geometry.array).all()


def test_relative_paths_are_relative_to_the_chain_file(tmp_path, fence):
    folder = tmp_path / "chains"
    folder.mkdir()
    (folder / "fence.gpkg").write_bytes(fence.read_bytes())
    (folder / "chain.yaml").write_text("ops:\n  - {name: geofence, path: fence.gpkg}\n")
    specs = load_chain(folder / "chain.yaml")
    assert specs[0]["path"] == str(folder.resolve() / "fence.gpkg")
    assert apply_chain(mixed_frame(), specs)["tile_id"].tolist() == ["t0", "t1", "t2", "t4", "t5"]
    inline = apply_chain(mixed_frame(), [{"name": "geofence", "path": "fence.gpkg"}], base_dir=folder)
    assert inline["tile_id"].tolist() == ["t0", "t1", "t2", "t4", "t5"]


@pytest.mark.parametrize("body, expected", [
    ("ops:\n  - make_valid\n  - {name: area_filter, min_area: 20}\n  - {name: simplfy}\n",
     ": ops.2: unknown postprocess op 'simplfy'; did you mean simplify"),
    ("ops:\n  - make_valid\n  - make_valid\n  - make_valid\n  - {name: area_filter, min_are: 20}\n",
     ": ops.3.min_are: unknown key"),
    ("ops:\n  - {name: area_filter, min_area: big}\n", ": ops.0.min_area: Input should be a valid number"),
    ("ops:\n  - {name: area_filter, min_area: -1}\n", ": ops.0.min_area: Input should be greater than or equal"),
    ("ops:\n  - {name: simplify, method: fast}\n", ": ops.0.method: Input should be 'douglas_peucker'"),
    ("ops:\n  - {name: nms, classes: building}\n", ": ops.0.classes: Input should be a valid list"),
    ("ops:\n  - {name: geofence, path: nowhere.gpkg}\n", ": ops.0.path: Path does not point to a file"),
    ("ops:\n  - {name: reproject, crs: EPSG:99999}\n", ": ops.0.crs: Value error, not a CRS"),
    ("ops:\n  - {name: buffer}\n", ": ops.0.distance: required key is missing"),
    ("ops: make_valid\n", ": ops: Input should be a valid list"),
    ("opps: []\n", ": opps: unknown key (did you mean 'ops'?)"),
    ("ops:\n  - [make_valid]\n", ": ops.0: expected a postprocess op name or a mapping"),
])
def test_chain_errors_name_the_file_and_key_path(tmp_path, body, expected):
    path = tmp_path / "ops.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as excinfo:
        load_chain(path)
    message = str(excinfo.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message, message


def test_python_chains_are_validated_before_anything_runs():
    with pytest.raises(ConfigError, match=r"^postprocess: ops\.1\.tolerance: Input should be greater than 0"):
        apply_chain(mixed_frame(), ["make_valid", {"name": "simplify", "tolerance": 0}])
    with pytest.raises(InputError, match="no 'class' column"):
        apply_chain(mixed_frame().drop(columns="class"), [{"name": "smooth", "classes": ["tree"]}])


def test_third_party_op_through_a_real_entry_point(tmp_path, cli):
    """A distribution installed into a temporary site dir (dist-info + module) adds an op."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "bigfirst_ops.py").write_text(textwrap.dedent('''\
        """A third-party op: keep the n largest features."""
        import geopandas as gpd
        from pydantic import Field

        from aifactory.config import StrictModel
        from aifactory.postprocess import OPS


        class LargestParams(StrictModel):
            n: int = Field(1, ge=1, description="how many features to keep")


        @OPS.register("keep_largest", LargestParams)
        def keep_largest(frame: gpd.GeoDataFrame, params: LargestParams) -> gpd.GeoDataFrame:
            """Keep the n largest features."""
            return frame.loc[frame.geometry.area.sort_values(ascending=False).index[: params.n]].copy()
    '''))
    dist = site / "bigfirst_ops-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bigfirst-ops\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aifactory.postprocess]\nkeep_largest = bigfirst_ops\n")
    env = {"PYTHONPATH": str(site)}
    listed = cli("postprocess", "--list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith("keep_largest  n=1 (int)") for line in listed.stdout.splitlines())
    source, output, chain = tmp_path / "in.gpkg", tmp_path / "out.gpkg", tmp_path / "ops.yaml"
    write_vector(mixed_frame(), source, layer="detections")
    chain.write_text("ops:\n  - {name: keep_largest, n: 2}\n")
    result = cli("postprocess", str(source), "-o", str(output), "--ops", str(chain), "--events", "none", env=env)
    assert result.returncode == 0, result.stderr
    assert gpd.read_file(output, layer="detections")["tile_id"].tolist() == ["t0", "t3"]
