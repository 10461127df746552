from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from aifactory.errors import ConfigError, InputError
from aifactory.pipeline.runner import LOCK_NAME, plan, run
from aifactory.pipeline.spec import load_pipeline
from test_predict_support import predict_scene, trained_run  # noqa: F401  (session fixtures)


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


PIPELINE = """
    name: chain
    tasks:
      scene: {task: synth, params: {width: 200, height: 160, density: 0.5}}
      check: {task: raster_info, params: {raster: "${scene.raster}"}}
      other: {task: synth, params: {width: 100, height: 100, seed: 1}}
"""


def actions(pipeline, from_task=None):
    return {step.name: step.action for step in plan(pipeline, from_task)}


def test_run_rerun_edit_and_from(tmp_path):
    path = write(tmp_path / "p.yaml", PIPELINE)
    pipeline = load_pipeline(path)
    assert actions(pipeline) == {"scene": "run", "check": "run", "other": "run"}
    outputs = run(pipeline)
    info = json.loads(Path(outputs["check"]["info"]).read_text())
    assert (info["width"], info["height"]) == (200, 160)
    # re-run: everything skipped
    assert actions(load_pipeline(path)) == {"scene": "skip", "check": "skip", "other": "skip"}
    # edit one task: it and its downstream re-run, the independent task does not
    write(path, PIPELINE.replace("width: 200", "width: 220"))
    edited = load_pipeline(path)
    assert actions(edited) == {"scene": "run", "check": "run", "other": "skip"}
    run(edited)
    info = json.loads(Path(run(load_pipeline(path))["check"]["info"]).read_text())
    assert info["width"] == 220
    assert actions(load_pipeline(path), from_task="check") == {"scene": "skip", "check": "run", "other": "skip"}


def test_a_task_folder_holding_someone_elses_files_is_refused_not_emptied(tmp_path):
    path = write(tmp_path / "p.yaml", PIPELINE)
    pipeline = load_pipeline(path)
    mine = pipeline.workdir / "scene" / "mine.txt"  # a workdir given by mistake: a folder of the analyst's
    mine.parent.mkdir(parents=True)
    mine.write_text("mine\n")
    with pytest.raises(InputError, match=r"scene: holds mine.txt, which this pipeline did not write there"):
        run(pipeline)
    assert mine.read_text() == "mine\n" and not (pipeline.workdir / "other").exists(), "refused before any task"
    mine.unlink()
    run(pipeline)
    mine.write_text("mine\n")  # beside this pipeline's own outputs, a re-run of the task may empty its folder
    write(path, PIPELINE.replace("width: 200", "width: 220"))
    run(load_pipeline(path))
    assert not mine.exists()


def test_a_second_run_in_the_same_workdir_is_refused_while_the_first_works(tmp_path):
    import fcntl

    pipeline = load_pipeline(write(tmp_path / "p.yaml", PIPELINE))
    pipeline.workdir.mkdir(parents=True)
    with open(pipeline.workdir / LOCK_NAME, "a+") as first:  # what a run in another process holds
        fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
        first.write("4242\n")
        first.flush()
        with pytest.raises(InputError, match=r"another run is working there \(process 4242\)"):
            run(pipeline)
    assert not (pipeline.workdir / "scene").exists()
    run(pipeline)  # the lock is gone with its holder: no stale lock


def test_resume_after_failure(tmp_path):
    raster = tmp_path / "later.tif"
    path = write(tmp_path / "p.yaml", f"""
        tasks:
          scene: {{task: synth, params: {{width: 64, height: 64}}}}
          gate: {{task: raster_info, params: {{raster: "{raster}"}}, after: [scene]}}
    """)
    with pytest.raises(Exception, match="not found"):
        run(load_pipeline(path))
    state = json.loads((tmp_path / "runs" / "pipeline" / ".pipeline-state.json").read_text())
    assert state["scene"]["status"] == "done" and state["gate"]["status"] == "failed"
    # fix the input and resume: the finished task is not run again
    from aifactory.io.synthetic import SceneSpec, generate_scene

    generate_scene(SceneSpec(width=32, height=32), raster)
    assert actions(load_pipeline(path)) == {"scene": "skip", "gate": "run"}
    run(load_pipeline(path))
    assert actions(load_pipeline(path)) == {"scene": "skip", "gate": "skip"}


