"""Class paths and the class hierarchy (at most :data:`MAX_LEVEL` levels).

A class is a path such as ``vehicle/aircraft/fighter/f16``: level 1 is ``vehicle``, level 2
``vehicle/aircraft`` and so on. The catalog stores the prefix of every level in its own column so that
"all aircraft" is one indexed equality, and training at level 2 cuts every path to its first two parts
(a path shallower than the level keeps its full depth: ``building`` stays ``building``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from aifactory.errors import InputError

MAX_LEVEL = 4
_PART = re.compile(r"^[^/\s][^/]*$")


def normalize(path: str, where: str = "") -> str:
    """Canonical form of a class path (parts stripped, lower-cased); a bad path is one error line."""
    text = str(path).strip().strip("/")
    parts = [part.strip().lower() for part in text.split("/")]
    prefix = f"{where}: " if where else ""
    if not text or not all(parts) or not all(_PART.match(part) for part in parts):
        raise InputError(f"{prefix}invalid class path {path!r} (expected parts like vehicle/aircraft)")
    if len(parts) > MAX_LEVEL:
        raise InputError(f"{prefix}class path {path!r} is deeper than {MAX_LEVEL} levels")
    return "/".join(parts)


def config_path(path: str) -> str:
    """:func:`normalize` for config validators: a bad path becomes a ``ValueError``, which pydantic reports
    with the config file and key path."""
    try:
        return normalize(path)
    except InputError as exc:
        raise ValueError(str(exc)) from None


def depth(path: str) -> int:
    return path.count("/") + 1


def prefixes(path: str) -> list[str | None]:
    """The path at levels 1..MAX_LEVEL (None below its own depth): the catalog's level columns."""
    parts = path.split("/")
    return ["/".join(parts[:level]) if level <= len(parts) else None for level in range(1, MAX_LEVEL + 1)]


def cut(path: str, level: int | None) -> str:
    """The class of ``path`` when training at ``level`` (None = the full path)."""
    if level is None:
        return path
    return "/".join(path.split("/")[:level])


def is_under(path: str, ancestor: str) -> bool:
    """True when ``path`` is ``ancestor`` or one of its descendants."""
    return path == ancestor or path.startswith(ancestor + "/")


def tree(paths: Iterable[str]) -> dict[str, list[str]]:
    """Parent → sorted children for every prefix of ``paths`` (roots under the key ``""``)."""
    children: dict[str, set[str]] = {}
    for path in paths:
        parts = path.split("/")
        for level in range(1, len(parts) + 1):
            parent = "/".join(parts[:level - 1])
            children.setdefault(parent, set()).add("/".join(parts[:level]))
    return {parent: sorted(kids) for parent, kids in sorted(children.items())}


def map_classes(paths: Iterable[str], level: int | None, mapping: Mapping[str, str] | None = None) -> list[str]:
    """Rename each path through ``mapping`` (the most specific key wins), then cut it at ``level``.

    A ``mapping`` key matches a path and all its descendants, so ``{vehicle/aircraft: aircraft}``
    folds every aircraft subtype into ``aircraft``.
    """
    mapping = mapping or {}
    keys = sorted(mapping, key=depth, reverse=True)
    out = []
    for path in paths:
        name = next((mapping[key] for key in keys if is_under(path, key)), path)
        out.append(cut(name, level))
    return out
