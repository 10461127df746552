"""Bad input around models, as an analyst makes it: damaged dataset chips, a file that is no MLflow store, a
round config with typos, outputs of the wrong kind, errors that do not say where. Each is one line, exit 2,
found before the long work where it can be."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from aifactory.active.rounds import run_round
from aifactory.errors import AIFactoryError, ConfigError, InputError
from aifactory.io.vector import read_vector, write_vector
from aifactory.pipeline.runner import run as run_pipeline
from aifactory.pipeline.spec import load_pipeline
from aifactory.tracking.registry import list_models
from aifactory.tracking.store import check_store
from aifactory.training.config import TrainConfig
from aifactory.training.loop import train
from test_active_support import TRAIN, make_scene
from test_training_support import config_data, make_dataset, write_config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), size=256)


def copy_dataset(dataset: Path, folder: Path) -> tuple[Path, Path]:
    """A copy of ``dataset`` and the image of its ninth train chip (read after the first steps)."""
    copy = Path(shutil.copytree(dataset, folder / "dataset"))
    chips = pd.read_csv(copy / "chips.csv")
    return copy, copy / chips[chips["split"] == "train"]["image"].iloc[8]


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("aifactory: error:")]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# -- damaged chips -------------------------------------------------------------------------------------------
def test_truncated_chip_is_refused_before_training_and_leaves_no_run_folder(dataset, tmp_path, cli):
    copy, chip = copy_dataset(dataset, tmp_path)
    chip.write_bytes(chip.read_bytes()[:300])
    config = write_config(tmp_path / "t.yaml", copy, epochs=1)
    result = cli("train", str(config), "-o", str(tmp_path / "run"))
    assert result.returncode == 2
    assert one_line(result.stderr).endswith(f"{chip}: chip is truncated or corrupt")
    assert not (tmp_path / "run").exists()


def test_missing_chip_is_named(dataset, tmp_path):
    copy, chip = copy_dataset(dataset, tmp_path)
    mask = copy / "masks" / chip.name
    mask.unlink()
    with pytest.raises(InputError, match=rf"^{mask}: chip is missing$"):
        train(TrainConfig.model_validate(config_data(copy, epochs=1)), tmp_path / "run", device="cpu")


def test_chip_damaged_in_place_stops_loader_workers_with_one_line_and_the_run_resumes(dataset, tmp_path):
    copy, chip = copy_dataset(dataset, tmp_path)
    good = chip.read_bytes()
    chip.write_bytes(b"x" * 400 + good[400:])  # the size is right: only reading finds it
    config = TrainConfig.model_validate(config_data(copy, epochs=1, num_workers=2))
    run = tmp_path / "run"
    with pytest.raises(InputError) as caught:
        train(config, run, device="cpu")
    assert str(caught.value) == f"{chip}: chip is truncated or corrupt"
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"
    chip.write_bytes(good)
    train(config, run, resume=True, device="cpu")
    assert json.loads((run / "manifest.json").read_text())["status"] == "finished"


# -- MLflow stores -------------------------------------------------------------------------------------------
def test_a_file_that_is_no_database_is_not_an_mlflow_store(tmp_path, cli):
    fake = tmp_path / "fake.tif"
    fake.write_text("not a database, just text\n" * 20)
    for uri in (f"sqlite:///{fake}", str(fake)):
        command = ["registry", "list", "--tracking-uri", uri]
        result = cli(*command)
        assert result.returncode == 2
        assert one_line(result.stderr) == f"aifactory: error: {fake}: not an MLflow store (file is not a database)"
    result = cli("predict", "--model", "models:/trees@production", "--raster", str(fake), "-o", str(tmp_path / "p"),
                 env={"MLFLOW_TRACKING_URI": f"sqlite:///{fake}"})
    assert one_line(result.stderr).endswith("not an MLflow store (file is not a database)")
    result = cli("runs", "list", "--tracking-uri", f"sqlite:///{fake}")  # runs read the store the same way
    assert one_line(result.stderr) == f"aifactory: error: {fake}: not an MLflow store (file is not a database)"
    result = cli("runs", "list", str(fake))
    assert one_line(result.stderr) == f"aifactory: error: {fake}: is a file, not a folder of runs"


def test_a_geopackage_is_refused_and_left_untouched(tmp_path, small_scene):
    truth = small_scene[1]
    before = truth.read_bytes()
    with pytest.raises(InputError, match="not an MLflow store"):
        list_models(tracking_uri=str(truth))
    assert truth.read_bytes() == before


def test_a_path_ending_in_db_is_a_sqlite_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"reg: folder not found \(for the MLflow store mlruns.db\)"):
        check_store("reg/mlruns.db")
    (tmp_path / "reg").mkdir()
    assert check_store("reg/mlruns.db") == f"sqlite:///{tmp_path / 'reg' / 'mlruns.db'}"
    assert list_models(tracking_uri="reg/mlruns.db") == []
    with pytest.raises(ConfigError, match=rf"use a SQLite file: sqlite:///{tmp_path / 'reg' / 'mlruns.db'}"):
        check_store("reg")


def test_training_refuses_a_wrong_store_before_it_starts(dataset, tmp_path):
    fake = tmp_path / "fake.db"
    fake.write_text("text")
    config = TrainConfig.model_validate(config_data(dataset, tracking={"uri": str(fake)}))
    with pytest.raises(InputError, match=r"^t.yaml: tracking.uri: .*fake.db: not an MLflow store"):
        train(config, tmp_path / "run", device="cpu", source="t.yaml")
    assert not (tmp_path / "run").exists()


# -- al round and al select ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def round_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("round")
    _, truth, _ = make_scene(folder)
    shutil.copy(truth, folder / "annotations.gpkg")
    return folder


def write_round(folder: Path, **changes: object) -> Path:
    data = {"rasters": ["scene.tif"], "annotations": {"path": "annotations.gpkg", "layer": "truth"}, "n": 2,
            "tile_size": 64, "train": {k: v for k, v in TRAIN.items() if k != "dataset"}, **changes}
    path = folder / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("change", "expected"), [
    ({"train": {"model": {"architecture": "unett"}}}, "train.model.architecture: unknown architecture 'unett'"),
    ({"train": {"loss": [{"name": "dicee"}]}}, "train.loss.0.name: unknown loss 'dicee'"),
    ({"select": {"strategy": "bld"}}, "select.strategy: unknown acquisition function 'bld'"),
    ({"rasters": ["nope.tif"]}, "rasters.0: "),
    ({"annotations": {"path": "fake.gpkg"}}, "annotations.path: "),
    ({"annotations": {"path": "annotations.gpkg", "layer": "truth", "class_field": "kind"}},
     "annotations.class_field: no field 'kind'"),
    ({"annotations": {"path": "annotations.gpkg", "layer": "trees"}}, "annotations.layer: no layer 'trees'"),
])
def test_round_config_is_checked_whole_on_the_first_call(round_folder, change, expected):
    (round_folder / "fake.gpkg").write_text("not a GeoPackage")
    path = write_round(round_folder, **change)
    with pytest.raises(AIFactoryError) as caught:
        run_round(path, device="cpu")
    assert str(caught.value).startswith(f"{path}: {expected}")
    assert not list(round_folder.glob("round-*"))


def test_round_without_annotations_file_says_where_once_tiles_are_tagged(tmp_path):
    make_scene(tmp_path)
    path = write_round(tmp_path, annotations={"path": "drawn.gpkg"}, select={"strategy": "random"})
    run_round(path, device="cpu")  # the analyst may create the annotation layer after seeing the tiles
    tiles = tmp_path / "round-1" / "tiles.gpkg"
    frame = read_vector(tiles, layer="tiles")
    frame["status"] = "tagged"
    write_vector(frame, tiles, layer="tiles")
    expected = rf"^{path}: annotations.path: {tmp_path / 'drawn.gpkg'}: vector file not found"
    with pytest.raises(InputError, match=expected):
        run_round(path, device="cpu")


def test_al_select_output_must_be_a_geopackage(round_folder, tmp_path, cli):
    for name in ("x10.txt", "x13.shp"):
        result = cli("al", "select", "--raster", str(round_folder / "scene.tif"), "--n", "3", "--strategy", "random",
                     "--tile-size", "64", "-o", str(tmp_path / name))
        assert result.returncode == 2
        assert "give a path ending in .gpkg" in one_line(result.stderr)
        assert not (tmp_path / name).exists()


# -- where the error is --------------------------------------------------------------------------------------
def test_train_errors_name_the_yaml_file_and_key(dataset, tmp_path, cli):
    (tmp_path / "T").mkdir()
    no_dataset = tmp_path / "T" / "t.yaml"
    no_dataset.write_text(yaml.safe_dump({**config_data(dataset), "dataset": "nodataset"}))
    result = cli("train", str(no_dataset), "-o", str(tmp_path / "r1"))
    expected = f"aifactory: error: {no_dataset}: dataset: {tmp_path / 'T' / 'nodataset'}: not a dataset folder"
    assert one_line(result.stderr).startswith(expected)
    weights = write_config(tmp_path / "T" / "w.yaml", dataset, model={"architecture": "unet", "weights": "nope.pt"})
    result = cli("train", str(weights), "-o", str(tmp_path / "r2"))
    assert one_line(result.stderr) == (f"aifactory: error: {weights}: model.weights: {tmp_path / 'T' / 'nope.pt'}: "
                                       "weights file not found")


def test_pipeline_task_errors_carry_the_task_and_parameter(tmp_path):
    path = tmp_path / "failing.yaml"
    path.write_text(yaml.safe_dump({"name": "f", "tasks": {"check": {"task": "raster_info",
                                                                      "params": {"raster": "missing.tif"}}}}))
    with pytest.raises(InputError) as caught:
        run_pipeline(load_pipeline(path))
    assert str(caught.value) == f"{path}: tasks.check.params.raster: {tmp_path / 'missing.tif'}: raster not found"


def test_a_misspelt_key_is_told_before_the_required_key_it_stands_for(tmp_path):
    path = tmp_path / "misspelt.yaml"
    path.write_text(yaml.safe_dump({"name": "m", "tasks": {"p": {"task": "predict",
                                                                  "params": {"model": "run", "raster": "r.tif"}}}}))
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    hint = "unknown key (did you mean 'models'?) (and 1 more error)"
    assert str(caught.value) == f"{path}: tasks.p.params: model: {hint}"


# -- predict's TTA options -----------------------------------------------------------------------------------
def test_tta_errors_name_the_option(tmp_path, small_scene, cli):
    bundle = tmp_path / "ok.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("bundle.json", "{}")
    result = cli("predict", "--model", str(bundle), "--tta", "--raster", str(small_scene[0]), "-o", str(tmp_path / "p"))
    assert one_line(result.stderr).startswith("aifactory: error: --tta: a bundle predicts without TTA")
    result = cli("predict", "--model", str(bundle), "--tta", "--tta-mode", "none", "--raster", str(small_scene[0]),
                 "-o", str(tmp_path / "p"))
    assert result.returncode == 2 and "--tta-mode none" in one_line(result.stderr)


def read_only_run(source: Path, target: Path, command: str) -> subprocess.CompletedProcess[str]:
    """``aifactory COMMAND`` with ``source`` mounted read-only at ``target`` (a private mount namespace)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare here")
    target.mkdir()
    script = (f"mount --bind {source} {target} && mount -o remount,ro,bind {target} && "
              f"{sys.executable} -m aifactory.cli {command}")
    done = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    if "mount" in done.stderr and done.returncode != 2:
        pytest.skip(f"no private read-only mount here: {done.stderr.strip()[:80]}")
    return done


