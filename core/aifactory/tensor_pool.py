"""A bounded pool of torch's large CPU blocks for prediction under the ``lean`` heap (:mod:`aifactory.heap`).

Why: under ``lean`` glibc maps each large block afresh and unmaps it when freed, so every forward pass has the
kernel zero its activations' pages again; ``reuse`` keeps freed memory in glibc's heaps instead, which is as
fast as the model alone but lets the heap drift with the run's length (raster-wide buffers of the pipeline
share those heaps). This pool sits in torch's allocator only: blocks of 1 MB and more (the activations) are kept
when freed, in free lists keyed by exact size (a model on tiles of one size asks for the same sizes pass after
pass), and taken back by the next pass; free blocks beyond a cap (``AIFACTORY_TENSOR_POOL_MB``, 512 by default,
0 to disable) are released, oldest first. The pipeline's own buffers stay under ``lean``. torch has no caching
allocator for the CPU that Python can switch on (c10's is for mobile builds), hence this one
(``tensor_pool.cpp``, ~150 lines, built once with torch's C++ extension tooling into ``$AIFACTORY_CACHE``).

Measured (2 CPUs, U-Net resnet18, bf16, batch 8 in two passes; 20000 × 2304 crop, fresh processes, alternated):
predict 16.2–16.6 s against 18.1–18.6 under plain ``lean``, peak RSS 2041–2052 against 1523–1539 MB with a
1 GB cap (916 MB cached by the end); 16.2 s and +270–300 MB with 512 MB; 16.9 s and +200 MB with 256 MB. Peak
with 512 MB (light U-Net, fp32): 4096² 1965 MB, 16384² 2043 MB, ratio 1.04: bounded, not drifting.

Process-wide once installed (torch has one CPU allocator); CPU only; a machine without a C++ compiler predicts
without it, after one warning.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from aifactory.config import cache_dir
from aifactory.errors import ConfigError
from aifactory.progress import reporter

VARIABLE = "AIFACTORY_TENSOR_POOL_MB"
DEFAULT_CAP_MB = 512
MIN_BLOCK = 1 << 20
SOURCE = Path(__file__).with_name("tensor_pool.cpp")
STAT_NAMES = ("cached_bytes", "hits", "misses", "evictions", "cap_bytes")
STALE_LOCK_SECONDS = 600  # a build takes ~20 s


def cap_mb() -> int:
    """``AIFACTORY_TENSOR_POOL_MB`` (a whole number of MB, 0 disables), else the default."""
    value = os.environ.get(VARIABLE, "").strip()
    if not value:
        return DEFAULT_CAP_MB
    if not value.isdigit():
        raise ConfigError(f"{VARIABLE}={value!r}: expected a whole number of MB (0 disables the pool)")
    return int(value)


def build_directory() -> Path:
    """Where the extension is built: per torch version, Python and installed copy of the source, under
    ``$AIFACTORY_CACHE``. torch's tooling rebuilds whenever the source's path changes, so two installations (a
    checkout and a virtual environment, two checkouts) sharing one folder rebuilt it in turn, each predict of the
    other one waiting ~20 s for the compiler (seen with the CI's clone beside the working copy)."""
    import torch

    where = hashlib.sha1(str(SOURCE.resolve()).encode()).hexdigest()[:8]
    tag = f"torch{torch.__version__.replace('+', '-')}-py{sys.version_info[0]}{sys.version_info[1]}-{where}"
    return cache_dir() / "tensor_pool" / tag


@functools.cache
def _extension() -> Any:
    """The compiled extension (built on first use, ~20 s, then loaded from the cache); None where it cannot be."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # not "No CUDA runtime is found"
    from torch.utils.cpp_extension import load

    folder = build_directory()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = folder / "lock"  # torch's build lock: left behind by a killed build, it would block for ever
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            lock.unlink(missing_ok=True)
        if not any(folder.glob("aifactory_tensor_pool*.so")):
            reporter().log(f"building the tensor pool once into {folder} (~20 s)")
        return load("aifactory_tensor_pool", [str(SOURCE)], build_directory=str(folder), extra_cflags=["-O2"],
                    verbose=False)
    except Exception as exc:  # no compiler, headers or ninja, an unwritable cache: predict runs without the pool
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        reporter().warning(f"tensor pool unavailable ({reason}); predicting without it (slower on the CPU)")
        return None


def install_tensor_pool() -> bool:
    """Make the pool torch's CPU allocator for the rest of the process (once); False when disabled or unavailable."""
    cap = cap_mb()
    if cap == 0:
        return False
    extension = _extension()
    return extension is not None and bool(extension.install(MIN_BLOCK, cap << 20))


def pool_stats() -> dict[str, int] | None:
    """Cached bytes, hits, misses, evictions and cap of the installed pool; None when none is installed."""
    if not _extension.cache_info().currsize:  # never loaded, so nothing installed (and nothing built just to ask)
        return None
    extension = _extension()
    values = extension.stats() if extension is not None else []
    return dict(zip(STAT_NAMES, values, strict=True)) if values else None


if __name__ == "__main__":  # `make install` builds it ahead, so the first prediction does not wait
    if _extension() is None:
        sys.exit(1)
    print(f"tensor pool built in {build_directory()}")
