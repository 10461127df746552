"""What a job asks of the machine that runs it, and why a Ray job may wait forever.

The local runner records resources but does not enforce them (it runs on this machine, now). On Ray
they become the entrypoint's ``num_gpus``/``num_cpus``/``memory``/custom resources, so the job lands on
a node that has them; custom resources double as node labels (``--resource a100=1`` picks a node started
with ``--resources '{"a100": 1}'``). Ray says only "waiting for resources" for a job no node can ever
take; :func:`unsatisfiable` compares the request with every live node to say which resource is missing.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from aifactory.config import StrictModel
from aifactory.errors import ConfigError

RESOURCE_NAME = re.compile(r"[A-Za-z_][\w.:/-]{0,99}")
GIB = 1024**3


class Resources(StrictModel):
    gpus: float = Field(default=0, ge=0, description="GPUs (fractions share a GPU)")
    cpus: float | None = Field(default=None, ge=0, description="CPUs (Ray's default for an entrypoint is 0)")
    memory_gb: float | None = Field(default=None, gt=0, description="memory reserved for the job, GiB")
    custom: dict[str, float] = Field(default_factory=dict, description="custom resources / node labels")

    def ray_fields(self) -> dict[str, Any]:
        """The ``entrypoint_*`` fields of a Ray job submission."""
        fields: dict[str, Any] = {}
        if self.gpus:
            fields["entrypoint_num_gpus"] = self.gpus
        if self.cpus is not None:
            fields["entrypoint_num_cpus"] = self.cpus
        if self.memory_gb is not None:
            fields["entrypoint_memory"] = int(self.memory_gb * GIB)
        if self.custom:
            fields["entrypoint_resources"] = dict(self.custom)
        return fields

    def demand(self) -> dict[str, float]:
        """The request in Ray's resource names (memory in bytes)."""
        wanted = {"GPU": self.gpus, "CPU": self.cpus or 0.0,
                  "memory": (self.memory_gb or 0.0) * GIB, **self.custom}
        return {name: amount for name, amount in wanted.items() if amount}


def parse_resource(text: str) -> tuple[str, float]:
    """``NAME=N`` from ``--resource`` (N > 0)."""
    name, sep, amount = text.partition("=")
    try:
        value = float(amount)
    except ValueError:
        value = -1.0
    if not sep or not RESOURCE_NAME.fullmatch(name) or not value > 0:
        raise ConfigError(f"--resource {text!r}: expected NAME=N with N > 0 (e.g. a100=1)")
    if name in ("CPU", "GPU", "memory"):
        raise ConfigError(f"--resource {text!r}: use --cpus, --gpus or --memory for {name}")
    return name, value


def unsatisfiable(demand: dict[str, float], nodes: list[dict[str, float]]) -> str | None:
    """Why no node in ``nodes`` (their total resources) can ever run ``demand``; None if one can."""
    if not nodes:
        return "the cluster has no live node"
    if any(all(node.get(name, 0.0) >= amount for name, amount in demand.items()) for node in nodes):
        return None
    reasons = []
    for name, amount in demand.items():
        most = max(node.get(name, 0.0) for node in nodes)
        if most < amount:
            unit, scale = (" GiB", GIB) if name == "memory" else ("", 1)
            have = f"at most {most / scale:g}{unit}" if most else "none"
            reasons.append(f"{name}={amount / scale:g}{unit} (nodes have {have})")
    if not reasons:
        return "no single node has all of " + ", ".join(f"{k}={v:g}" for k, v in demand.items())
    return "no node has " + "; ".join(reasons)
