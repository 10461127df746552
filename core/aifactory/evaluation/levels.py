"""Evaluation across the levels of the class hierarchy (``--level N``).

Truth is often annotated deeper than a model predicts (truth ``vegetation/tree/conifer``, model
``vegetation/tree``): compared exactly, such classes never match and every detection is a false positive.
With a level, both sides' classes are cut to their first N levels before matching, the very cut training at
that level applies (:func:`aifactory.catalog.hierarchy.cut`: a path shallower than N keeps its depth, so a level
deeper than both sides changes nothing). Without a level, exact classes may be intended, so a mismatch of this
kind is only a warning that names the level that would match them (:func:`level_hint`).

This module imports :mod:`aifactory.catalog.hierarchy` on purpose: class paths and their levels are the
catalog's concept, and evaluation must cut them exactly as datasets do.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from aifactory.catalog.hierarchy import MAX_LEVEL, cut, depth, is_under
from aifactory.errors import InputError

__all__ = ["MAX_LEVEL", "check_level", "cut_classes", "level_hint"]


def check_level(level: int | None) -> int | None:
    """``level`` if it is None or a level of the hierarchy (1..MAX_LEVEL); anything else is one error line."""
    if level is None:
        return None
    if isinstance(level, bool) or not isinstance(level, int | np.integer) or not 1 <= level <= MAX_LEVEL:
        raise InputError(f"level must be an integer from 1 to {MAX_LEVEL} (the class hierarchy's depth), "
                         f"got {level!r}")
    return int(level)


def cut_classes(names: Iterable[str], level: int | None) -> np.ndarray:
    """Each class path cut to its first ``level`` levels (unchanged when ``level`` is None), as an object array.

    Cut once per distinct class, not per object: detections run to millions, classes to dozens.
    """
    values = np.asarray(list(names) if not isinstance(names, np.ndarray | pd.Series) else names, dtype=object)
    if level is None or not len(values):
        return values
    inverse, uniques = pd.factorize(values, use_na_sentinel=False)
    return np.array([cut(str(name), level) for name in uniques], dtype=object)[inverse]


def level_hint(pred: Iterable[str], truth: Iterable[str]) -> str | None:
    """A warning when no truth class equals a predicted class yet some are ancestors or descendants of each other.

    The level named is the deepest one at which every such pair matches: the shallower depth of each pair, the
    least over the pairs. None when a class matches exactly, or no pair is related (nothing a level would fix).
    """
    pred_set, truth_set = set(pred), set(truth)
    if not pred_set or not truth_set or pred_set & truth_set:
        return None
    pairs = sorted((t, p) for t in truth_set for p in pred_set if is_under(t, p) or is_under(p, t))
    if not pairs:
        return None
    level = min(min(depth(t), depth(p)) for t, p in pairs)
    t, p = pairs[0]
    relation = "under" if is_under(t, p) else "above"
    more = f" (and {len(pairs) - 1} more such pair{'s' if len(pairs) > 2 else ''})" if len(pairs) > 1 else ""
    return (f"no truth class equals a predicted class, but truth {t!r} is {relation} predicted {p!r}{more}: "
            f"--level {level} would match them")
