"""Run listing and comparison: run folders (training's wide metrics.jsonl and event-style lines, report
JSON, config diff, overlaid curves), the CLI, and runs read back from a real SQLite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
import yaml
from aifactory.errors import InputError
from aifactory.evaluation.runs import (
    _minute,
    compare,
    config_diff,
    key_metrics,
    list_run_dirs,
    load_run_dir,
    mlflow_runs,
)


def make_run(folder: Path, lr: float, steps: int, wide: bool, extra: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    config = {"model": {"architecture": "unet", "encoder": "resnet18"}, "optim": {"lr": lr}, **(extra or {})}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "manifest.json").write_text(json.dumps({"started": "2026-11-28T10:00:00", "outcome": "finished"}))
    lines = []
    for step in range(1, steps + 1):
        loss, iou = 1.0 / (step * lr * 100), 0.5 + step * lr
        if wide:
            lines.append({"split": "train", "step": step, "epoch": 0, "loss": loss})
            lines.append({"split": "val", "step": step, "epoch": 0, "loss": loss * 1.1, "iou": iou})
        else:
            lines += [{"name": "train/loss", "value": loss, "step": step},
                      {"name": "val/iou", "value": iou, "step": step}]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "metrics.jsonl").write_text("")  # inside a run: must not count as a run
    return folder


@pytest.fixture()
def runs_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    make_run(root / "a", lr=0.01, steps=5, wide=True)
    b = make_run(root / "exp" / "b", lr=0.02, steps=4, wide=False, extra={"seed": 3})
    (b / "report").mkdir()
    (b / "report" / "metrics.json").write_text(json.dumps({"overall": {"f1": 0.75, "ap": 0.5, "ap50": None}}))
    (root / "notes").mkdir()
    return root


def test_list_and_compare_run_folders(runs_root: Path, tmp_path: Path) -> None:
    records = list_run_dirs(runs_root)
    assert [r.name for r in records] == ["a", "exp/b"]
    a, b = records
    assert a.final()["train/loss"] == pytest.approx(1 / 5)
    assert a.final()["val/loss"] == pytest.approx(1.1 / 5)  # train and val losses do not mix
    # one format whatever the source wrote (it showed ISO text beside MLflow's minutes)
    assert a.status == "finished" and a.created == "2026-11-28 10:00"
    assert _minute("2026-11-28T11:30:05+01:00") == "2026-11-28 10:30" and _minute(0) == "1970-01-01 00:00"
    assert b.final()["eval.f1"] == 0.75 and "eval.ap50" not in b.final()
    assert key_metrics(records)[:3] == ["eval.ap", "eval.f1", "val/iou"]
    diff = config_diff(records)
    assert diff == {"optim.lr": [0.01, 0.02], "seed": [None, 3]}
    result = compare(records, plot=tmp_path / "curves.png")
    assert result["metrics"]["a"]["val/iou"] == pytest.approx(0.55)
    picture = matplotlib.image.imread(tmp_path / "curves.png")
    assert picture.shape[0] > 100 and picture.std() > 0


def test_bad_run_folders_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a run directory"):
        load_run_dir(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\nnot json\n')
    with pytest.raises(InputError, match="line 2 is not JSON"):
        load_run_dir(tmp_path)


def test_runs_cli(cli, runs_root: Path, tmp_path: Path) -> None:
    listed = cli("runs", "list", str(runs_root))
    assert listed.returncode == 0, listed.stderr
    assert "exp/b" in listed.stdout and "val/iou" in listed.stdout
    out = tmp_path / "cmp"
    compared = cli("runs", "compare", str(runs_root / "a"), str(runs_root / "exp" / "b"), "-o", str(out))
    assert compared.returncode == 0, compared.stderr
    assert "optim.lr" in compared.stdout and "(absent)" in compared.stdout
    saved = json.loads((out / "compare.json").read_text())
    assert saved["config_diff"]["optim.lr"] == [0.01, 0.02] and (out / "curves.png").is_file()
    bad = cli("runs", "compare", str(runs_root / "notes"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "not a run directory" in bad.stderr


def test_runs_from_mlflow(cli, tmp_path: Path) -> None:
    tracking = pytest.importorskip("mlflow.tracking")
    from mlflow.entities import Metric, Param

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = tracking.MlflowClient(uri)
    experiment = client.create_experiment("buildings", artifact_location=(tmp_path / "art").as_uri())
    for name, lr in (("r1", "0.01"), ("r2", "0.02")):
        run = client.create_run(experiment, run_name=name)
        client.log_batch(run.info.run_id, params=[Param("optim.lr", lr), Param("model.encoder", "resnet18")],
                         metrics=[Metric("val/iou", 0.5 + s * float(lr), 0, s) for s in range(1, 4)])
        client.set_terminated(run.info.run_id)
    records = mlflow_runs(uri, experiment="buildings")
    assert sorted(r.name for r in records) == ["buildings/r1", "buildings/r2"]
    r2 = next(r for r in records if r.name.endswith("r2"))
    assert r2.series["val/iou"] == [(1.0, 0.52), (2.0, 0.54), (3.0, 0.56)]
    assert config_diff(sorted(records, key=lambda r: r.name)) == {"optim.lr": ["0.01", "0.02"]}
    run = cli("runs", "compare", "r1", "r2", "--tracking-uri", uri, "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["metrics"]["buildings/r2"]["val/iou"] == pytest.approx(0.56)
    with pytest.raises(InputError, match="no run with id or name 'r9'"):
        mlflow_runs(uri, runs=["r1", "r9"])
