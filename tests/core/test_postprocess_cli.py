"""``aifactory postprocess``: the command as a user runs it (exit codes, streams, files)."""

from __future__ import annotations

import json

import geopandas as gpd
import pyogrio
import pytest
import shapely
from aifactory.io.vector import write_vector
from PIL import Image
from shapely import box
from test_postprocess_helpers import SCHEMA, detections


@pytest.fixture()
def workspace(tmp_path):
    frame = detections([box(0, 0, 10, 10), box(1, 0, 11, 10), box(50, 50, 52, 52)], scores=[0.6, 0.9, 0.8])
    source = tmp_path / "detections.gpkg"
    write_vector(frame, source, layer="detections")
    write_vector(frame.iloc[:1], source.with_name("other.gpkg"), layer="first")
    chain = tmp_path / "ops.yaml"
    chain.write_text("ops:\n  - make_valid\n  - {name: nms, iou_threshold: 0.5}\n"
                     "  - {name: area_filter, min_area: 5}\n")
    return tmp_path, source, chain


def test_postprocess_writes_the_chain_result(cli, workspace):
    folder, source, chain = workspace
    output = folder / "out" / "clean.gpkg"
    picture = folder / "out" / "before_after.png"
    result = cli("postprocess", str(source), "-o", str(output), "--ops", str(chain), "--plot", str(picture))
    assert result.returncode == 0, result.stderr
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.width > 600 and len(image.getcolors(2**16) or range(99)) > 8
    assert pyogrio.list_layers(output)[:, 0].tolist() == ["detections"]
    out = gpd.read_file(output, layer="detections")
    assert out["tile_id"].tolist() == ["t1"] and list(out.columns[: len(SCHEMA)]) == SCHEMA
    assert out.crs.to_epsg() == 32631 and "3 features in, 1 out" in result.stderr


def test_postprocess_jsonl_events(cli, workspace):
    folder, source, chain = workspace
    result = cli("postprocess", str(source), "-o", str(folder / "o.gpkg"), "--ops", str(chain), "--events", "jsonl")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert {e["event"] for e in events} >= {"progress", "artifact", "done"}
    assert [e["value"] for e in events if e["event"] == "progress" and e["task"] == "postprocess"][-1] == 1.0
    assert events[-1] == {"event": "done", "status": "ok"}


def test_postprocess_list(cli):
    result = cli("postprocess", "--list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) >= 20
    assert any(line.startswith("nms  iou_threshold=0.5 (float)") for line in lines)
    assert [line.split()[0] for line in lines] == sorted(line.split()[0] for line in lines)


@pytest.mark.parametrize("body, expected", [
    ("ops:\n  - {name: nmss}\n", "ops.0: unknown postprocess op 'nmss'; did you mean nms"),
    ("ops:\n  - make_valid\n  - {name: nms, iou: 0.5}\n", "ops.1.iou: unknown key"),
    ("ops:\n  - {name: nms, iou_threshold: high}\n", "ops.0.iou_threshold: Input should be a valid number"),
])
def test_postprocess_bad_chain_exits_2_with_one_line(cli, workspace, body, expected):
    folder, source, chain = workspace
    chain.write_text(body)
    output = folder / "never.gpkg"
    result = cli("postprocess", str(source), "-o", str(output), "--ops", str(chain))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"aifactory: error: {chain}: {expected}"), result.stderr
    assert "Traceback" not in result.stderr and not output.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["detections.gpkg", "ops.yaml", "other.gpkg"]


def test_postprocess_bad_input_exits_2(cli, workspace):
    folder, source, chain = workspace
    missing = cli("postprocess", str(folder / "nope.gpkg"), "-o", str(folder / "o.gpkg"), "--ops", str(chain))
    assert missing.returncode == 2 and "vector file not found" in missing.stderr and "Traceback" not in missing.stderr
    usage = cli("postprocess", str(source))
    assert usage.returncode == 2 and "missing -o/--output, --ops" in usage.stderr


def test_postprocess_pixel_space_layer_choice_and_empty_output(cli, workspace):
    folder, _, chain = workspace
    pixels = detections([box(0, 0, 10, 10), box(20, 0, 21, 1)], crs=None)
    source = folder / "pixels.gpkg"
    write_vector(pixels, source, layer="raw")
    output = folder / "pixels_out.gpkg"
    assert cli("postprocess", str(source), "-o", str(output), "--ops", str(chain)).returncode == 0
    out = gpd.read_file(output, layer="raw")
    assert out.crs is None and out["tile_id"].tolist() == ["t0"]
    chain.write_text("ops:\n  - {name: score_filter, min_score: 0.99}\n")
    empty = folder / "empty.gpkg"
    result = cli("postprocess", str(folder / "other.gpkg"), "-o", str(empty), "--ops", str(chain), "--layer", "first")
    assert result.returncode == 0, result.stderr
    out = gpd.read_file(empty, layer="first")
    assert len(out) == 0 and list(out.columns[: len(SCHEMA)]) == SCHEMA
    assert shapely.get_type_id(out.geometry.array).size == 0
