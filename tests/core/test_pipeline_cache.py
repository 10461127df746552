"""The orchestrator's cache: what re-runs a task and what must not (content, not times; stamps of upstream
tasks that ran; folder outputs; parameters as validated), on the cheap tasks."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest
from aifactory.errors import InputError
from aifactory.io.synthetic import SceneSpec, generate_scene
from aifactory.pipeline.runner import _fingerprints, plan, run
from aifactory.pipeline.spec import load_pipeline

CHAIN = """
    name: cache
    tasks:
      scene: {task: synth, params: {width: 48, height: 48, density: 2}}
      check: {task: raster_info, params: {raster: "${scene.raster}"}}
      score: {task: evaluate, params: {pred: "${scene.truth}", truth: "${scene.truth}", pred_layer: truth,
                                       truth_layer: truth}}
      gate: {task: raster_info, params: {raster: in.tif}}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def actions(path: Path, from_task: str | None = None) -> dict[str, str]:
    return {step.name: step.action for step in plan(load_pipeline(path), from_task)}


def setup(tmp_path: Path) -> Path:
    generate_scene(SceneSpec(width=32, height=32, seed=1), tmp_path / "in.tif")
    path = write(tmp_path / "p.yaml", CHAIN)
    run(load_pipeline(path))
    assert set(actions(path).values()) == {"skip"}
    return path


def test_same_size_new_content_with_its_time_restored_reruns_and_a_touch_does_not(tmp_path):
    path = setup(tmp_path)
    raster = tmp_path / "in.tif"
    original = raster.read_bytes()
    stat = raster.stat()
    changed = bytearray(original)
    changed[-100] ^= 0xFF                        # same size, other content
    raster.write_bytes(bytes(changed))
    os.utime(raster, ns=(stat.st_atime_ns, stat.st_mtime_ns))   # what `touch -r` does
    assert actions(path)["gate"] == "run"
    raster.write_bytes(original)                 # back to the content it ran on, with a new time: no re-run
    assert actions(path) == {"scene": "skip", "check": "skip", "score": "skip", "gate": "skip"}


def test_an_upstream_task_that_runs_again_reruns_its_downstream_and_not_its_siblings(tmp_path):
    path = setup(tmp_path)
    workdir = load_pipeline(path).workdir
    (workdir / "scene" / "truth.gpkg").unlink()
    assert actions(path) == {"scene": "run", "check": "run", "score": "run", "gate": "skip"}
    run(load_pipeline(path))
    assert set(actions(path).values()) == {"skip"}


def test_a_from_run_interrupted_before_the_downstream_leaves_it_to_run(tmp_path):
    path = setup(tmp_path)
    raster = tmp_path / "in.tif"
    shutil.move(raster, tmp_path / "aside.tif")  # gate now fails after scene re-ran, before check and score ran
    pipeline = load_pipeline(path)
    pipeline.order = ["scene", "gate", "check", "score"]
    with pytest.raises(InputError, match=r"in\.tif"):
        run(pipeline, from_task="scene")
    shutil.move(tmp_path / "aside.tif", raster)
    assert actions(path) == {"scene": "skip", "check": "run", "score": "run", "gate": "run"}


def test_a_file_deleted_inside_a_folder_output_reruns_the_task(tmp_path):
    path = write(tmp_path / "p.yaml", """
        tasks:
          scene: {task: synth, params: {width: 128, height: 128, density: 5, seed: 2}}
          data:
            task: dataset_build
            params:
              config:
                sources: [{raster: "${scene.raster}", labels: "${scene.truth}", layer: truth}]
                chips: {size: 32}
                split: {fractions: {train: 1.0, val: 0.0, test: 0.0}}
    """)
    outputs = run(load_pipeline(path))
    assert actions(path) == {"scene": "skip", "data": "skip"}
    (Path(outputs["data"]["dataset"]) / "dataset.json").unlink()   # the folder is there, not what it held
    assert actions(path) == {"scene": "skip", "data": "run"}


def test_key_order_comments_and_written_defaults_do_not_rerun(tmp_path):
    path = setup(tmp_path)
    write(path, CHAIN.replace("scene: {task: synth, params: {width: 48, height: 48, density: 2}}",
                              "scene:   # the same scene, its keys in another order and defaults written out\n"
                              "        params: {density: 2.0, height: 48, width: 48, seed: 0, bands: 4}\n"
                              "        task: synth"))
    assert set(actions(path).values()) == {"skip"}
    write(path, CHAIN.replace("density: 2}", "density: 2, seed: 5}"))
    assert actions(path) == {"scene": "run", "check": "run", "score": "run", "gate": "skip"}


def test_folders_named_in_parameters_are_fingerprinted_by_content(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"a" * 10)
    workdir = tmp_path / "runs" / "x"
    first = _fingerprints({"models": ["model"]}, tmp_path, workdir)
    (folder / "model.pt").write_bytes(b"b" * 10)
    assert first and _fingerprints({"models": ["model"]}, tmp_path, workdir) != first
    assert _fingerprints({"folder": "."}, tmp_path, workdir) == []   # the project holding the run folder
