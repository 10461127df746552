"""Heap policies (``AIFACTORY_HEAP``): chosen per process, validated, recorded by what runs under them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from aifactory.errors import ConfigError
from aifactory.heap import POLICIES, heap_policy


def test_policy_comes_from_the_variable_else_the_default(monkeypatch):
    monkeypatch.delenv("AIFACTORY_HEAP", raising=False)
    assert heap_policy("lean") == "lean" and heap_policy("reuse") == "reuse"
    monkeypatch.setenv("AIFACTORY_HEAP", " Reuse ")
    assert heap_policy("lean") == "reuse"
    monkeypatch.setenv("AIFACTORY_HEAP", "")
    assert heap_policy("lean") == "lean"
    monkeypatch.setenv("AIFACTORY_HEAP", "fast")
    with pytest.raises(ConfigError, match="AIFACTORY_HEAP='fast': expected one of lean, reuse, system"):
        heap_policy("lean")


@pytest.mark.parametrize("policy", POLICIES)
def test_the_first_policy_applied_stays_for_the_process(policy):
    code = ("from aifactory.heap import apply_heap_policy as a\n"
            f"print(a({policy!r}), a('lean' if {policy!r} != 'lean' else 'reuse'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [policy, policy]
