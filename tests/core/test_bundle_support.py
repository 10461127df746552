"""Shared fixtures of the bundle and registry tests: one bundle made through the CLI with every option,
the torch prediction it must reproduce, and a way to run commands in a fresh interpreter that reports
whether torch was imported.

The bundle is built once per session (an export is the slow part: ≈ 10 s here) from the tiny trained
U-Net of :mod:`test_predict_support`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aifactory.cli import main
from aifactory.prediction import predict
from test_predict_support import predict_scene, trained_run  # noqa: F401  (session fixtures)

OPERATING_POINT = {"version": 1, "criterion": "max_f1", "iou": 0.5, "score": 0.9, "min_area": 20.0,
                   "nms_iou": 0.5, "postprocess": {}}
CHAIN = "ops:\n  - make_valid\n  - {name: simplify, tolerance: 0.25}\n"

#: runs the aifactory CLI, then says on stderr whether torch ended up in sys.modules
WRAPPER = """\
import sys
from aifactory.cli import main
code = main(sys.argv[1:])
sys.stderr.write(f"TORCH_LOADED={'torch' in sys.modules}\\n")
sys.exit(code)
"""


def run_cli(args: list[str], tmp: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``aifactory ARGS`` in a fresh interpreter (through :data:`WRAPPER`)."""
    script = tmp / "wrapper.py"
    script.write_text(WRAPPER)
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen", **(env or {})})


def torch_loaded(result: subprocess.CompletedProcess[str]) -> bool:
    lines = [line for line in result.stderr.splitlines() if line.startswith("TORCH_LOADED=")]
    assert lines, result.stderr
    return lines[-1] == "TORCH_LOADED=True"


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory, trained_run: Path,  # noqa: F811
               predict_scene: tuple[Path, Path]) -> Path:  # noqa: F811
    """``aifactory bundle`` with an operating point, a chain, a report and a Docker context."""
    base = tmp_path_factory.mktemp("bundle")
    raster, _ = predict_scene
    point = base / "operating_point.json"
    point.write_text(json.dumps(OPERATING_POINT))
    chain = base / "chain.yaml"
    chain.write_text(CHAIN)
    report = base / "report"
    (report / "figures").mkdir(parents=True)
    (report / "report.html").write_text("<html><body>F1 0.8</body></html>")
    (report / "figures" / "pr.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    code = main(["bundle", str(trained_run), "-o", str(base / "model.zip"), "--operating-point", str(point),
                 "--postprocess", str(chain), "--report", str(report), "--docker", str(base / "context"),
                 "--sample", str(raster), "--events", "none"])
    assert code == 0
    return base


@pytest.fixture(scope="session")
def torch_prediction(tmp_path_factory: pytest.TempPathFactory, trained_run: Path,  # noqa: F811
                     predict_scene: tuple[Path, Path]) -> Path:  # noqa: F811
    """The run directory's own (torch, float32) prediction of the scene: what the bundle must match."""
    raster, _ = predict_scene
    return predict([trained_run], raster, tmp_path_factory.mktemp("torch-pred"), precision="fp32").detections
