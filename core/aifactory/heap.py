"""How glibc keeps freed memory in the compute commands: ``AIFACTORY_HEAP=lean|reuse|system``.

Why it matters: torch frees a batch's activations (tens to hundreds of MB each) after every pass, and glibc
serves blocks above its mmap threshold with fresh mappings that it unmaps when freed: the next pass maps
them again and the kernel zeroes every page first. Measured here (U-Net resnet18, 4 bands, 2 CPUs), a
third of a forward pass's CPU time was kernel time, and up to a quarter of a training step's.

- ``reuse``: no mmap (every block from the heaps), up to 1 GiB free kept at the heap top, 2 arenas: the
  next pass reuses the memory. Bare training steps (fp32 forward, backward, AdamW) ran 1.3–1.4× faster
  than under glibc's defaults (batch 8 of 256 px: 4.0 → 5.4 samples/s; batch 4 of 512 px: 0.95 → 1.35),
  with a peak RSS 11 % higher; with 128 px chips, whose activations mostly stay under glibc's own
  threshold, ``bench_training``'s compute ceiling gained 7 % (17.3 → 18.6 samples/s). Prediction with
  ``--batch-size 2`` ran 1.6–1.7× faster at 4k² (1.30 → 2.1–2.2 Mpx/s against ``lean`` at batch 8, fp32, one
  batch at a time; bf16 with two batches at once, :data:`aifactory.prediction.runtime.CPU_PASSES`, both at batch 8:
  1.1×), but
  raster-wide strips held in the heaps make its peak grow more with the raster's width (16k²/4k² 1.18–1.19
  against 1.09), and at batch 8 the peak depended on how the heap happened to fragment (1.03 and 1.25 in
  two runs). The default for training, where memory follows the batch, not the raster.
- ``lean``: blocks above 4 MB mapped (returned to the system when freed), 2 arenas (more let blocks handed
  between threads scatter and the peak creep up: +100 MB at 4k² before), and the prediction writer trims
  the heaps after each strip (:func:`release_free_heap`). Peak RSS flat in the raster size (16k²/4k²
  1.09). The default for prediction, whose goal is memory bounded by tiles whatever the raster. There, torch's
  own blocks of 1 MB and more also go through a bounded pool (:mod:`aifactory.tensor_pool`): the model's
  activations are reused pass after pass as under ``reuse``, while the pipeline's raster-wide buffers stay lean.
  Torch's own blocks of 2 MB and more are also asked to be backed by transparent huge pages
  (``THP_MEM_ALLOC_ENABLE=1``, torch's switch, read at its first allocation): the mappings still come and
  go with each pass, but the kernel takes one fault per 2 MB instead of 512. Measured on the bench's
  20000 × 2304 crop (U-Net resnet18, bf16, 2 CPUs): kernel time of the bare forward 19.3 → 12.8 s for 225
  tiles, forward 23.7 → 21.7 s; 16k² prediction 200 → 182 s with the same peak RSS (1695 → 1696 MB).
  glibc's own switch (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``) saved more kernel time but must be set
  before the interpreter starts and raised the 16k² peak by 14 MB (ratio 1.101).
- ``system``: glibc's own settings (what a plain Python process gets).

Under ``reuse`` the peak grows with the run's length more than with the raster's width: 20000 × 2304 and
20000 × 6912 crops (light U-Net, fp32, batch 8) peaked at 2009–2025 and 2184–2199 MB (19776 wide, where every
batch is full, the same), against 1604 and 1660 MB under ``lean``; without detections 1982 and 2083 MB: glibc's heap
drifts over the run, whatever the batches' sizes, and the detections add to it. The model
alone in a child process under ``reuse`` (the pipeline ``lean`` in the parent, batches in shared memory) was
built and measured: predict 136.8 s at 20000² (η ≈ 0.93) but the child's heap drifted all the same (1508–1829 MB
alone; 16k²/4k² of both processes 1.06–1.18 in four runs) and the two held 2.0–2.4 GB against
1.5–1.6 GB for one ``lean`` process; not kept.

tcmalloc (``LD_PRELOAD``) was about as fast as ``reuse`` but its peak grew with the raster (1.18) and it needs an
interpreter restart; jemalloc 5.3 with its defaults was slower than glibc. Process-wide and glibc only (a
no-op elsewhere); the first prediction or training of a process sets it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

from aifactory.errors import ConfigError

VARIABLE = "AIFACTORY_HEAP"
POLICIES = ("lean", "reuse", "system")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -3, -4, -8  # mallopt (glibc malloc.h)
#: Environment switches each policy sets for the libraries that read them (a value already set is kept).
LIBRARY_SWITCHES: dict[str, dict[str, str]] = {"lean": {"THP_MEM_ALLOC_ENABLE": "1"}, "reuse": {}, "system": {}}
SETTINGS: dict[str, list[tuple[int, int]]] = {
    "lean": [(M_ARENA_MAX, 2), (M_MMAP_THRESHOLD, 4 << 20)],
    "reuse": [(M_ARENA_MAX, 2), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 1 << 30)],
    "system": [],
}
_applied: list[str] = []  # the policy this process runs under, once set


def heap_policy(default: str) -> str:
    """``AIFACTORY_HEAP`` if set, else ``default``; a value that is not a policy is a one-line error."""
    policy = os.environ.get(VARIABLE, "").strip().lower() or default
    if policy not in POLICIES:
        raise ConfigError(f"{VARIABLE}={policy!r}: expected one of {', '.join(POLICIES)}")
    return policy


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def apply_heap_policy(default: str) -> str:
    """Set the process's policy (see the module docstring) unless one is set already; returns the one in use.

    Call it before torch allocates anything: torch reads its huge-page switch once, at its first allocation.
    """
    if not _applied:
        policy = heap_policy(default)
        libc = _libc()
        if libc is not None:
            for option, value in SETTINGS[policy]:
                libc.mallopt(option, value)
        for name, switch in LIBRARY_SWITCHES[policy].items():
            os.environ.setdefault(name, switch)
        _applied.append(policy)
    return _applied[0]


def applied_heap_policy() -> str | None:
    """The policy this process runs under, or None before :func:`apply_heap_policy`."""
    return _applied[0] if _applied else None


def release_free_heap() -> None:
    """Under ``lean``, hand the free pages inside glibc's heaps back to the system (``malloc_trim``).

    Buffers of a strip's width below the mmap threshold leave holes in the heap that stay resident while
    the model's next forward pass peaks; a trim after each strip makes them count no more.
    """
    libc = _libc()
    if libc is not None and _applied == ["lean"]:
        libc.malloc_trim(0)
