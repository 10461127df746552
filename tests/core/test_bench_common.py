"""The benchmarks' timing helpers: what is paired with what (a fake clock, so that the figures are exact)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench import common


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A clock that only moves when a timed callable says so."""
    now = [0.0]
    monkeypatch.setattr(common.time, "perf_counter", lambda: now[0])
    return now


def step(clock: list[float], durations: list[float], log: list[str], name: str) -> Callable[[], None]:
    """A callable that takes the next of ``durations`` on ``clock`` and logs its name."""
    remaining = iter(durations)

    def run() -> None:
        log.append(name)
        clock[0] += next(remaining)

    return run


def test_bracketed_pairs_each_inner_run_with_the_mean_of_the_outer_runs_around_it(clock: list[float]) -> None:
    log: list[str] = []
    outer = step(clock, [10.0, 14.0, 18.0], log, "outer")  # a host slowing down steadily
    inner = step(clock, [6.0, 8.0], log, "inner")
    pairs = common.bracketed(outer, inner, repeats=2)
    assert log == ["outer", "inner", "outer", "inner", "outer"]
    assert pairs == [(6.0, 12.0), (8.0, 16.0)]


def test_alternate_returns_medians_of_each_side(clock: list[float]) -> None:
    log: list[str] = []
    a = step(clock, [3.0, 1.0, 2.0], log, "a")
    b = step(clock, [5.0, 9.0, 7.0], log, "b")
    assert common.alternate(a, b, repeats=3) == (2.0, 7.0)
    assert log == ["a", "b"] * 3
