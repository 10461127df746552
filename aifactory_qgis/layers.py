"""Loading worker outputs (COG, GeoPackage) into the project with the QML styles of resources/styles."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsMapLayer, QgsProject, QgsRasterLayer, QgsVectorLayer

from .files import resource

#: output file stem -> (GeoPackage layer name, style)
KNOWN_OUTPUTS = {
    "detections": ("detections", "detections.qml"),
    "scores": (None, "scores.qml"),
}
LOADABLE_ARTIFACTS = ("detections", "scores", "tiles", "vector", "raster", "layer", "predictions")


def open_output(path: str | Path, name: str | None = None) -> QgsMapLayer | None:
    """A styled layer for a ``.tif``/``.gpkg`` output, or None if the file is not a readable layer."""
    path = Path(path)
    stem = path.stem
    gpkg_layer, style = KNOWN_OUTPUTS.get(stem, (None, None))
    name = name or f"{path.parent.name}/{stem}"
    layer: QgsMapLayer
    if path.suffix.lower() in (".tif", ".tiff", ".vrt"):
        layer = QgsRasterLayer(str(path), name, "gdal")
    elif path.suffix.lower() in (".gpkg", ".shp", ".geojson", ".fgb"):
        uri = f"{path}|layername={gpkg_layer}" if gpkg_layer else str(path)
        layer = QgsVectorLayer(uri, name, "ogr")
    else:
        return None
    if not layer.isValid():
        return None
    if style and resource("styles", style).is_file():
        layer.loadNamedStyle(str(resource("styles", style)))
    return layer


def add_outputs(paths: list[str]) -> list[QgsMapLayer]:
    """Open and add every loadable path (skipping duplicates and missing files); returns the added layers."""
    project = QgsProject.instance()
    loaded_sources = {layer.source() for layer in project.mapLayers().values()}
    added: list[QgsMapLayer] = []
    seen: set[str] = set()
    for path in paths:
        path = str(Path(path).resolve())
        if path in seen or not Path(path).exists():
            continue
        seen.add(path)
        layer = open_output(path)
        if layer is None or layer.source() in loaded_sources:
            continue
        project.addMapLayer(layer)
        added.append(layer)
    return added
