"""From the Jobs dock, a real local prediction with a tiny trained run on a small synthetic raster.

Training and data come from the worker CLI here; the plugin part runs in a pytest-qgis process of its own
(tests/e2e/plugin_scenarios.py) because this suite imports the worker's stack and runs without pytest-qgis.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python")


def worker(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "aifactory.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


def missing_commands() -> list[str]:
    return [name for name in ("predict", "train", "dataset")
            if subprocess.run([PYTHON, "-m", "aifactory.cli", name, "--help"], capture_output=True).returncode != 0]


def run_scenario(name: str, env: dict[str, str], folder: Path, timeout: float = 900) -> None:
    """Run one scenario of plugin_scenarios.py with pytest-qgis, offscreen, with an auth database of its own
    in ``folder``; fail with its output."""
    env = {**env, "QGIS_AUTH_DB_DIR_PATH": str(folder)}
    run = subprocess.run([PYTHON, "-m", "pytest", "-p", "pytest_qgis", "-q", "-x", "-k", name,
                          str(Path(__file__).with_name("plugin_scenarios.py"))], cwd=REPO, capture_output=True,
                         text=True, timeout=timeout,
                         env={**os.environ, **env, "QT_QPA_PLATFORM": "offscreen"})
    assert run.returncode == 0 and " passed" in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]


@pytest.mark.slow
def test_prediction_job_from_the_jobs_dock(tmp_path):
    missing = missing_commands()
    if missing:
        pytest.skip(f"the worker has no `aifactory {'/'.join(missing)}` yet")
    assert worker("synth", "-o", "scene.tif", "--truth", "truth.gpkg", "--size", "384x384", "--density", "2",
                  "--seed", "5", "--events", "none", cwd=tmp_path).returncode == 0
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump({
        "sources": [{"raster": "scene.tif", "labels": "truth.gpkg", "layer": "truth"}],
        "chips": {"size": 128, "negative_ratio": 1.0},
        "split": {"block_tiles": 1, "fractions": {"train": 0.75, "val": 0.25, "test": 0.0}, "seed": 0}}))
    built = worker("dataset", "build", "dataset.yaml", "-o", "dataset", "--events", "none", cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({
        "dataset": "dataset", "epochs": 1, "max_steps": 2, "batch_size": 4, "num_workers": 0,
        "checkpoint_every": 2, "log_every": 1, "tracking": {"enabled": False},
        "model": {"architecture": "unet",
                  "params": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16, 8]}}}))
    trained = worker("train", "train.yaml", "-o", "run", "--events", "none", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    run_scenario("test_predict_from_the_jobs_dock",
                 {"AIF_E2E_RUN": str(tmp_path / "run"), "AIF_E2E_RASTER": str(tmp_path / "scene.tif")}, tmp_path)
