"""Checkpoints: everything an exact resume needs, written atomically, loaded with ``weights_only=True``.

A checkpoint holds the model, optimiser, LR scheduler and gradient scaler states, the loop state
(epoch, next batch inside the epoch, optimiser step, best metric, early-stopping counter, byte length of
``metrics.jsonl``) and every RNG state (Python, NumPy, torch CPU and CUDA). Data order needs no state of
its own: the batch order of an epoch and each sample's augmentation are functions of the seed, the epoch
and the sample index (:mod:`aifactory.training.data`).

Files are ``checkpoints/step-00000120.pt``; each is written to a temporary sibling and renamed
(:func:`aifactory.io.atomic.atomic_path`), so a kill or a full disk during a write leaves the previous
checkpoints untouched. Only plain containers and tensors are stored (NumPy's RNG state is converted), so
loading never unpickles code.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aifactory.errors import AIFactoryError, InputError
from aifactory.io.atomic import atomic_path

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{8})\.pt$")


def rng_state() -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(mt), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype="int64")), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"step-{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first (temporary files of an interrupted write are not listed)."""
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def save_tensors(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to ``path`` atomically, through a stream: saved to a path, the archive's inner folder
    takes the name of the temporary file, and the same weights would give different bytes in every run
    (``model.pt`` of two identical runs must be byte-identical, e.g. for a checksum)."""
    with atomic_path(path) as tmp, tmp.open("wb") as stream:
        torch.save(state, stream)


def save_checkpoint(path: Path, state: dict[str, Any], keep: int) -> None:
    """Write ``state`` atomically, then delete all but the newest ``keep`` checkpoints."""
    try:
        save_tensors(path, state)
    except OSError as exc:
        raise AIFactoryError(f"{path}: cannot write checkpoint ({exc.strerror or exc}); "
                             f"the previous checkpoint is intact") from None
    for old in list_checkpoints(path.parent.parent)[:-keep]:
        old.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise InputError(f"{path}: cannot read checkpoint: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or "model" not in state or "loop" not in state:
        raise InputError(f"{path}: not an aifactory training checkpoint")
    return state


def latest_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint of the run, or None when it has none."""
    found = list_checkpoints(run_dir)
    return load_checkpoint(found[-1]) if found else None
