"""Shared fixtures: small synthetic scenes with a real CRS, written by the project's own generator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 640 × 480, 4-band uint16 COG in EPSG:32631 with its truth GeoPackage."""
    from aifactory.io.synthetic import SceneSpec, generate_scene

    folder = tmp_path_factory.mktemp("scene")
    raster, truth = folder / "scene.tif", folder / "truth.gpkg"
    generate_scene(SceneSpec(width=640, height=480, seed=7), raster, truth)
    return raster, truth


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real ``aifactory`` command in a subprocess (exit codes and streams as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "aifactory.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture()
def cli():
    return run_cli
