"""``aifactory train --ref GITREF``: train with the code of another branch or commit, side by side.

The commit is checked out once into a git worktree (:func:`aifactory.coderef.checkout`, shared with jobs
submitted with ``--ref``). The same ``aifactory train`` command then runs in a child process with that
worktree's ``core/`` first on ``PYTHONPATH`` (the dependencies stay those of the current environment), and
``AIFACTORY_CODE_REF`` tells the child's manifest which ref was asked for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import IO, Any

from aifactory.coderef import REF_ENV, checkout
from aifactory.errors import InputError


def run_at_ref(ref: str, args: list[str], stdout: IO[Any] | None = None) -> int:
    """Run ``aifactory ARGS`` with the code of ``ref``; returns the child's exit code."""
    code = checkout(ref)
    assert code.core is not None
    if not (code.core / "aifactory" / "training").is_dir():
        raise InputError(f"--ref {ref}: commit {(code.commit or '')[:12]} has no aifactory training code")
    path = os.pathsep.join(p for p in (str(code.core), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, REF_ENV: ref}
    if stdout is not None:
        stdout.flush()
    return subprocess.run([sys.executable, "-m", "aifactory.cli", *args], env=env, stdout=stdout).returncode
