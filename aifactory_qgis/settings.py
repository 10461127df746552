"""Plugin settings in QgsSettings; the Ray bearer tokens in QgsAuthManager (never in plain settings).

A token is stored as a ``Basic`` auth configuration (encrypted by the QGIS master password) of which
only the password is used: QGIS 3.22 has no bearer-token method, so the Ray client sets the
``Authorization: Bearer`` header itself from the decrypted value.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsSettings

from .files import checkout_python
from .ui import tr

PREFIX = "aifactory/"


@dataclass
class Cluster:
    """A Ray cluster: dashboard URL (Jobs REST API) and the auth config holding its token."""

    name: str
    url: str
    authcfg: str = ""


class Settings:
    """Typed access to ``aifactory/*`` keys of the QGIS profile settings."""

    def __init__(self) -> None:
        self._s = QgsSettings()

    def _get(self, key: str, default: str = "") -> str:
        return str(self._s.value(PREFIX + key, default) or default)

    def _set(self, key: str, value: str) -> None:
        self._s.setValue(PREFIX + key, value)

    def worker_python(self) -> str:
        """The worker interpreter: the setting, else the checkout's venv when running from source."""
        return self._get("worker_python") or checkout_python()

    def set_worker_python(self, path: str) -> None:
        self._set("worker_python", path)

    def mlflow_uri(self) -> str:
        return self._get("mlflow_uri")

    def set_mlflow_uri(self, uri: str) -> None:
        self._set("mlflow_uri", uri)

    def work_dir(self) -> Path:
        """Where job configs and outputs go unless the user picks a folder."""
        default = Path(QgsApplication.qgisSettingsDirPath()) / "aifactory" / "jobs"
        return Path(self._get("work_dir") or str(default))

    def set_work_dir(self, path: str) -> None:
        self._set("work_dir", path)

    def history_path(self) -> Path:
        return Path(QgsApplication.qgisSettingsDirPath()) / "aifactory" / "history.json"

    def clusters(self) -> list[Cluster]:
        try:
            rows = json.loads(self._get("ray_clusters", "[]"))
            return [Cluster(**row) for row in rows]
        except (ValueError, TypeError):
            return []

    def set_clusters(self, clusters: list[Cluster]) -> None:
        self._set("ray_clusters", json.dumps([asdict(c) for c in clusters]))

    def cluster(self, name: str) -> Cluster | None:
        return next((c for c in self.clusters() if c.name == name), None)


def store_token(name: str, token: str, authcfg: str = "") -> str:
    """Save ``token`` encrypted in the QGIS auth database; returns the auth config id."""
    manager = QgsApplication.authManager()
    config = QgsAuthMethodConfig("Basic")
    if authcfg and authcfg in manager.configIds():
        manager.loadAuthenticationConfig(authcfg, config, True)
    config.setName(f"AI Factory Ray cluster {name}")
    config.setMethod("Basic")
    config.setConfig("username", "ray")
    config.setConfig("password", token)
    if config.id():
        manager.updateAuthenticationConfig(config)
    else:
        manager.storeAuthenticationConfig(config)
    return config.id()


def load_token(authcfg: str) -> str:
    """The decrypted token of an auth config id, ``""`` if none."""
    if not authcfg:
        return ""
    config = QgsAuthMethodConfig()
    QgsApplication.authManager().loadAuthenticationConfig(authcfg, config, True)
    return config.config("password", "")


def check_python(python: str) -> str:
    """A one-line message when the worker interpreter is not set or not there, else ``""``."""
    if not python:
        return tr("No worker Python is set: choose the interpreter of an environment with aifactory installed "
                  "in AI Factory ▸ Settings.")
    if not Path(python).is_file():
        return tr("The worker Python {0} does not exist: fix it in AI Factory ▸ Settings.").format(python)
    return ""


def cannot_run(python: str, reason: str) -> str:
    """The one-line message for an interpreter that is there but does not run ``aifactory``."""
    return tr("The worker Python {0} cannot run aifactory ({1}): install aifactory in it or choose another "
              "interpreter in AI Factory ▸ Settings.").format(python, reason)