def test_from_starts_a_killed_task_over_instead_of_resuming_it(tmp_path):
    path = write(tmp_path / "p.yaml", "tasks:\n  scene: {task: synth, params: {width: 32, height: 32}}\n")
    run(load_pipeline(path))
    state_file = tmp_path / "runs" / "pipeline" / ".pipeline-state.json"
    state = json.loads(state_file.read_text())
    state["scene"]["status"] = "running"  # what a run killed inside the task leaves
    leftover = tmp_path / "runs" / "pipeline" / "scene" / "checkpoint.txt"  # what that attempt left to resume
    leftover.write_text("half done\n")
    state_file.write_text(json.dumps(state))
    run(load_pipeline(path))  # a plain re-run resumes the attempt: its folder is kept
    assert leftover.exists()
    state_file.write_text(json.dumps(state))
    run(load_pipeline(path), from_task="scene")  # --from redoes it: a fresh folder
    assert not leftover.exists()


def test_a_task_skipped_under_other_code_says_which(tmp_path):
    from aifactory.coderef import current_code
    from aifactory.progress import CallbackReporter, use_reporter

    path = write(tmp_path / "p.yaml", "tasks:\n  scene: {task: synth, params: {width: 32, height: 32}}\n")
    run(load_pipeline(path))
    state_file = tmp_path / "runs" / "pipeline" / ".pipeline-state.json"
    state = json.loads(state_file.read_text())
    assert state["scene"]["code"] == current_code().commit
    events: list[dict] = []
    with use_reporter(CallbackReporter(events.append)):
        run(load_pipeline(path))
    logs = [e["message"] for e in events if e["event"] == "log"]
    assert "scene: skipped (unchanged)" in logs
    state["scene"]["code"] = "0123456789abcdef0123-dirty"
    state_file.write_text(json.dumps(state))
    events.clear()
    with use_reporter(CallbackReporter(events.append)):
        run(load_pipeline(path))
    logs = [e["message"] for e in events if e["event"] == "log"]
    assert any(m.startswith("scene: skipped (unchanged; made by code 0123456789ab-dirty, now ")
               and m.endswith(": --from scene redoes it)") for m in logs), logs


def test_a_machine_without_git_still_runs_pipelines(tmp_path, monkeypatch):
    path = write(tmp_path / "p.yaml", "tasks:\n  scene: {task: synth, params: {width: 32, height: 32}}\n")
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable to find
    run(load_pipeline(path))
    state = json.loads((tmp_path / "runs" / "pipeline" / ".pipeline-state.json").read_text())
    assert state["scene"]["status"] == "done" and state["scene"]["code"] is None


def test_a_parameter_a_new_version_adds_with_a_default_does_not_rerun(tmp_path):
    from pydantic import create_model

    path = write(tmp_path / "p.yaml", "tasks:\n  scene: {task: synth, params: {width: 32, height: 32}}\n")
    run(load_pipeline(path))
    upgraded = load_pipeline(path)
    task = upgraded.tasks["scene"]
    task.params_model = create_model("SynthNext", __base__=task.params_model, tiles=(int, 3))
    assert actions(upgraded) == {"scene": "skip"}
    task.raw_params = {**task.raw_params, "tiles": 4}  # set to another value, it is a change
    assert actions(upgraded) == {"scene": "run"}


def test_changed_external_file_reruns_task(tmp_path):
    from aifactory.io.synthetic import SceneSpec, generate_scene

    raster = tmp_path / "in.tif"
    generate_scene(SceneSpec(width=32, height=32), raster)
    path = write(tmp_path / "p.yaml", "tasks:\n  gate: {task: raster_info, params: {raster: in.tif}}\n")
    run(load_pipeline(path))
    assert actions(load_pipeline(path)) == {"gate": "skip"}
    generate_scene(SceneSpec(width=48, height=32), raster)
    assert actions(load_pipeline(path)) == {"gate": "run"}


