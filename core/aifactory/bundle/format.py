"""The bundle format (DESIGN.md, "Bundle"): a zip that a deployment needs nothing else to predict with.

::

    model.zip
      bundle.json          BundleMeta: everything prediction needs besides the weights (below)
      model.onnx           the network, dynamic batch axis, input "input" (N, bands, T, T) normalised
                           float32; outputs named in bundle.json (``logits`` for segmentation)
      model.json           the run's model card, as trained
      config.yaml          the run's resolved training config
      manifest.json        the run's manifest (code commit, data hashes, versions), when it has one
      operating_point.json the RPS operating point, when given
      report/...           the evaluation report, when given
      Dockerfile, entrypoint.sh, requirements.txt, vendor/aifactory/...   the deployment image (see
                           :mod:`aifactory.bundle.docker`); the zip's root is its build context

A bundle is read straight from the zip (no extraction) or from an extracted folder; every member
name is checked first, and :func:`extract_bundle` refuses names that would land outside the target
folder (absolute paths, ``..``, links: "zip slip"). Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import Field

from aifactory.config import StrictModel, validate
from aifactory.datasets.format import Normalization
from aifactory.errors import InputError
from aifactory.io.atomic import atomic_path
from aifactory.models.card import ModelCard

BUNDLE_VERSION = 1
META_NAME = "bundle.json"
ONNX_NAME = "model.onnx"
LABEL_KEYS = ("label_mode", "core_factor")


class OutputCheck(StrictModel):
    """ONNX Runtime against torch on the same input, for one model output."""

    output: str
    max_abs: float = Field(description="max |onnx - torch|")
    max_rel: float = Field(description="max |onnx - torch| / max |torch|")


class InputCheck(StrictModel):
    """One verification input and its errors."""

    source: str = Field(description="'random' or where the real tiles came from")
    tiles: int
    outputs: list[OutputCheck]
    prob_max_abs: float | None = Field(None, description="max error of the class probabilities (the scores)")


class Verification(StrictModel):
    """How the export was checked: every output within ``tolerance_rel`` on random and on real tiles."""

    tolerance_rel: float
    random: InputCheck
    real: InputCheck
    torch: str
    onnxruntime: str


class OnnxInfo(StrictModel):
    """The network file and how to call it."""

    file: str = ONNX_NAME
    sha256: str
    opset: int
    input: str = "input"
    outputs: list[str]
    architecture: str
    params: dict[str, Any] = Field(default_factory=dict)
    task: str


class BundleMeta(StrictModel):
    """Contents of ``bundle.json``."""

    version: int = BUNDLE_VERSION
    format: Literal["aifactory-bundle"] = "aifactory-bundle"
    created: str
    aifactory: str
    run: str = Field(description="name of the training run (the detections' model_run)")
    model: OnnxInfo
    classes: list[str] = Field(description="class names; index 0 is the background")
    hierarchy: dict[str, list[str]] = Field(description="parent class path -> children ('' holds the roots)")
    bands: list[int] = Field(description="1-based raster bands fed to the model, in order")
    band_names: list[str] = Field(default_factory=list)
    normalization: Normalization
    tile_size: int = Field(gt=0)
    overlap: int = Field(ge=0)
    gsd: float | None = None
    label_mode: str = "fill"
    core_factor: float | None = None
    operating_point: dict[str, Any] | None = Field(None, description="the RPS operating point (operating_point.json)")
    postprocess: list[dict[str, Any]] | None = Field(
        None, description="ops a prediction applies to the raw detections: the given chain, then the operating "
                          "point's (its post-processing, NMS, minimum area, score)")
    verification: Verification
    training: dict[str, Any] = Field(default_factory=dict, description="the card's other facts (best metric…)")
    files: dict[str, str] = Field(default_factory=dict, description="member -> sha256 (Docker files excluded)")

    def card(self) -> ModelCard:
        """The model card the predictor works from."""
        extra = {**self.training, "label_mode": self.label_mode}
        if self.core_factor is not None:
            extra["core_factor"] = self.core_factor
        return ModelCard(architecture=self.model.architecture, params=self.model.params,
                         task=self.model.task, in_channels=len(self.bands),  # type: ignore[arg-type]
                         num_classes=len(self.classes), classes=self.classes, bands=self.bands,
                         normalization=self.normalization, tile_size=self.tile_size, gsd=self.gsd, extra=extra)


def is_bundle(path: str | Path) -> bool:
    """A ``.zip`` file, or a folder holding ``bundle.json`` (run directories hold ``model.json``)."""
    path = Path(path)
    return path.suffix.lower() == ".zip" or (path.is_dir() and (path / META_NAME).is_file())


def unsafe_member(info: zipfile.ZipInfo) -> str | None:
    """Why a member must not be extracted (absolute, escaping with ``..``, a link), or None."""
    name = info.filename
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\\" in name:
        return "an absolute or non-POSIX path"
    if ".." in PurePosixPath(name).parts:
        return "a path escaping the bundle ('..')"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    return None


def open_zip(path: Path) -> zipfile.ZipFile:
    """A bundle zip with every member name checked; corrupt or unsafe zips are one error line."""
    if not path.is_file():
        raise InputError(f"{path}: bundle not found")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: not a bundle (corrupt zip: {exc})") from None
    for info in archive.infolist():
        reason = unsafe_member(info)
        if reason:
            archive.close()
            raise InputError(f"{path}: refused: member {info.filename!r} is {reason}")
    return archive


def parse_meta(text: bytes | str, where: str) -> BundleMeta:
    """``bundle.json`` validated; a newer format version than this code reads is refused."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object")
    version = data.get("version")
    if not isinstance(version, int) or version > BUNDLE_VERSION:
        raise InputError(f"{where}: bundle format version {version} is newer than this aifactory reads "
                         f"({BUNDLE_VERSION}); upgrade aifactory")
    return validate(BundleMeta, data, where)


