"""Code refs: resolving branches to commits and checking them out as shared git worktrees (real git)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from aifactory.coderef import checkout, current_code, worktrees_dir
from aifactory.errors import InputError


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture()
def repo(tmp_path) -> Path:
    """A small repository shaped like this one: core/aifactory on two branches."""
    repo = tmp_path / "repo"
    (repo / "core" / "aifactory").mkdir(parents=True)
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    (repo / "core" / "aifactory" / "__init__.py").write_text('__version__ = "1"\n')
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one")
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "core" / "aifactory" / "__init__.py").write_text('__version__ = "2"\n')
    git(repo, "commit", "-q", "-am", "two")
    git(repo, "checkout", "-q", "main")
    return repo


def test_checkout_makes_one_worktree_per_commit(repo, tmp_path):
    cache = tmp_path / "cache"
    code = checkout("feature", repo=repo, cache=cache)
    assert code.ref == "feature" and code.commit == git(repo, "rev-parse", "feature")
    assert code.core == cache / code.commit / "core"
    assert (code.core / "aifactory" / "__init__.py").read_text() == '__version__ = "2"\n'
    # the same commit by another name reuses the worktree; the repo's own checkout is untouched
    assert checkout(code.commit[:10], repo=repo, cache=cache).core == code.core
    assert (repo / "core" / "aifactory" / "__init__.py").read_text() == '__version__ = "1"\n'
    assert str(cache / code.commit) in git(repo, "worktree", "list")


def test_bad_refs(repo, tmp_path):
    for ref in ("no-such-branch", "--output=/tmp/x", "a b", ""):
        with pytest.raises(InputError, match="--ref"):
            checkout(ref, repo=repo, cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_current_code_records_branch_commit_and_dirty(repo):
    clean = current_code(repo)
    assert clean.ref == "main" and clean.commit == git(repo, "rev-parse", "HEAD") and clean.core is None
    (repo / "core" / "aifactory" / "__init__.py").write_text('__version__ = "edited"\n')
    assert current_code(repo).commit == clean.commit + "-dirty"


def test_worktrees_live_in_the_aifactory_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("AIFACTORY_CACHE", str(tmp_path / "c"))
    assert worktrees_dir() == tmp_path / "c" / "worktrees"