@pytest.mark.parametrize("text, message", [
    ("tasks:\n  a: {task: nope}\n", "tasks.a.task: unknown task 'nope'"),
    ("tasks:\n  a: {task: synth, params: {widht: 3}}\n", "tasks.a.params: widht: unknown key"),
    ("tasks:\n  a: {task: raster_info, params: {raster: '${b.info}'}}\n", "no task named 'b'"),
    ("tasks:\n  a: {task: synth}\n  b: {task: raster_info, params: {raster: '${a.rastr}'}}\n", "has no output 'rastr'"),
    ("tasks:\n  a: {task: raster_info, params: {raster: '${b.info}'}}\n"
     "  b: {task: raster_info, params: {raster: '${a.info}'}}\n", "cycle"),
    ("tasks: {}\n", "has no task"),
])
def test_bad_pipelines_fail_before_running(tmp_path, text, message):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError, match=message.replace("$", r"\$").replace("{", r"\{")):
        load_pipeline(path)
    assert not (tmp_path / "runs").exists()


def test_cli_dry_run_and_exit_codes(cli, tmp_path):
    path = write(tmp_path / "p.yaml", PIPELINE)
    result = cli("run", str(path), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "run   check (raster_info) after scene: not run yet" in result.stdout
    bad = write(tmp_path / "bad.yaml", "tasks:\n  a: {task: synth, params: {width: -1}}\n")
    result = cli("run", str(bad))
    assert result.returncode == 2 and "tasks.a.params: width" in result.stderr and "Traceback" not in result.stderr
    events = cli("run", str(path), "--events", "jsonl")
    kinds = [json.loads(line)["event"] for line in events.stdout.splitlines()]
    assert kinds[-1] == "done" and "artifact" in kinds


@pytest.mark.parametrize(("task", "expected"), [
    ('{task: postprocess, params: {input: "${scene.truth}", ops: [{name: nms, bogus: 1}]}}',
     r"tasks\.t\.params: ops\.0\.bogus: unknown key"),
    ('{task: rps, params: {pred: "${scene.truth}", truth: "${scene.truth}", sweep: ["bogus=1:2"]}}',
     r"tasks\.t\.params\.sweep\.0: unknown parameter 'bogus'"),
    ('{task: al_select, params: {rasters: ["${scene.raster}"], n: 3, select: {strategy: random, bogus: 1}}}',
     r"tasks\.t\.params\.select: bogus: unknown key"),
    ("{task: al_simulate, params: {config: {bogus: 1}}}", r"tasks\.t\.params\.config: bogus: unknown key"),
])
def test_sections_other_stages_validate_are_checked_before_anything_runs(tmp_path, task, expected):
    """A dry run said "run" for a chain, a sweep, a selection or a simulation config with a mistake in it: the
    real run refused it only once the tasks upstream had run (for the AL simulation, after a download)."""
    path = tmp_path / "p.yaml"
    path.write_text(f"tasks:\n  scene: {{task: synth, params: {{width: 64, height: 64}}}}\n  t: {task}\n")
    with pytest.raises(ConfigError, match=expected):
        load_pipeline(path)


def test_a_section_naming_an_upstream_output_is_checked_when_its_task_runs(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text('tasks:\n  scene: {task: synth, params: {width: 64, height: 64}}\n  t: {task: postprocess, '
                    'params: {input: "${scene.truth}", ops: [{name: geofence, path: "${scene.truth}"}]}}\n')
    assert load_pipeline(path).order == ["scene", "t"]


def test_a_predict_task_takes_every_option_predict_has(tmp_path, trained_run, predict_scene):  # noqa: F811
    """``ensemble: weighted`` always failed in a pipeline ("needs one weight per model"): the task had no
    ``weights``, nor ``blend``, ``precision`` or ``instance_h``."""
    raster, _ = predict_scene
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(f"""\
        tasks:
          predict:
            task: predict
            params: {{models: ["{trained_run}", "{trained_run}"], raster: "{raster}", ensemble: weighted,
                      weights: [3, 1], blend: crop, precision: fp32, instance_h: 0}}
        """))
    outputs = run(load_pipeline(path))
    summary = json.loads(Path(outputs["predict"]["summary"]).read_text())
    assert summary["precision"] == "fp32" and summary["detections_count"] > 0
