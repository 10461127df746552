"""Post-processing: a registry of vector ops on detections, chainable from YAML.

``OPS`` holds the ops (``aifactory postprocess --list``); :func:`apply_chain` runs a list of op specs on a
GeoDataFrame and :func:`load_chain` reads and validates a chain file. Third parties add ops through the
``aifactory.postprocess`` entry-point group (see README.md in this folder).
"""

from aifactory.postprocess.base import OPS
from aifactory.postprocess.chain import apply_chain, load_chain, resolve_chain

__all__ = ["OPS", "apply_chain", "load_chain", "resolve_chain"]
