"""The command lines the plugin builds match the worker's real CLI, and the event reader copes with chunks.

One worker process lists every click command's options (the plugin process itself never imports
aifactory); each builder of aifactory_qgis.worker is then checked against them.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from plugin_helpers import WORKER_PYTHON

LIST_OPTIONS = """
import json, click
from aifactory.cli import cli
ctx = click.Context(cli)
def walk(command, path):
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            yield from walk(command.get_command(ctx, name), [*path, name])
    else:
        yield " ".join(path), sorted({o for p in command.params for o in getattr(p, "opts", [])})
print(json.dumps(dict(walk(cli, []))))
"""


@pytest.fixture(scope="module")
def worker_options() -> dict[str, list[str]]:
    out = subprocess.run([WORKER_PYTHON, "-c", LIST_OPTIONS], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    return json.loads(out)


def builders():
    from aifactory_qgis import worker

    return {
        "synth": worker.synth("o.tif", truth="t.gpkg"),
        "dataset preview": worker.dataset_preview("c.yaml"),
        "dataset build": worker.dataset_build("c.yaml", "out"),
        "train": worker.train("c.yaml", "run", ref="main", tracking_uri="sqlite:///m.db"),
        "predict": worker.predict("run", "r.tif", "out", geofence="in.gpkg", exclude="out.gpkg"),
        "postprocess": worker.postprocess("d.gpkg", "o.gpkg", "ops.yaml"),
        "evaluate": worker.evaluate("d.gpkg", "t.gpkg", "m.json"),
        "rps": worker.rps("d.gpkg", "t.gpkg", "out", ["score=0.1:0.9:0.1", "min_area=0,10"], truth_layer="truth",
                          score_field="confidence"),
        "run": worker.pipeline("p.yaml", "work"),
        "al round": worker.al_round("round.yaml"),
    }


@pytest.mark.parametrize("command", list(builders()))
def test_builder_uses_only_real_options(worker_options, command):
    args = builders()[command]
    assert args[: len(command.split())] == command.split()
    if command not in worker_options:
        pytest.skip(f"the worker has no `aifactory {command}` yet")
    used = {a for a in args if a.startswith("-")}
    assert used <= set(worker_options[command]), used - set(worker_options[command])


def test_long_commands_stream_events():
    for command, args in builders().items():
        if command not in ("info", "dataset preview"):
            assert args[-2:] == ["--events", "jsonl"], command


def test_event_stream_reassembles_chunks_and_keeps_stray_text():
    from aifactory_qgis.events import EventStream, JobState

    stream, state = EventStream(), JobState()
    chunks = ['{"event": "progress", "task": "predict", "va', 'lue": 0.25, "message": "tile 1/4"}\nnot json\n',
              '{"event": "metric", "name": "loss", "value": 0.5, "step": 3}\n{"event": "done", "status": "ok"}']
    events = [e for chunk in chunks for e in stream.feed(chunk)] + list(stream.close())
    assert [e["event"] for e in events] == ["progress", "log", "metric", "done"]
    assert events[1]["message"] == "not json"
    for event in events:
        state.apply(event)
    assert (state.task, state.percent, state.metrics["loss"], state.status) == ("predict", 25, (0.5, 3), "ok")
