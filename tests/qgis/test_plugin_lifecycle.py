"""The plugin as QGIS sees it: metadata, classFactory, initGui/unload mirror images, settings, tokens."""

from __future__ import annotations

import configparser
import shutil
import sys
from pathlib import Path

import pytest
from plugin_helpers import REPO
from qgis.core import QgsApplication, QgsSettings
from qgis.gui import QgsDockWidget
from qgis.PyQt.QtCore import QCoreApplication, QEvent
from qgis.PyQt.QtWidgets import QMenu, QToolBar

DOCK_NAMES = {"AIFactoryDatasetDock", "AIFactoryJobsDock", "AIFactoryRpsDock", "AIFactoryGeofenceDock",
              "AIFactoryReviewDock", "AIFactoryTaggingDock"}


def our_widgets(window):
    docks = {d.objectName() for d in window.findChildren(QgsDockWidget) if d.objectName().startswith("AIFactory")}
    toolbars = [t for t in window.findChildren(QToolBar) if t.objectName() == "AIFactoryToolbar"]
    menus = [a for a in window.menuBar().actions() if a.menu() and a.menu().objectName() == "AIFactoryMenu"]
    return docks, toolbars, menus


def test_metadata_has_every_required_field():
    parser = configparser.ConfigParser()
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                "repository", "tracker"):
        assert general.get(key, "").strip(), key
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    assert (REPO / "resources" / general["icon"]).is_file()


def test_init_gui_and_unload_are_mirror_images(qgis_app, qgis_iface, plugin):
    window = qgis_iface.mainWindow()
    docks, toolbars, menus = our_widgets(window)
    assert docks == DOCK_NAMES
    assert len(toolbars) == 1 and len(toolbars[0].actions()) == 6
    assert len(menus) == 1 and len(menus[0].menu().actions()) == 8  # 6 docks, separator, settings
    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("aifactory")
    assert provider is not None
    assert {a.name() for a in provider.algorithms()} == {"dataset_build", "train", "predict", "postprocess",
                                                         "evaluate"}
    assert all(not icon.isNull() for icon in (a.icon() for a in toolbars[0].actions()))

    plugin.unload()
    qgis_app.sendPostedEvents(None, QEvent.DeferredDelete)  # run the deleteLater calls
    qgis_app.processEvents()
    assert our_widgets(window) == (set(), [], [])
    assert registry.providerById("aifactory") is None
    assert not window.findChildren(QMenu, "AIFactoryMenu")
    # a second cycle works the same (QGIS reloads plugins this way)
    plugin.initGui()
    assert our_widgets(window)[0] == DOCK_NAMES


def test_settings_round_trip_and_token_in_auth_manager(qgis_app):
    from aifactory_qgis.settings import Cluster, Settings, load_token, store_token

    manager = QgsApplication.authManager()
    if not manager.masterPasswordIsSet():
        manager.setMasterPassword("test-master-password", True)
    settings = Settings()
    authcfg = store_token("gpu", "s3cret-token")
    settings.set_clusters([Cluster("gpu", "http://127.0.0.1:8265", authcfg)])
    settings.set_mlflow_uri("sqlite:///mlflow.db")
    settings.set_worker_python("/opt/worker/bin/python")

    again = Settings()
    assert again.clusters() == [Cluster("gpu", "http://127.0.0.1:8265", authcfg)]
    assert again.mlflow_uri() == "sqlite:///mlflow.db"
    assert again.worker_python() == "/opt/worker/bin/python"
    assert load_token(authcfg) == "s3cret-token"
    plain = QgsSettings()
    plain.sync()
    assert "s3cret-token" not in Path(plain.fileName()).read_text(encoding="utf-8")  # only in the auth db
    assert store_token("gpu", "rotated", authcfg) == authcfg
    assert load_token(authcfg) == "rotated"


@pytest.mark.skipif(shutil.which("lrelease") is None, reason="Qt's lrelease is not installed")
def test_french_translation_is_installed_and_removed(qgis_app, qgis_iface, tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "tools"))
    import qgis_plugin

    from aifactory_qgis import classFactory
    from aifactory_qgis import plugin as plugin_module

    qgis_plugin.compile_translations(tmp_path)
    monkeypatch.setattr(plugin_module, "resource", lambda kind, name: tmp_path / name)
    QgsSettings().setValue("locale/userLocale", "fr_FR")
    instance = classFactory(qgis_iface)
    try:
        instance.initGui()
        assert instance.docks["jobs"].windowTitle() == "AI Factory — Tâches"
        instance.unload()
        assert QCoreApplication.translate("AIFactory", "Run") == "Run"
    finally:
        QgsSettings().setValue("locale/userLocale", "en_US")
