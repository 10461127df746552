"""The YAML task orchestrator: named tasks from a registry, wired into a DAG by ``${task.output}`` references.

``TASKS`` entries are called as ``func(params, context) -> dict[str, str]`` (output name → value, usually
a path inside ``context.workdir``). Each task's parameter model declares the outputs it produces in a
``OUTPUTS`` class variable, so dangling references are caught before anything runs. Built-in tasks live in
``aifactory.pipeline.tasks``; third parties register through the ``aifactory.tasks`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aifactory.registry import Registry

TASKS: Registry[Callable[..., Any]] = Registry("task", "aifactory.tasks", builtin_modules=("aifactory.pipeline.tasks",))
