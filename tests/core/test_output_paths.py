"""Outputs go where they belong: a folder output never replaces what it did not write (notes, the command's own
inputs), a file is not written over a folder nor a folder over a file, and each mistake is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from aifactory.io.output_paths import LISTING_NAME
from test_predict_support import predict_scene, trained_run  # noqa: F401  (shared session fixtures)

EXAMPLES = Path(__file__).resolve().parents[2] / "resources" / "examples"
SWEEP = ("--sweep", "score=0.1:0.9:0.2", "--events", "none")


@pytest.fixture()
def layers(tmp_path: Path, small_scene: tuple[Path, Path]) -> tuple[Path, Path]:
    """Detections (the truth itself, scored) and the truth, as an analyst keeps them in a project folder."""
    _, truth = small_scene
    folder = tmp_path / "project"
    folder.mkdir()
    frame = gpd.read_file(truth)
    frame.assign(score=0.8).to_file(folder / "pred.gpkg", layer="detections")
    frame.to_file(folder / "truth.gpkg", layer="truth")
    return folder / "pred.gpkg", folder / "truth.gpkg"


def one_error_line(done) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aifactory: error: "), lines
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_output_never_replaces_the_inputs_and_notes_beside_it(cli, layers):
    pred, truth = layers
    project = pred.parent
    (project / "notes.txt").write_text("where the client wants roofs\n")
    (project / "sub").mkdir()
    before = snapshot(project)
    done = cli("rps", "--pred", str(pred), "--truth", str(truth), "-o", str(project), *SWEEP)
    line = one_error_line(done)
    assert "notes.txt, pred.gpkg, sub and 1 more" in line and "nothing was changed" in line
    assert snapshot(project) == before and (project / "sub").is_dir()
    # the same from inside the folder, as "-o ."
    done = cli("rps", "--pred", "pred.gpkg", "--truth", "truth.gpkg", "-o", ".", *SWEEP, cwd=project)
    assert "is the current folder" in one_error_line(done)
    assert snapshot(project) == before


def test_a_folder_output_is_replaced_by_the_same_output_but_not_over_a_file_added_since(cli, layers, tmp_path):
    pred, truth = layers
    out = tmp_path / "rps"
    for _ in range(2):
        done = cli("rps", "--pred", str(pred), "--truth", str(truth), "-o", str(out), *SWEEP)
        assert done.returncode == 0, done.stderr
    assert (out / LISTING_NAME).is_file() and (out / "operating_point.json").is_file()
    (out / "notes.txt").write_text("mine\n")
    done = cli("rps", "--pred", str(pred), "--truth", str(truth), "-o", str(out), *SWEEP)
    assert "notes.txt" in one_error_line(done)
    assert (out / "notes.txt").read_text() == "mine\n"


def test_a_folder_holding_files_but_no_listing_is_refused_before_the_work(cli, layers, tmp_path):
    """Nothing tells it from the analyst's folder (an output of a version before the listing is moved once)."""
    pred, truth = layers
    out = tmp_path / "rps"
    assert cli("rps", "--pred", str(pred), "--truth", str(truth), "-o", str(out), *SWEEP).returncode == 0
    (out / LISTING_NAME).unlink()  # as an earlier version left it
    before = snapshot(out)
    done = cli("rps", "--pred", str(pred), "--truth", str(truth), "-o", str(out), "--sweep", "score=0.1:0.9:0.2")
    assert "operating_point.json" in one_error_line(done)  # no progress bar either: refused before the work
    assert snapshot(out) == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary left"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("rps", "--pred", str(pred), "--truth", str(truth), "-o", str(empty), *SWEEP).returncode == 0


def test_files_and_folders_are_not_mistaken_for_each_other(cli, layers, tmp_path):
    pred, truth = layers
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    done = cli("evaluate", "--pred", str(pred), "--truth", str(truth), "--json", str(pred.parent), "--events", "none")
    assert f"{pred.parent}: is a folder" in one_error_line(done)
    done = cli("rps", "--pred", str(pred), "--truth", str(truth), "-o", str(afile), *SWEEP)
    assert f"{afile}: is a file, not a folder" in one_error_line(done)
    done = cli("evaluate", "--pred", str(pred), "--truth", str(truth), "--json", str(afile / "m.json"),
               "--events", "none")
    assert f"{afile} is a file, not a folder" in one_error_line(done)
    done = cli("synth", "-o", str(afile / "scene.tif"), "--size", "64x64", "--events", "none")
    assert f"{afile} is a file, not a folder" in one_error_line(done)
    assert afile.read_text() == "not a folder\n"
    done = cli("synth", "-o", str(pred.parent), "--size", "64x64", "--events", "none")
    assert f"{pred.parent}: is a folder" in one_error_line(done)  # checked before the scene is written


def test_a_vector_output_needs_a_vector_file_name(cli, layers, tmp_path):
    pred, _ = layers
    ops = EXAMPLES / "postprocess_buildings.yaml"
    done = cli("postprocess", str(pred), "-o", str(tmp_path / "cleaned"), "--ops", str(ops),
               "--events", "none")
    assert "not a vector file name: end it in .gpkg" in one_error_line(done)
    assert not (tmp_path / "cleaned").exists()


def test_a_usage_mistake_click_finds_is_one_line_too(cli):
    done = cli("predict", "--model", "run", "--raster", "r.tif", "-o", "out", "--batch-size", "0")
    line = one_error_line(done)
    assert "'--batch-size': 0 is not in the range" in line and "(see 'aifactory predict --help')" in line


def test_predict_into_a_file_is_refused_before_the_model_runs(cli, tmp_path, trained_run, predict_scene):  # noqa: F811
    raster, _ = predict_scene
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    done = cli("predict", "--model", str(trained_run), "--raster", str(raster), "-o", str(afile), "--events", "none")
    assert one_error_line(done) == f"aifactory: error: {afile}: is a file, not a folder: give the folder to write into"
