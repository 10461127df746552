"""``aifactory train --ref GITREF``: train with the code of another branch or commit, side by side.

The commit is checked out once into a git worktree (:func:`aifactory.coderef.checkout`, shared with jobs
submitted with ``--ref``). The same ``aifactory train`` command then runs in a child process with that
worktree's ``core/`` first on ``PYTHONPATH`` (the dependencies stay those of the current environment), and
``AIFACTORY_CODE_REF`` tells the child's manifest which ref was asked for. A stop of this process stops the
child the same way and waits for it to unwind (:func:`run_child`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

from aifactory.coderef import REF_ENV, checkout
from aifactory.errors import InputError, Terminated

#: How long a child gets to unwind from a Ctrl-C that reached it too before it is sent one itself.
CHILD_STOP_GRACE_S = 30.0


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
    return run_child([sys.executable, "-m", "aifactory.cli", *args], env, stdout)


def run_child(command: Sequence[str], env: Mapping[str, str], stdout: IO[Any] | None = None) -> int:
    """Run ``command`` and return its exit code. A stop of this process stops the child the same way and waits for
    it to unwind (its atomic writers remove their temporary files): a SIGTERM (:class:`Terminated`) is passed on; a
    Ctrl-C from the terminal reached the child as well (one process group), so it gets ``CHILD_STOP_GRACE_S`` to
    finish before it is sent one. (``subprocess.run`` would kill it 0.25 s into a stop, temporaries left behind.)"""
    process = subprocess.Popen(list(command), env=dict(env), stdout=stdout)
    try:
        return process.wait()
    except Terminated:
        process.terminate()
        process.wait()
        raise
    except KeyboardInterrupt:
        try:
            process.wait(timeout=CHILD_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            process.wait()
        raise
