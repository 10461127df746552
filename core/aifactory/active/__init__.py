"""Active learning: score unlabelled tiles, pick the ones worth annotating, retrain, measure the savings.

- :mod:`.acquisitions` — the ``ACQUISITIONS`` registry (entropy, margin, least confidence, BALD with
  Monte-Carlo dropout, random) and the per-tile aggregation of pixel scores (mean, top-k % mean, max);
- :mod:`.scoring` — a trained run turned into a tile scorer: class probabilities (MC samples for BALD),
  acquisition, aggregation and encoder embeddings, batch by batch under ``torch.inference_mode``;
- :mod:`.diversity` — k-center greedy on embeddings, minimum ground distance, the hybrid "top-M by
  uncertainty, then K by diversity";
- :mod:`.select` — ``al select``: candidate tiles of rasters streamed through the scorer into a tiles layer
  (``tiles``: score, rank, status, strategy, round) that the QGIS tagging dock walks;
- :mod:`.tags` — tagged tiles + annotation layer → a dataset config whose labelled extent is the tiles;
- :mod:`.rounds` — ``al round``: wait for tags, retrain, evaluate, record ``rounds.jsonl``, select again;
- :mod:`.simulate` — ``al simulate``: the label-efficiency curve on a fully labelled dataset.

Entries are called as ``func(params, probs, generator) -> pixel scores``; see :mod:`.acquisitions`.
Third parties register through the ``aifactory.acquisitions`` entry-point group. Importing this package
does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aifactory.registry import Registry

ACQUISITIONS: Registry[Callable[..., Any]] = Registry(
    "acquisition function", "aifactory.acquisitions", builtin_modules=("aifactory.active.acquisitions",))
