"""AI Factory QGIS plugin: docks and a Processing provider over the headless ``aifactory`` worker.

QGIS calls :func:`classFactory`; everything else is imported only then, so merely listing the plugin
costs nothing. The plugin never imports ``aifactory`` (see DESIGN.md, "two processes").
"""


def classFactory(iface):
    from .plugin import AIFactoryPlugin

    return AIFactoryPlugin(iface)
