"""Canvas moves shared by the review and tagging docks: zoom to a feature, start digitizing a layer."""

from __future__ import annotations

from qgis.core import QgsCoordinateTransform, QgsFeature, QgsProject, QgsVectorLayer
from qgis.gui import QgsMapCanvas

CONTEXT = 2.0  # show the feature with this many times its size around it


def zoom_to_feature(canvas: QgsMapCanvas, layer: QgsVectorLayer, feature: QgsFeature) -> None:
    """Centre the canvas on ``feature`` (in the canvas CRS) with some imagery around it, and flash it."""
    if not feature.hasGeometry():
        return
    extent = feature.geometry().boundingBox()
    transform = QgsCoordinateTransform(layer.crs(), canvas.mapSettings().destinationCrs(), QgsProject.instance())
    if transform.isValid() and not transform.isShortCircuited():
        extent = transform.transformBoundingBox(extent)
    size = max(extent.width(), extent.height(), 1e-9)
    extent.grow(size * CONTEXT / 2)
    canvas.setExtent(extent)
    canvas.refresh()
    canvas.flashFeatureIds(layer, [feature.id()])


def start_digitizing(iface, layer: QgsVectorLayer) -> None:
    """Make ``layer`` active and editable and switch to QGIS's own add-feature tool."""
    iface.setActiveLayer(layer)
    if not layer.isEditable():
        layer.startEditing()
    iface.actionAddFeature().trigger()