def read_member(path: Path, name: str) -> bytes:
    """One file of a bundle (zip or folder); a missing or damaged member is one error line."""
    if path.is_dir():
        member = path / name
        if not member.is_file():
            raise InputError(f"{path}: not a bundle (no {name})")
        return member.read_bytes()
    with open_zip(path) as archive:
        try:
            return archive.read(name)
        except KeyError:
            raise InputError(f"{path}: not a bundle (no {name})") from None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise InputError(f"{path}: corrupt bundle member {name}: {exc}") from None


def read_meta(path: str | Path) -> BundleMeta:
    """The ``bundle.json`` of a bundle zip or folder."""
    path = Path(path)
    return parse_meta(read_member(path, META_NAME), f"{path}:{META_NAME}")


def read_onnx(path: str | Path, meta: BundleMeta) -> bytes:
    """The network bytes, checked against the sha256 in ``bundle.json``."""
    import hashlib

    path = Path(path)
    data = read_member(path, meta.model.file)
    if hashlib.sha256(data).hexdigest() != meta.model.sha256:
        raise InputError(f"{path}: {meta.model.file} does not match its sha256 in {META_NAME} (damaged bundle)")
    return data


def extract_bundle(path: str | Path, dest: str | Path) -> Path:
    """Extract a bundle zip into the folder ``dest`` (atomically: all of it or nothing)."""
    path, dest = Path(path), Path(dest)
    with open_zip(path) as archive, atomic_path(dest, folder=True) as tmp:
        tmp.mkdir()
        root = tmp.resolve()
        for info in archive.infolist():
            target = (tmp / info.filename).resolve()
            if root not in target.parents and target != root:  # belt and braces after unsafe_member
                raise InputError(f"{path}: refused: member {info.filename!r} lands outside {dest}")
            try:
                archive.extract(info, tmp)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise InputError(f"{path}: corrupt bundle member {info.filename}: {exc}") from None
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(target, mode)
    return dest
