"""Settings dialog: worker interpreter (with a live check), MLflow URI, work folder, Ray clusters + tokens."""

from __future__ import annotations

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from . import worker
from .jobs.runners import WorkerCall
from .settings import Cluster, Settings, store_token
from .ui import tr

TOKEN_UNCHANGED = "••••••"


class SettingsDialog(QDialog):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("AI Factory settings"))
        self.settings = Settings()
        self.call: WorkerCall | None = None
        form = QFormLayout()
        self.python = QgsFileWidget(self)
        self.python.setFilePath(self.settings.worker_python())
        self.check_label = QLabel("", self)
        self.check_label.setWordWrap(True)
        check = QPushButton(tr("Check"), self)
        check.clicked.connect(self.check)
        row = QHBoxLayout()
        row.addWidget(self.python, 1)
        row.addWidget(check)
        self.mlflow = QLineEdit(self.settings.mlflow_uri(), self)
        self.mlflow.setPlaceholderText("http://mlflow:5000 or sqlite:///…/mlflow.db")
        self.work_dir = QgsFileWidget(self)
        self.work_dir.setStorageMode(QgsFileWidget.GetDirectory)
        self.work_dir.setFilePath(str(self.settings.work_dir()))
        form.addRow(tr("Worker Python"), row)
        form.addRow("", self.check_label)
        form.addRow(tr("MLflow tracking URI"), self.mlflow)
        form.addRow(tr("Job folder"), self.work_dir)
        self.clusters = QTableWidget(0, 3, self)
        self.clusters.setHorizontalHeaderLabels([tr("name"), tr("Jobs API URL (dashboard)"), tr("token")])
        self.clusters.horizontalHeader().setStretchLastSection(True)
        self._authcfg: dict[int, str] = {}
        for cluster in self.settings.clusters():
            self.add_cluster(cluster)
        add, remove = QPushButton(tr("Add cluster"), self), QPushButton(tr("Remove cluster"), self)
        add.clicked.connect(lambda: self.add_cluster(Cluster(tr("cluster"), "http://127.0.0.1:8265")))
        remove.clicked.connect(lambda: self.clusters.removeRow(self.clusters.currentRow()))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel(tr("Ray clusters (tokens are kept in the QGIS authentication database)"), self))
        layout.addWidget(self.clusters)
        row = QHBoxLayout()
        row.addWidget(add)
        row.addWidget(remove)
        layout.addLayout(row)
        layout.addWidget(buttons)

    def add_cluster(self, cluster: Cluster) -> None:
        row = self.clusters.rowCount()
        self.clusters.insertRow(row)
        self.clusters.setItem(row, 0, QTableWidgetItem(cluster.name))
        self.clusters.setItem(row, 1, QTableWidgetItem(cluster.url))
        self.clusters.setItem(row, 2, QTableWidgetItem(TOKEN_UNCHANGED if cluster.authcfg else ""))
        self.clusters.item(row, 0).setData(256, cluster.authcfg)

    def check(self) -> None:
        """Ask the chosen interpreter for ``aifactory --version`` without blocking the dialog."""
        self.check_label.setText(tr("checking…"))
        self.call = WorkerCall(self.python.filePath(), worker.version(), timeout_ms=60_000, parent=self)
        self.call.answered.connect(lambda ok, out, err: self.check_label.setText(
            out.strip() if ok and "aifactory" in out else tr("✗ {0}").format(err or tr("not an aifactory worker"))))
        self.call.start()

    def accept(self) -> None:
        self.settings.set_worker_python(self.python.filePath())
        self.settings.set_mlflow_uri(self.mlflow.text().strip())
        self.settings.set_work_dir(self.work_dir.filePath())
        clusters = []
        for row in range(self.clusters.rowCount()):
            name, url = (self.clusters.item(row, c).text().strip() for c in (0, 1))
            token = self.clusters.item(row, 2).text()
            authcfg = self.clusters.item(row, 0).data(256) or ""
            if token and token != TOKEN_UNCHANGED:
                authcfg = store_token(name, token, authcfg)
            elif not token:
                authcfg = ""
            if name and url:
                clusters.append(Cluster(name, url, authcfg))
        self.settings.set_clusters(clusters)
        super().accept()