def test_a_new_store_in_a_read_only_folder_is_one_line(tmp_path):
    """SQLite's "unable to open database file" came out of MLflow as two tracebacks (~200 lines)."""
    (tmp_path / "src").mkdir()
    target = tmp_path / "ro"
    done = read_only_run(tmp_path / "src", target, f"registry list --tracking-uri {target / 'r.db'}")
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"aifactory: error: {target / 'r.db'}: cannot create the MLflow store: {target} is not writable "
        "(a read-only file system, or no permission)"]


def test_an_existing_store_on_a_read_only_mount_is_read_but_not_written(tmp_path):
    """SQLite's "attempt to write a readonly database" came out of MLflow as a 60-line log and traceback."""
    (tmp_path / "src").mkdir()
    assert list_models(tracking_uri=str(tmp_path / "src" / "r.db")) == []  # a real, empty MLflow store
    target = tmp_path / "ro"
    listed = read_only_run(tmp_path / "src", target, f"registry list --tracking-uri {target / 'r.db'}")
    assert listed.returncode == 0, listed.stderr
    done = read_only_run(tmp_path / "src", tmp_path / "ro2",
                         f"registry alias trees 1 production --tracking-uri {tmp_path / 'ro2' / 'r.db'}")
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"aifactory: error: {tmp_path / 'ro2' / 'r.db'}: the MLflow store cannot be written (a read-only file "
        "system, or no permission)"]
