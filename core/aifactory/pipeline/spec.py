"""Pipeline files: parsing, ``${task.output}`` references, validation and the execution order.

A pipeline is a YAML mapping::

    version: 1
    name: neon-demo
    tasks:
      dataset: {task: dataset_build, params: {...}}
      train:   {task: train, params: {dataset: "${dataset.dir}", ...}}

Every problem — unknown task, unknown or mistyped parameter, a reference to a task or output that does not
exist, a cycle — is reported with its key path before anything runs. References are resolved to the
upstream task's outputs at run time; for validation they are replaced by a placeholder of the right shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from aifactory.config import StrictModel, load_yaml, validate
from aifactory.errors import ConfigError
from aifactory.pipeline import TASKS

REFERENCE = re.compile(r"\$\{([A-Za-z_][\w-]*)\.([A-Za-z_]\w*)\}")
PIPELINE_VERSION = 1


class TaskSpec(StrictModel):
    """One task of a pipeline."""

    task: str = Field(description="registered task name (aifactory tasks --list)")
    params: dict[str, Any] = Field(default_factory=dict)
    after: list[str] = Field(default_factory=list, description="extra ordering dependencies")


class PipelineFile(StrictModel):
    version: int = PIPELINE_VERSION
    name: str = Field("pipeline", pattern=r"^[\w.-]+$")
    workdir: str | None = Field(None, description="run folder (default runs/<name> next to the file)")
    tasks: dict[str, TaskSpec]


@dataclass
class PlannedTask:
    """A task with its references and declared outputs, ready to be ordered and run."""

    name: str
    kind: str
    raw_params: dict[str, Any]
    params_model: type[BaseModel]
    outputs: tuple[str, ...]
    depends_on: set[str] = field(default_factory=set)


@dataclass
class Pipeline:
    name: str
    source: str
    base_dir: Path
    workdir: Path
    tasks: dict[str, PlannedTask]
    order: list[str]

    def downstream_of(self, start: str) -> set[str]:
        """``start`` and every task that depends on it, directly or not."""
        found = {start}
        for name in self.order:
            if self.tasks[name].depends_on & found:
                found.add(name)
        return found


def find_references(value: Any) -> list[tuple[str, str]]:
    """All ``${task.output}`` references inside a nested params value."""
    if isinstance(value, str):
        return REFERENCE.findall(value)
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in find_references(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in find_references(item)]
    return []


def substitute(value: Any, outputs: dict[str, dict[str, Any]]) -> Any:
    """Replace references by upstream outputs (a whole-string reference keeps the output's type)."""
    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value)
        if whole:
            return outputs[whole.group(1)][whole.group(2)]
        return REFERENCE.sub(lambda m: str(outputs[m.group(1)][m.group(2)]), value)
    if isinstance(value, dict):
        return {k: substitute(v, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, outputs) for v in value]
    return value


def declared_outputs(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(getattr(model, "OUTPUTS", ()))


def load_pipeline(path: str | Path) -> Pipeline:
    """Parse and fully validate a pipeline file; raises ConfigError naming the key path."""
    path = Path(path)
    source = str(path)
    spec = validate(PipelineFile, load_yaml(path), source)
    if spec.version > PIPELINE_VERSION:
        raise ConfigError(f"{source}: version: pipeline format {spec.version} is newer than supported "
                          f"({PIPELINE_VERSION})")
    if not spec.tasks:
        raise ConfigError(f"{source}: tasks: the pipeline has no task")
    planned: dict[str, PlannedTask] = {}
    for name, task_spec in spec.tasks.items():
        entry = TASKS.get(task_spec.task, f"{source}: tasks.{name}.task")
        planned[name] = PlannedTask(name, task_spec.task, task_spec.params, entry.params,
                                    declared_outputs(entry.params))
    for name, task in planned.items():
        for upstream, output in find_references(task.raw_params):
            where = f"{source}: tasks.{name}.params: ${{{upstream}.{output}}}"
            if upstream not in planned:
                raise ConfigError(f"{where}: no task named {upstream!r}")
            if output not in planned[upstream].outputs:
                known = ", ".join(planned[upstream].outputs) or "none"
                raise ConfigError(f"{where}: task {upstream!r} has no output {output!r} (outputs: {known})")
            task.depends_on.add(upstream)
        for upstream in spec.tasks[name].after:
            if upstream not in planned:
                raise ConfigError(f"{source}: tasks.{name}.after: no task named {upstream!r}")
            task.depends_on.add(upstream)
    try:
        order = list(TopologicalSorter({n: t.depends_on for n, t in planned.items()}).static_order())
    except CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise ConfigError(f"{source}: tasks: the pipeline has a cycle: {cycle}") from None
    for name in order:  # validate parameters with references replaced by placeholders
        task = planned[name]
        placeholders = {up: {out: f"<{up}.{out}>" for out in planned[up].outputs} for up in task.depends_on}
        where = f"{source}: tasks.{name}.params"
        params = validate(task.params_model, substitute(task.raw_params, placeholders), where)
        # a section another stage validates (a chain, a sweep…), unless it names an upstream output: that file
        # does not exist yet, and the task checks the section when it runs
        nested = getattr(params, "NESTED", None)
        if nested and not find_references(task.raw_params.get(nested)):
            params.check_nested(where, path.parent.resolve())  # type: ignore[attr-defined]
    base_dir = path.parent.resolve()
    workdir = base_dir / (spec.workdir or f"runs/{spec.name}")
    return Pipeline(spec.name, source, base_dir, workdir, planned, order)
