"""Tagging dock (active learning): walk the tiles chosen by ``aifactory al select`` in rank order, zoom to
each and start digitizing on the annotation layer, mark tiles tagged or skipped (``status``), and launch
the next round: an ``aifactory al round CONFIG.yaml`` job (ingest the tags, retrain, evaluate, pick the next
tiles) whose new tiles layer the dock switches to when it finishes. While tiles are still ``to_tag`` the
round refuses to start, and its one-line reason reaches the message bar."""

from __future__ import annotations

from pathlib import Path

from qgis.core import NULL, QgsFeatureRequest, QgsMapLayerProxyModel, QgsProject, QgsVectorLayer
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtGui import QKeySequence
from qgis.PyQt.QtWidgets import QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton

from .. import worker
from ..files import source_layer_name, source_path
from ..jobs.spec import JobSpec
from ..qt import QShortcut
from ..ui import crs_mismatch, missing_fields, project_layers, tr
from .base import BaseDock
from .navigation import start_digitizing, zoom_to_feature

STATUSES = ("to_tag", "tagged", "skipped")


class TaggingDock(BaseDock):
    def __init__(self, iface, manager) -> None:
        super().__init__(iface, manager, tr("AI Factory — Tagging (active learning)"), "AIFactoryTaggingDock")
        self.tiles: QgsVectorLayer | None = None
        self.order: list[int] = []
        self.index = -1
        box = QGroupBox(tr("Tiles to tag"), self)
        form = QFormLayout(box)
        self.tiles_file = QgsFileWidget(box)
        self.tiles_file.setFilter(tr("Tiles from al select (*.gpkg)"))
        self.tiles_file.fileChanged.connect(self.open_tiles)
        self.tiles_combo = QgsMapLayerComboBox(box)
        self.tiles_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.tiles_combo.setAllowEmptyLayer(True)
        self.tiles_combo.setLayer(None)
        self.tiles_combo.layerChanged.connect(self.set_tiles)
        self.annotations = QgsMapLayerComboBox(box)
        self.annotations.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.annotations.setAllowEmptyLayer(True)
        self.annotations.setLayer(None)
        self.current = QLabel(tr("no tile"), box)
        self.counts = QLabel("", box)
        moves, marks = QHBoxLayout(), QHBoxLayout()
        self.shortcuts = []
        for row, label, key, slot in ((moves, tr("◀ Previous (,)"), ",", self.previous),
                                      (moves, tr("Next (.) ▶"), ".", self.next),
                                      (marks, tr("Tagged (T)"), "T", self.tagged),
                                      (marks, tr("Skip (S)"), "S", self.skipped)):
            button = QPushButton(label, box)
            button.clicked.connect(slot)
            row.addWidget(button)
            self.shortcuts.append(QShortcut(QKeySequence(key), self, slot))
        form.addRow(tr("Tiles file"), self.tiles_file)
        form.addRow(tr("Tiles layer"), self.tiles_combo)
        form.addRow(tr("Annotate on"), self.annotations)
        form.addRow(self.current)
        form.addRow(moves)
        form.addRow(marks)
        form.addRow(self.counts)
        self.body.addWidget(box)

        rounds = QGroupBox(tr("Next round"), self)
        form = QFormLayout(rounds)
        self.round_config = QgsFileWidget(rounds)
        self.round_config.setFilter(tr("al round config (*.yaml *.yml)"))
        launch = QPushButton(tr("Launch next round"), rounds)
        launch.clicked.connect(lambda: self.next_round())
        form.addRow(tr("Round config"), self.round_config)
        form.addRow(launch)
        self.body.addWidget(rounds)
        self.round_job_id = ""
        manager.jobFinished.connect(self._round_finished)

    def open_tiles(self, path: str) -> QgsVectorLayer | None:
        """Walk the tiles of ``path``: the project's layer of that file if there is one (choosing the same file
        again must not stack copies of it in the legend), else a new layer."""
        if not path:
            return None
        wanted = Path(path).resolve()
        for known in project_layers(QgsVectorLayer):
            if known.providerType() == "ogr" and source_layer_name(known.source()) in (None, "tiles") \
                    and Path(source_path(known.source())).resolve() == wanted:
                self.tiles_combo.setLayer(known)
                return known
        layer = QgsVectorLayer(f"{path}|layername=tiles", tr("AL tiles"), "ogr")
        if not layer.isValid():
            layer = QgsVectorLayer(path, tr("AL tiles"), "ogr")
        if not layer.isValid():
            self.error(tr("{0} is not a readable tiles layer.").format(path))
            return None
        QgsProject.instance().addMapLayer(layer)
        self.tiles_combo.setLayer(layer)
        return layer

    def set_tiles(self, layer) -> None:
        self.watch_layer(None)
        self.tiles, self.order, self.index = None, [], -1
        self.current.setText(tr("no tile"))
        self.counts.setText("")
        if layer is None:
            return
        if not isinstance(layer, QgsVectorLayer) or missing_fields(layer, "status"):
            self.error(tr("Layer “{0}” has no “status” field: load the tiles written by aifactory al select.")
                       .format(layer.name()))
            return
        self.tiles = layer
        self.watch_layer(layer)
        has_rank = not missing_fields(layer, "rank")
        request = QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)
        rows = [((f["rank"] if has_rank and f["rank"] != NULL else f.id()), f.id()) for f in layer.getFeatures(request)]
        self.order = [fid for _rank, fid in sorted(rows)]
        self._count()
        pending = [i for i, fid in enumerate(self.order) if self._status(fid) == "to_tag"]
        self.go(pending[0] if pending else 0)

    def layer_changed(self) -> None:
        self.set_tiles(self.tiles)

    def layer_gone(self) -> None:
        self.set_tiles(None)

    def _status(self, fid: int) -> str:
        """The tile's status ("" for a tile deleted since the list was read)."""
        assert self.tiles is not None
        feature = self.tiles.getFeature(fid)
        if not feature.isValid():
            return ""
        value = feature["status"]
        return str(value) if value not in (NULL, None, "") else "to_tag"

    def _count(self) -> None:
        if self.tiles is None:
            return
        counts = dict.fromkeys(STATUSES, 0)
        for fid in self.order:
            status = self._status(fid)
            if status:
                counts[status] = counts.get(status, 0) + 1
        self.counts.setText(tr("{0} to tag · {1} tagged · {2} skipped").format(
            counts["to_tag"], counts["tagged"], counts["skipped"]))

    def go(self, index: int) -> None:
        if self.tiles is None or not self.order:
            return
        self.index = max(0, min(index, len(self.order) - 1))
        tile = self.tiles.getFeature(self.order[self.index])
        if not tile.isValid():  # deleted in an edit session since the list was read: drop it
            del self.order[self.index]
            self._count()
            if not self.order:
                self.current.setText(tr("no tile"))
            self.go(self.index)
            return
        self.current.setText(tr("tile {0}/{1} · {2}").format(self.index + 1, len(self.order), self._status(tile.id())))
        zoom_to_feature(self.iface.mapCanvas(), self.tiles, tile)
        annotations = self.annotations.currentLayer()
        if annotations is not None:
            problem = crs_mismatch(annotations, self.tiles)
            if problem:
                self.error(problem)
            else:
                start_digitizing(self.iface, annotations)

    def next(self) -> None:
        self.go(self.index + 1)

    def previous(self) -> None:
        self.go(self.index - 1)

    def tagged(self) -> None:
        self.mark("tagged")

    def skipped(self) -> None:
        self.mark("skipped")

    def mark(self, status: str) -> None:
        """Write ``status`` on the current tile (saving the annotations drawn on it) and move on."""
        if self.tiles is None or not 0 <= self.index < len(self.order):
            return
        fid = self.order[self.index]
        if not self._status(fid):
            self.go(self.index)  # the tile was deleted: drop it and show the next one
            return
        if self.tiles.readOnly():
            self.error(tr("Layer “{0}” is read-only in this project: the status is not written.")
                       .format(self.tiles.name()))
            return
        annotations = self.annotations.currentLayer()
        if status == "tagged" and annotations is not None and annotations.isEditable() \
                and not annotations.commitChanges(False):
            self.error(tr("Could not save the annotations: {0}").format("; ".join(annotations.commitErrors())))
            return
        index = self.tiles.fields().indexOf("status")
        if self.tiles.isEditable():
            self.tiles.changeAttributeValue(fid, index, status)
        elif not self.tiles.dataProvider().changeAttributeValues({fid: {index: status}}):
            self.error(tr("Could not write the status to “{0}”").format(self.tiles.name()))
            return
        self.tiles.triggerRepaint()
        self._count()
        self.next()

    def next_round(self):
        """Save the annotations and run ``al round`` on the chosen config (in the config's folder)."""
        config = self.round_config.filePath()
        if not Path(config).is_file():
            self.error(tr("Choose the al round config YAML (see resources/examples/al_round.yaml)."))
            return None
        annotations = self.annotations.currentLayer()
        if annotations is not None and annotations.isEditable():
            annotations.commitChanges(False)
        job = self.manager.submit(JobSpec(kind="al_round", title=tr("active learning round"),
                                          args=worker.al_round(config), cwd=str(Path(config).parent)))
        self.round_job_id = job.spec.id
        return job

    def _round_finished(self, job) -> None:
        """Our round job ended well: walk the tiles it picked (the manager has loaded them)."""
        if job.spec.id != self.round_job_id or job.status != "ok":
            return
        base = Path(job.spec.cwd or ".")
        picked = [str((base / a["path"]).resolve()) for a in job.state.artifacts if a["kind"] == "tiles"]
        if not picked:
            return
        for layer in QgsProject.instance().mapLayers().values():
            if isinstance(layer, QgsVectorLayer) and layer.source().split("|")[0] == picked[-1]:
                self.tiles_combo.setLayer(layer)
                return
        self.tiles_file.setFilePath(picked[-1])
