"""Qt classes that moved between Qt 5 and Qt 6, imported in one place.

``QAction`` and ``QShortcut`` are in QtWidgets in Qt 5 (QGIS 3.22) and in QtGui in Qt 6 (QGIS 4).
"""

from __future__ import annotations

try:
    from qgis.PyQt.QtGui import QAction, QShortcut
except ImportError:
    from qgis.PyQt.QtWidgets import QAction, QShortcut

__all__ = ["QAction", "QShortcut"]
