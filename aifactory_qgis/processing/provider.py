"""The ``aifactory`` Processing provider (fresh algorithm instances on every load)."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider

from ..ui import icon, tr
from .algorithms import ALGORITHMS


class AIFactoryProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "aifactory"

    def name(self) -> str:
        return tr("AI Factory")

    def icon(self):
        return icon("aifactory")

    def loadAlgorithms(self) -> None:
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
