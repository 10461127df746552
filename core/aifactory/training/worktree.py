"""``aifactory train --ref GITREF``: train with the code of another branch or commit, side by side.

The commit is checked out once into a git worktree under the cache folder (``$AIFACTORY_CACHE``, default
``~/.cache/aifactory``) named by its full hash, so a branch that moves gets a new worktree and an old
commit is reused. The same ``aifactory train`` command then runs in a child process with that worktree's
``core/`` first on ``PYTHONPATH`` (the dependencies stay those of the current environment), and
``AIFACTORY_CODE_REF`` tells the child's manifest which ref was asked for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import aifactory
from aifactory.errors import InputError
from aifactory.training.rundir import REF_ENV


def cache_dir() -> Path:
    return Path(os.environ.get("AIFACTORY_CACHE") or Path.home() / ".cache" / "aifactory")


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def checkout(ref: str) -> tuple[Path, str]:
    """The worktree holding ``ref`` (created on first use) and the commit it resolves to."""
    package = Path(aifactory.__file__).resolve().parent
    top = _git(["rev-parse", "--show-toplevel"], package)
    if top.returncode:
        raise InputError(f"--ref {ref}: the running aifactory ({package}) is not in a git checkout")
    repo = Path(top.stdout.strip())
    found = _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], repo)
    if found.returncode:
        raise InputError(f"--ref {ref}: not a branch, tag or commit of {repo}")
    commit = found.stdout.strip()
    tree = cache_dir() / "worktrees" / commit
    if not (tree / "core" / "aifactory").is_dir():
        if tree.exists():  # an interrupted earlier checkout
            shutil.rmtree(tree)
        _git(["worktree", "prune"], repo)
        tree.parent.mkdir(parents=True, exist_ok=True)
        added = _git(["worktree", "add", "--detach", str(tree), commit], repo)
        if added.returncode:
            message = (added.stderr.strip().splitlines() or ["git worktree add failed"])[-1]
            raise InputError(f"--ref {ref}: cannot check out {commit[:12]} into {tree}: {message}")
    if not (tree / "core" / "aifactory" / "training").is_dir():
        raise InputError(f"--ref {ref}: commit {commit[:12]} has no aifactory training code")
    return tree, commit


def run_at_ref(ref: str, args: list[str], stdout: IO[Any] | None = None) -> int:
    """Run ``aifactory ARGS`` with the code of ``ref``; returns the child's exit code."""
    tree, _ = checkout(ref)
    path = os.pathsep.join(p for p in (str(tree / "core"), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, REF_ENV: ref}
    if stdout is not None:
        stdout.flush()
    return subprocess.run([sys.executable, "-m", "aifactory.cli", *args], env=env, stdout=stdout).returncode
