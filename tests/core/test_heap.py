"""Heap policies (``AIFACTORY_HEAP``): chosen per process, validated, recorded by what runs under them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def _python_words(code: str, **env: str) -> list[str]:
    """What ``code`` prints, split into words, run in a fresh interpreter with a bare environment plus ``env``."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"} | env)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize("policy", POLICIES)
def test_the_first_policy_applied_stays_for_the_process(policy):
    code = ("from aifactory.heap import apply_heap_policy as a\n"
            f"print(a({policy!r}), a('lean' if {policy!r} != 'lean' else 'reuse'))")
    assert _python_words(code) == [policy, policy]


def _transparent_huge_pages() -> str:
    """The kernel's THP mode (always, madvise or never), or '' where there is none."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return ""
    return text[text.index("[") + 1:text.index("]")] if "[" in text else ""


@pytest.mark.skipif(_transparent_huge_pages() != "madvise", reason="needs THP in madvise mode (Linux)")
@pytest.mark.parametrize(("policy", "switch", "huge"), [("lean", None, True), ("lean", "0", False),
                                                        ("system", None, False)])
def test_lean_asks_torch_for_huge_pages_unless_told_otherwise(policy, switch, huge):
    """Under ``lean`` a 64 MB torch tensor lands on huge pages; a switch the user set wins; ``system`` leaves
    torch alone."""
    code = ("from aifactory.heap import apply_heap_policy\n"
            f"apply_heap_policy({policy!r})\n"
            "import torch\n"
            "block = torch.ones((64 << 20) // 4)\n"
            "print([line.split()[1] for line in open('/proc/self/smaps_rollup') if line.startswith('AnonHuge')][0])")
    words = _python_words(code, **({} if switch is None else {"THP_MEM_ALLOC_ENABLE": switch}))
    assert (int(words[-1]) > 0) == huge


@pytest.mark.parametrize(("user", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_predict_command_loads_torch_only_after_predicts_process_settings(user, expected):
    """libgomp and torch read their switches when torch loads: importing the CLI's predict path must not load
    it, so that ``predict()``'s settings (heap policy, sleeping OpenMP threads) come first; a user's value wins."""
    code = ("import os, sys\n"
            "import aifactory.cli, aifactory.prediction.commands\n"
            "from aifactory.prediction.predict import process_settings\n"
            "loaded = 'torch' in sys.modules\n"
            "process_settings()\n"
            "print(loaded, os.environ['OMP_WAIT_POLICY'], os.environ['THP_MEM_ALLOC_ENABLE'])")
    words = _python_words(code, **({} if user is None else {"OMP_WAIT_POLICY": user}))
    assert words == ["False", expected, "1"]
