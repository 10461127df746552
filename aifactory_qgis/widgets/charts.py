"""Two small charts drawn with QPainter: class balance per split, and a PR curve with the current point.

QPainter rather than matplotlib: these redraw on every slider move or preview inside the QGIS process,
and matplotlib is neither guaranteed in QGIS's Python nor cheap to import there.
"""

from __future__ import annotations

from qgis.PyQt.QtCore import QPointF, QRectF, QSize, Qt
from qgis.PyQt.QtGui import QColor, QPainter, QPainterPath, QPen
from qgis.PyQt.QtWidgets import QSizePolicy, QWidget

from ..ui import tr

SPLIT_COLORS = {"train": QColor("#3b78c2"), "val": QColor("#f0a030"), "test": QColor("#4caf50")}
OTHER_COLOR = QColor("#9e9e9e")
CENTER = Qt.AlignmentFlag.AlignCenter
LEFT = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter


class BalanceChart(QWidget):
    """Horizontal stacked bars: one per class, one segment per split, labelled with counts."""

    ROW = 22

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.counts: dict[str, dict[str, int]] = {}
        self.message = tr("No preview yet")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)

    def set_counts(self, counts: dict[str, dict[str, int]], message: str = "") -> None:
        self.counts = counts
        self.message = message
        self.updateGeometry()
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(260, 30 + self.ROW * max(1, len(self.counts)))

    def minimumSizeHint(self) -> QSize:
        return self.sizeHint()

    def splits(self) -> list[str]:
        names = {split for row in self.counts.values() for split in row}
        return [s for s in SPLIT_COLORS if s in names] + sorted(names - set(SPLIT_COLORS))

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        metrics = painter.fontMetrics()
        if not self.counts:
            painter.drawText(self.rect(), CENTER, self.message)
            return
        splits = self.splits()
        x = 4
        for split in splits:  # legend
            painter.fillRect(QRectF(x, 6, 10, 10), SPLIT_COLORS.get(split, OTHER_COLOR))
            painter.drawText(QPointF(x + 14, 15), split)
            x += 24 + metrics.horizontalAdvance(split)
        if self.message:
            painter.drawText(QRectF(x, 0, self.width() - x - 4, 20), RIGHT, self.message)
        label_width = min(self.width() // 3, max(metrics.horizontalAdvance(name) for name in self.counts) + 8)
        totals = {name: sum(row.values()) for name, row in self.counts.items()}
        biggest = max(totals.values()) or 1
        bar_width = max(10, self.width() - label_width - 60)
        for i, (name, row) in enumerate(sorted(self.counts.items(), key=lambda kv: -totals[kv[0]])):
            y = 24 + i * self.ROW
            painter.setPen(self.palette().windowText().color())
            painter.drawText(QRectF(2, y, label_width - 4, self.ROW - 4), LEFT,
                             metrics.elidedText(name, Qt.TextElideMode.ElideMiddle, label_width - 4))
            left = float(label_width)
            for split in splits:
                width = bar_width * row.get(split, 0) / biggest
                painter.fillRect(QRectF(left, y + 2, width, self.ROW - 6), SPLIT_COLORS.get(split, OTHER_COLOR))
                left += width
            painter.drawText(QPointF(left + 4, y + self.ROW - 7), str(totals[name]))


class PRCurve(QWidget):
    """Precision (y) against recall (x), F1 iso-lines, and the slider's current point."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.curve: list[tuple[float, float]] = []
        self.current: tuple[float, float] | None = None
        self.setMinimumSize(180, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_curve(self, points: list[tuple[float, float]]) -> None:
        """``(recall, precision)`` pairs in threshold order."""
        self.curve = points
        self.update()

    def set_current(self, point: tuple[float, float] | None) -> None:
        self.current = point
        self.update()

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        area = QRectF(self.rect()).adjusted(34, 18, -10, -26)

        def at(recall: float, precision: float) -> QPointF:
            return QPointF(area.left() + recall * area.width(), area.bottom() - precision * area.height())

        painter.setPen(QPen(QColor("#dddddd"), 1, Qt.PenStyle.DashLine))
        for f1 in (0.2, 0.4, 0.6, 0.8):  # iso-F1 lines: p = f1 r / (2r - f1)
            path = QPainterPath()
            started = False
            for step in range(101):
                r = f1 / 2 + (1 - f1 / 2) * step / 100
                p = f1 * r / (2 * r - f1) if 2 * r - f1 > 1e-9 else 1.0
                if p <= 1.0:
                    (path.lineTo if started else path.moveTo)(at(r, p))
                    started = True
            painter.drawPath(path)
        painter.setPen(QPen(self.palette().windowText().color(), 1))
        painter.drawRect(area)
        for tick in (0.0, 0.5, 1.0):
            painter.drawText(QRectF(area.left() + tick * area.width() - 15, area.bottom() + 2, 30, 12),
                             CENTER, f"{tick:g}")
            painter.drawText(QRectF(0, area.bottom() - tick * area.height() - 6, 30, 12),
                             RIGHT, f"{tick:g}")
        painter.drawText(QRectF(area.left(), area.bottom() + 12, area.width(), 14), CENTER, tr("recall"))
        painter.drawText(QRectF(area.left(), 0, area.width(), 16), LEFT,
                         tr("precision ↑"))
        if len(self.curve) > 1:
            painter.setPen(QPen(QColor("#3b78c2"), 2))
            path = QPainterPath(at(*self.curve[0]))
            for recall, precision in self.curve[1:]:
                path.lineTo(at(recall, precision))
            painter.drawPath(path)
        if self.current is not None:
            painter.setPen(QPen(QColor("#c62828"), 2))
            painter.setBrush(QColor("#ef5350"))
            painter.drawEllipse(at(*self.current), 5, 5)
