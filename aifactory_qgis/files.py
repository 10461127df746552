"""Files the plugin reads and writes, without Qt: resource lookup, layer sources, atomic JSON.

The plugin runs from two layouts: the source checkout (``aifactory_qgis/`` next to ``resources/`` and
``.venv/``) and the packaged zip (icons, styles and translations copied *into* the plugin folder by
``tools/qgis_plugin.py``). :func:`resource` looks in the package first, then in the checkout.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

PLUGIN_DIR = Path(__file__).resolve().parent
CHECKOUT = PLUGIN_DIR.parent


def resource(kind: str, name: str) -> Path:
    """``icons/x.svg``, ``styles/x.qml`` or ``i18n/x.qm``: packaged copy first, then the checkout's."""
    packaged = PLUGIN_DIR / kind / name
    return packaged if packaged.exists() else CHECKOUT / "resources" / kind / name


def checkout_python() -> str:
    """The checkout's ``.venv/bin/python`` when the plugin runs from a source checkout, else ``""``.

    Only a default: QGIS's own ``sys.executable`` is never the worker, and a packaged plugin has no
    checkout, so the user must then set the worker interpreter in the settings.
    """
    python = CHECKOUT / ".venv" / "bin" / "python"
    if (CHECKOUT / "core" / "aifactory" / "cli.py").is_file() and python.exists():
        return str(python)
    return ""


def source_path(source: str) -> str:
    """The file behind an OGR/GDAL layer source (``/x/a.gpkg|layername=b`` → ``/x/a.gpkg``)."""
    return source.split("|", 1)[0]


def source_layer_name(source: str) -> str | None:
    """The ``layername=`` part of an OGR source, if any."""
    for part in source.split("|")[1:]:
        if part.startswith("layername="):
            return part.split("=", 1)[1]
    return None


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Small JSON files the plugin owns (history, operating points): never half-written.

    The plugin must not import the core, so it cannot use ``aifactory.io.atomic``; same idea: a
    temporary file in the destination folder, then ``os.replace``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | os.PathLike[str], default: Any) -> Any:
    """JSON content of ``path``, or ``default`` when missing or unreadable (a corrupt history is not fatal)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default
