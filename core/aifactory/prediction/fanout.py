"""Fan one huge raster out to several Ray workers: ``aifactory predict --workers N``.

The raster's tile rows are cut into ``N`` contiguous parts; each part is a Ray task that opens the same
:class:`~aifactory.prediction.rows.PredictSpec` (models, raster, geofence) in its own process and streams
its finished rows back as a Ray generator. The caller writes them in raster order through the one writer
(scores COG, seam-free vectorizer, cross-tile box merge), so the outputs are the same as a single
process's (:mod:`.rows` says why, a test checks it pixel for pixel).

Why Ray tasks and not Ray Jobs: a part is a function call with a result, not a command line; Ray's
object store carries the finished rows (spilling to disk when the caller is behind), so workers need
no shared filesystem for outputs and the caller holds one row band at a time. Workers must read the
models and the raster at the same path (a shared mount, or ``/vsis3/``-style GDAL paths).

Where the tasks run: with ``address`` unset, the Ray cluster this process belongs to (inside a job
submitted with ``aifactory submit --runner ray``, ``RAY_ADDRESS`` points at it) or, when there is none, a
local Ray started for the call and stopped after it (several processes on this machine). Each task asks
for ``cpus`` CPUs and ``gpus`` GPUs, so a GPU cluster spreads parts over its GPUs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aifactory.errors import AIFactoryError, InputError
from aifactory.prediction.rows import PredictSpec, RowResult, open_prediction, predict_rows
from aifactory.prediction.source import ReadStats


@dataclass(frozen=True)
class FanOut:
    """Where fan-out tasks run and what each asks for (Ray resource names)."""

    address: str | None = None
    cpus: float = 1.0
    gpus: float = 0.0


def split_rows(count: int, parts: int) -> list[range]:
    """``count`` tile rows in at most ``parts`` contiguous ranges whose sizes differ by at most one."""
    parts = max(1, min(parts, count))
    size, extra = divmod(count, parts)
    bounds = [0]
    for index in range(parts):
        bounds.append(bounds[-1] + size + (index < extra))
    return [range(start, stop) for start, stop in itertools.pairwise(bounds)]


@dataclass
class PartDone:
    """What a part reports after its last row: its read statistics and where and how it computed."""

    stats: ReadStats
    device: str
    precision: str
    passes: int = 1


def predict_part(spec: PredictSpec, rows: range) -> Iterator[RowResult | PartDone]:
    """A worker's part: the finished rows of tile rows ``rows``, then a :class:`PartDone`."""
    stats = ReadStats()
    with open_prediction(spec) as run:
        yield from predict_rows(run, stats, rows)
        yield PartDone(stats, run.device, run.precision, run.passes)


def reachable(address: str, timeout: float = 5.0) -> bool:
    """Whether ``host:port`` (a GCS address; a ``ray://`` prefix is allowed) accepts a TCP connection."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def ray_session(where: FanOut) -> Iterator[None]:
    """Connected to Ray for the block: the given cluster, the one this process runs in, or a local one
    started (and stopped) here. An address nobody answers at is refused at once: Ray itself would retry
    for minutes."""
    import ray

    if ray.is_initialized():
        yield
        return
    if where.address and where.address != "auto" and not reachable(where.address):
        raise InputError(f"predict --workers: no Ray cluster answers at {where.address}")
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    # a local Ray started here turns token authentication on (it stays on 127.0.0.1) and says so on stderr
    # at every call, through Python's last-resort handler: a notice for cluster operators, not for this command
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        ray.init(address=where.address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise InputError(f"predict --workers: cannot join the Ray cluster at {where.address or 'auto'}: "
                         f"{str(error).splitlines()[0]}") from None
    finally:  # Ray's core worker puts its crash dumper on SIGTERM: a stop must unwind as the CLI made it to
        if threading.current_thread() is threading.main_thread():
            for number, handler in handlers.items():
                if handler is not None:
                    signal.signal(number, handler)
    try:
        yield
    finally:
        ray.shutdown()


def as_workers_see_it(spec: PredictSpec) -> PredictSpec:
    """``spec`` with its local paths made absolute: Ray workers run in a folder of their own, where a relative
    path names nothing ("raster not found" for a raster this process had just opened). URIs (``models:/``,
    ``/vsis3/``-style GDAL paths) and paths this process cannot see are passed on as they are."""
    def absolute(value: str | None) -> str | None:
        return str(Path(value).resolve()) if value is not None and Path(value).exists() else value

    return dataclasses.replace(spec, models=tuple(str(absolute(m)) for m in spec.models),
                               raster=str(absolute(spec.raster)), geofence=absolute(spec.geofence),
                               exclude=absolute(spec.exclude))


def fan_out_rows(spec: PredictSpec, tile_rows: int, workers: int, where: FanOut,
                 done: list[PartDone]) -> Iterator[RowResult]:
    """Every tile row's :class:`RowResult` in raster order, computed by up to ``workers`` Ray tasks (inside
    :func:`ray_session`); each part's :class:`PartDone` is appended to ``done``."""
    import ray
    from ray.exceptions import RayTaskError

    spec = as_workers_see_it(spec)

    task = ray.remote(predict_part).options(num_cpus=where.cpus, num_gpus=where.gpus, max_retries=0)
    parts: list[Any] = [task.remote(spec, rows) for rows in split_rows(tile_rows, workers)]  # ObjectRefGenerators
    complete = False
    try:
        for part in parts:
            for ref in part:
                item = ray.get(ref)
                if isinstance(item, PartDone):
                    done.append(item)
                else:
                    yield item
        complete = True
    except RayTaskError as error:
        cause = getattr(error, "cause", None)
        if isinstance(cause, AIFactoryError):
            raise cause from None
        raise
    finally:
        if not complete:  # an error or a consumer that stopped early: no part keeps computing
            for part in parts:
                ray.cancel(part, force=True)
