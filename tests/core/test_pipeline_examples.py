"""Every example pipeline shipped in resources/pipelines validates (tasks, parameters, references, order)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aifactory.pipeline.runner import plan
from aifactory.pipeline.spec import load_pipeline

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "resources" / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_pipeline_is_valid(path, tmp_path):
    pipeline = load_pipeline(path)
    pipeline.workdir = tmp_path
    steps = plan(pipeline)
    assert [s.action for s in steps] == ["run"] * len(steps)
    assert len(steps) >= 5


def test_there_are_examples():
    assert {"neon_demo", "synthetic_buildings"} <= {p.stem for p in EXAMPLES}
