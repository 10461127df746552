"""The MLflow model registry against a real SQLite store: register, alias, list, resolve, predict from it."""

from __future__ import annotations

import json
import shutil
import zipfile

import geopandas as gpd
import pytest
from aifactory.cli import main
from aifactory.errors import InputError
from aifactory.prediction import predict
from aifactory.tracking.registry import (
    get_version,
    list_models,
    register_model,
    resolve_model_uri,
    set_alias,
)
from test_bundle_support import bundle_dir, predict_scene, trained_run  # noqa: F401  (session fixtures)

# mlflow's own SQLAlchemy mappers (not ours) use a deprecated loader strategy
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh SQLite store with the bundle as version 1 (@production) and the run folder as version 2."""
    folder = tmp_path_factory.mktemp("registry")
    return f"sqlite:///{folder / 'mlruns.db'}", folder


@pytest.fixture(scope="module")
def registered(store, bundle_dir, trained_run):  # noqa: F811
    uri, _ = store
    first = register_model(bundle_dir / "model.zip", "trees", alias="production", tracking_uri=uri)
    second = register_model(trained_run, "trees", tracking_uri=uri)
    return first, second


def test_register_list_alias_resolve(store, registered, bundle_dir, trained_run):  # noqa: F811
    uri, folder = store
    bundle, run = registered
    assert (bundle.version, bundle.kind, bundle.aliases, bundle.file) == (1, "bundle", ["production"], "model.zip")
    assert (run.version, run.kind, run.aliases) == (2, "run", [])
    # the artifacts are copies in the store's artifact folder, next to the database
    path = resolve_model_uri("models:/trees@production", tracking_uri=uri)
    assert path.name == "model.zip" and path.is_relative_to(folder / "mlartifacts")
    assert path.read_bytes() == (bundle_dir / "model.zip").read_bytes()
    run_path = resolve_model_uri("models:/trees/2", tracking_uri=uri)
    assert (run_path / "model.pt").read_bytes() == (trained_run / "model.pt").read_bytes()
    assert json.loads((run_path / "model.json").read_text()) == json.loads((trained_run / "model.json").read_text())
    assert not (run_path / "checkpoints").exists()
    # moving the alias
    set_alias("trees", 2, "production", tracking_uri=uri)
    set_alias("trees", 1, "previous", tracking_uri=uri)
    assert get_version("models:/trees@production", tracking_uri=uri).version == 2
    listed = {(v.name, v.version): v.aliases for v in list_models(tracking_uri=uri)}
    assert listed == {("trees", 1): ["previous"], ("trees", 2): ["production"]}
    set_alias("trees", 1, "production", tracking_uri=uri)  # back, for the tests below


def test_predict_takes_a_registry_uri(store, registered, predict_scene, tmp_path, monkeypatch):  # noqa: F811
    uri, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    raster, _ = predict_scene
    result = predict(["models:/trees@production"], raster, tmp_path / "out")
    assert result.precision == "fp32"  # the bundle (ONNX Runtime), not the run folder
    detections = gpd.read_file(result.detections, layer="raw_detections")
    assert len(detections) > result.detections_count > 0  # the packaged operating point filtered some


def test_register_a_tracked_run_links_the_training_run(store, trained_run, tmp_path):  # noqa: F811
    from mlflow.tracking import MlflowClient

    uri, _ = store
    client = MlflowClient(uri)
    experiment = client.create_experiment("training", artifact_location=(tmp_path / "artifacts").as_uri())
    training = client.create_run(experiment, run_name="r1")
    run_dir = tmp_path / "r1"
    shutil.copytree(trained_run, run_dir)
    (run_dir / "report").mkdir()
    (run_dir / "report" / "curves.png").write_bytes(b"\x89PNG")
    (run_dir / "manifest.json").write_text(json.dumps({"mlflow": {"uri": uri, "run_id": training.info.run_id}}))
    version = register_model(run_dir, "trees-tracked", tracking_uri=uri)
    assert version.run_id == training.info.run_id
    names = {a.path for a in client.list_artifacts(training.info.run_id, "model")}
    assert {"model/model.json", "model/model.pt", "model/manifest.json", "model/report"} <= names
    assert (resolve_model_uri("models:/trees-tracked/1", tracking_uri=uri) / "report" / "curves.png").is_file()


def test_registry_mistakes_are_one_line_errors(store, registered, bundle_dir, tmp_path):  # noqa: F811
    uri, _ = store
    corrupt = tmp_path / "broken.zip"
    corrupt.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InputError, match="alias nope not found"):
        resolve_model_uri("models:/trees@nope", tracking_uri=uri)
    with pytest.raises(InputError, match="expected models:/NAME@ALIAS"):
        resolve_model_uri("models:/trees", tracking_uri=uri)
    with pytest.raises(InputError, match="version=9"):
        set_alias("trees", 9, "production", tracking_uri=uri)
    with pytest.raises(InputError, match="not found"):
        register_model(tmp_path / "nothing", "trees", tracking_uri=uri)
    with pytest.raises(InputError, match="corrupt zip"):
        register_model(corrupt, "trees", tracking_uri=uri)
    damaged = tmp_path / "damaged.zip"  # a zip that opens, its network's bytes spoilt halfway
    shutil.copy(bundle_dir / "model.zip", damaged)
    info = zipfile.ZipFile(damaged).getinfo("model.onnx")
    with open(damaged, "r+b") as handle:
        handle.seek(info.header_offset + 200 + info.compress_size // 2)
        handle.write(bytes(64))
    with pytest.raises(InputError, match=r"corrupt bundle member model\.onnx"):
        register_model(damaged, "trees", tracking_uri=uri)
    artifacts = sorted(p.name for p in store[1].rglob("*"))
    for name, alias, said in (("bad/name", None, "--name: Invalid model name"),
                              ("trees", "bad alias!", "--alias: Invalid alias name"),
                              ("trees", "latest", "--alias: 'latest' alias name")):
        with pytest.raises(InputError, match=said):  # refused before anything is stored
            register_model(bundle_dir / "model.zip", name, alias=alias, tracking_uri=uri)
    assert sorted(p.name for p in store[1].rglob("*")) == artifacts
    assert [v.version for v in list_models(tracking_uri=uri) if v.name == "trees"] == [1, 2]  # nothing added


def test_registry_cli(store, registered, bundle_dir, capsys):  # noqa: F811
    uri, _ = store
    assert main(["registry", "register", str(bundle_dir / "model.zip"), "--name", "cli-model", "--alias",
                 "production", "--tracking-uri", uri, "--events", "none"]) == 0
    assert "as cli-model version 1 @production" in capsys.readouterr().err
    assert main(["registry", "register", str(bundle_dir / "model.zip"), "--name", "cli-model", "--tracking-uri", uri,
                 "--events", "none"]) == 0
    assert main(["registry", "alias", "cli-model", "2", "production", "--tracking-uri", uri]) == 0
    capsys.readouterr()
    assert main(["registry", "list", "--json", "--tracking-uri", uri]) == 0
    listed = [v for v in json.loads(capsys.readouterr().out) if v["name"] == "cli-model"]
    assert [(v["version"], v["aliases"]) for v in listed] == [(1, []), (2, ["production"])]
    assert main(["registry", "resolve", "models:/cli-model@production", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.strip().endswith("/model/model.zip")
    assert main(["registry", "resolve", "models:/cli-model@staging", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aifactory: error:") and "staging" in err
