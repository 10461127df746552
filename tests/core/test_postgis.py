"""The scale-out path end to end: a real PostGIS server started and stopped here, a catalog in it, a dataset
cut from a selection of it; the same dataset as from the GeoPackage catalog."""

from __future__ import annotations

import socket

import pytest
import yaml
from aifactory.catalog.build import build_catalog
from aifactory.catalog.pgtemp import TempPostGIS, find_bindir, free_port
from aifactory.datasets.config import DatasetConfig
from aifactory.datasets.plan import plan_dataset

pytestmark = pytest.mark.skipif(find_bindir() is None, reason="PostgreSQL/PostGIS binaries not installed "
                                "(Debian packages postgresql, postgresql-postgis)")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_postgis_catalog_feeds_the_same_dataset_as_the_geopackage(small_scene, tmp_path, cli):
    raster, truth = small_scene
    config = tmp_path / "catalog.yaml"
    config.write_text(yaml.safe_dump({"images": [{"path": str(raster), "sensor": "s1"}],
                                      "labels": [{"path": str(truth), "layer": "truth"}]}))
    build_catalog(config, tmp_path / "catalog.gpkg")
    dataset = {"catalog": {"select": {"classes": ["vegetation", "vehicle"], "sensors": ["s1"]}},
               "chips": {"size": 128}, "classes": {"level": 1}}
    with TempPostGIS() as server:
        assert _listening(server.port) and server.datadir.is_dir()
        result = cli("catalog", "build", str(config), "-o", server.url, "--events", "none")
        assert result.returncode == 0, result.stderr
        plans = [plan_dataset(DatasetConfig.model_validate({**dataset, "catalog": {**dataset["catalog"],
                                                                                    "path": target}}))
                 for target in (server.url, str(tmp_path / "catalog.gpkg"))]
    assert not _listening(server.port) and not server.folder.exists()  # stopped and cleaned up
    on_postgis, on_geopackage = plans
    assert on_postgis.classes == on_geopackage.classes == ["background", "vegetation", "vehicle"]
    assert on_postgis.objects == on_geopackage.objects
    assert on_postgis.chips["chip_id"].tolist() == on_geopackage.chips["chip_id"].tolist()


def test_unreachable_postgis_is_one_line(cli):
    port = free_port()  # nothing listens there
    result = cli("catalog", "query", f"postgresql://nobody@127.0.0.1:{port}/none")
    assert result.returncode == 2
    assert result.stderr.startswith("aifactory: error: postgresql") and "Traceback" not in result.stderr
