"""Code refs: which code a job runs, recorded as a ref and the commit it resolved to.

Without ``--ref`` a local job runs the code the client runs (its branch and HEAD commit are recorded,
with ``-dirty`` when tracked files have uncommitted changes) and a Ray job runs the worker's installed
environment. With ``--ref`` the branch, tag or commit is resolved in the source repository (the git
checkout this ``aifactory`` runs from, or ``$AIFACTORY_REPO``) and checked out as a detached ``git
worktree`` under ``$AIFACTORY_CACHE/worktrees/<commit>``; jobs put its ``core/`` first on ``PYTHONPATH``
(local) or ship it as the Ray ``working_dir``, and set ``AIFACTORY_CODE_REF`` (which run manifests
record). Worktrees are keyed by commit, so jobs of the same commit share one, and a file lock keeps two
clients from creating it at once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import aifactory
from aifactory.config import cache_dir
from aifactory.errors import InputError

REF_ENV = "AIFACTORY_CODE_REF"


@dataclass(frozen=True)
class CodeRef:
    """``ref`` as named (or the current branch), the resolved ``commit``, the ``core`` folder to import from."""

    ref: str | None = None
    commit: str | None = None
    core: Path | None = None


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise InputError(f"git {args[0]} in {repo}: {lines[-1] if lines else 'failed'}")
    return result.stdout.strip()


def source_repo() -> Path | None:
    """The git checkout the running ``aifactory`` comes from (``$AIFACTORY_REPO`` overrides)."""
    if os.environ.get("AIFACTORY_REPO"):
        return Path(os.environ["AIFACTORY_REPO"]).expanduser().resolve()
    package_dir = Path(aifactory.__file__).resolve().parent
    result = subprocess.run(["git", "-C", str(package_dir), "rev-parse", "--show-toplevel"],
                            capture_output=True, text=True, check=False)
    return Path(result.stdout.strip()) if result.returncode == 0 else None


def current_code(repo: Path | None = None) -> CodeRef:
    """The code this process runs: branch + HEAD commit (``-dirty`` with uncommitted changes)."""
    repo = repo or source_repo()
    if repo is None:
        return CodeRef(ref=f"aifactory {aifactory.__version__} (installed)")
    commit = _git(repo, "rev-parse", "HEAD")
    if _git(repo, "status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"
    return CodeRef(ref=_git(repo, "rev-parse", "--abbrev-ref", "HEAD"), commit=commit)


def worktrees_dir() -> Path:
    """``$AIFACTORY_CACHE/worktrees`` (default ``~/.cache/aifactory``), the layout ``train --ref`` uses too."""
    return cache_dir() / "worktrees"


def checkout(ref: str, repo: Path | None = None, cache: Path | None = None) -> CodeRef:
    """Resolve ``ref`` to a commit and return its worktree (created on first use)."""
    repo = repo or source_repo()
    if repo is None:
        raise InputError(f"--ref {ref}: aifactory does not run from a git checkout (set AIFACTORY_REPO)")
    if not ref or ref.startswith("-") or any(c.isspace() for c in ref):
        raise InputError(f"--ref {ref!r}: not a branch, tag or commit name")
    result = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InputError(f"--ref {ref}: not a branch, tag or commit of {repo}")
    commit = result.stdout.strip()
    cache = cache or worktrees_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tree = cache / commit
    with open(cache / f"{commit}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (tree / "core" / "aifactory" / "__init__.py").is_file():
            if tree.exists():  # left over by an interrupted checkout
                shutil.rmtree(tree)
            _git(repo, "worktree", "prune")
            _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), commit)
    if not (tree / "core" / "aifactory").is_dir():
        raise InputError(f"--ref {ref}: commit {commit[:12]} has no core/aifactory package")
    return CodeRef(ref=ref, commit=commit, core=tree / "core")
