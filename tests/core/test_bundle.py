"""Bundles: the zip and bundle.json, torch-free prediction matching torch, the Docker entrypoint, refusals."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from aifactory.bundle.docker import RUNTIME_DISTRIBUTIONS
from aifactory.bundle.format import BUNDLE_VERSION, extract_bundle, read_meta
from aifactory.cli import main
from aifactory.errors import InputError
from aifactory.postprocess import apply_chain
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from test_bundle_support import (  # noqa: F401  (session fixtures)
    CHAIN,
    OPERATING_POINT,
    bundle_dir,
    predict_scene,
    run_cli,
    torch_loaded,
    torch_prediction,
    trained_run,
)

# an import hook standing in for the deployment image, which has no torch; it also records the imports
NO_TORCH = """\
import atexit, json, os, sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch' (not in the image)")
        return None

sys.meta_path.insert(0, NoTorch())
atexit.register(lambda: open(os.environ["IMPORTS_OUT"], "w").write(json.dumps(
    {"modules": sorted(sys.modules), "aifactory": getattr(sys.modules.get("aifactory"), "__file__", None)})))
"""


def test_bundle_json_records_the_model_and_its_verification(bundle_dir, trained_run):  # noqa: F811
    zip_path = bundle_dir / "model.zip"
    meta = read_meta(zip_path)
    card = json.loads((trained_run / "model.json").read_text())
    assert meta.version == BUNDLE_VERSION and meta.run == trained_run.name
    assert meta.classes == card["classes"] == ["background", "building", "vegetation/tree"]
    assert meta.hierarchy == {"": ["building", "vegetation"], "vegetation": ["vegetation/tree"]}
    assert meta.bands == card["bands"] and meta.normalization.model_dump() == card["normalization"]
    assert (meta.tile_size, meta.overlap, meta.gsd, meta.label_mode) == (128, 16, 0.5, "fill")
    assert meta.model.outputs == ["logits"] and meta.model.opset == 18 and meta.model.architecture == "unet"
    assert meta.operating_point == OPERATING_POINT
    # the chain, then the operating point's NMS, minimum area and score
    assert [op["name"] for op in meta.postprocess] == ["make_valid", "simplify", "nms", "area_filter", "score_filter"]
    check = meta.verification
    assert check.real.source.startswith("raster ") and check.real.tiles == 2 and check.random.tiles == 3
    for result in (check.random, check.real):
        assert 0 < result.outputs[0].max_rel <= check.tolerance_rel == 1e-4
        assert result.prob_max_abs < 1e-4
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        assert {"bundle.json", "model.onnx", "model.json", "operating_point.json", "report/report.html",
                "report/figures/pr.png", "Dockerfile", "entrypoint.sh", "requirements.txt",
                "vendor/aifactory/cli.py", "vendor/aifactory/bundle/runtime.py"} <= names
        for name, digest in meta.files.items():
            assert hashlib.sha256(archive.read(name)).hexdigest() == digest, name
        assert hashlib.sha256(archive.read("model.onnx")).hexdigest() == meta.model.sha256
    # the Docker context is the extracted zip
    context = bundle_dir / "context"
    assert (context / "model.onnx").read_bytes() == zipfile.ZipFile(zip_path).read("model.onnx")
    assert os.access(context / "entrypoint.sh", os.X_OK)


def test_dockerfile_builds_a_torch_free_image_of_this_bundle(bundle_dir):  # noqa: F811
    """The image build itself is not run (no Docker engine here): the Dockerfile text is checked."""
    text = (bundle_dir / "context" / "Dockerfile").read_text()
    instructions = [line.split()[0] for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert instructions[0] == "FROM" and re.search(r"^FROM python:3\.\d+-slim", text, re.M)
    assert re.search(r"^COPY bundle\.json model\.onnx /opt/aifactory/bundle/$", text, re.M)
    assert re.search(r"^COPY vendor/ ", text, re.M) and re.search(r"pip install .*-r .*requirements\.txt", text)
    assert re.search(r'^ENTRYPOINT \["/opt/aifactory/entrypoint\.sh"\]$', text, re.M)
    assert "AIFACTORY_BUNDLE=/opt/aifactory/bundle" in text and "PYTHONPATH=/opt/aifactory/vendor" in text
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):  # everything it copies is in the context
        for name in source.split():
            assert (bundle_dir / "context" / name).exists(), name
    requirements = (bundle_dir / "context" / "requirements.txt").read_text()
    pinned = [Requirement(line).name for line in requirements.splitlines() if line and not line.startswith("#")]
    assert "onnxruntime" in pinned and "rasterio" in pinned and not any("torch" in name for name in pinned)


def matched(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> tuple[int, float]:
    """How many of ``a`` have a same-class partner in ``b`` with IoU > 0.9, and their largest score gap."""
    pairs = gpd.sjoin(a, b, predicate="intersects")
    pairs = pairs[pairs["class_left"] == pairs["class_right"]]
    left, right = a.geometry.loc[pairs.index].array, b.geometry.iloc[pairs["index_right"]].array
    iou = shapely.area(shapely.intersection(left, right)) / shapely.area(shapely.union(left, right))
    good = pairs[iou > 0.9]
    gap = float(np.abs(good["score_left"].to_numpy() - good["score_right"].to_numpy()).max())
    return good.index.nunique(), gap


def test_cli_predicts_with_the_bundle_without_torch_and_matches_torch(bundle_dir, predict_scene,  # noqa: F811
                                                                     torch_prediction, tmp_path):  # noqa: F811
    raster, _ = predict_scene
    out = tmp_path / "out"
    result = run_cli(["predict", "--model", str(bundle_dir / "model.zip"), "--raster", str(raster), "-o", str(out),
                      "--events", "none"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert not torch_loaded(result)
    summary = json.loads((out / "prediction.json").read_text())
    assert summary["device"] == "cpu" and summary["precision"] == "fp32"
    reference = gpd.read_file(torch_prediction, layer="detections")
    raw = gpd.read_file(out / "detections.gpkg", layer="raw_detections")
    assert len(reference) > 10 and abs(len(raw) - len(reference)) <= 1
    count, gap = matched(reference, raw)
    assert count >= len(reference) - 1 and gap <= 2 / 255  # scores are stored as uint8
    assert (raw["model_run"] == reference["model_run"].iloc[0]).all()
    # the layer people use went through the bundle's chain and operating point
    final = gpd.read_file(out / "detections.gpkg", layer="detections")
    expected = apply_chain(raw, read_meta(bundle_dir / "model.zip").postprocess)
    assert 0 < len(final) == len(expected) < len(raw) and (final["score"] >= OPERATING_POINT["score"]).all()


def required_distributions(names: tuple[str, ...]) -> set[str]:
    """``names`` and everything they require (extras excluded), canonical names."""
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def test_docker_entrypoint_predicts_into_a_geopackage_without_torch(bundle_dir, predict_scene, tmp_path):  # noqa: F811
    """The command the image runs, from the extracted context, with torch made unimportable."""
    raster, _ = predict_scene
    context = bundle_dir / "context"
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NO_TORCH)
    imports = tmp_path / "imports.json"
    env = {**os.environ, "PYTHON": sys.executable, "AIFACTORY_BUNDLE": str(context),
           "PYTHONPATH": f"{hook}{os.pathsep}{context / 'vendor'}", "IMPORTS_OUT": str(imports)}
    result = subprocess.run(["sh", str(context / "entrypoint.sh"), str(raster), str(tmp_path / "out"),
                             "--events", "none"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    detections = gpd.read_file(tmp_path / "out" / "detections.gpkg", layer="detections")
    assert len(detections) > 0 and detections.crs == "EPSG:32631"
    imported = json.loads(imports.read_text())
    modules = imported["modules"]
    assert "torch" not in modules and "aifactory.bundle.runtime" in modules
    assert Path(imported["aifactory"]).is_relative_to(context / "vendor")  # the image's code: the vendored copy
    # every third-party distribution the run imported is installed by the image's requirements
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)  # what the interpreter loads anyway
    startup = set(json.loads(imports.read_text())["modules"])
    owners = packages_distributions()
    allowed = required_distributions(RUNTIME_DISTRIBUTIONS)
    used = {canonicalize_name(d) for m in set(modules) - startup if "." not in m and m in owners for d in owners[m]}
    assert used and used - {"aifactory"} <= allowed, sorted(used - allowed)
    usage = subprocess.run(["sh", str(context / "entrypoint.sh")], capture_output=True, text=True, env=env)
    assert usage.returncode == 2 and "usage" in usage.stderr


def crafted_zip(path: Path, name: str, symlink: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("bundle.json", "{}")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = 0o120777 << 16
        archive.writestr(info, "/etc/passwd" if symlink else "pwned")
    return path


@pytest.mark.parametrize(("member", "symlink", "reason"), [
    ("../escape.txt", False, "escaping"), ("/tmp/absolute.txt", False, "absolute"),
    ("a/../../escape.txt", False, "escaping"), ("link", True, "symbolic link")])
def test_extraction_refuses_zip_slip(tmp_path, member, symlink, reason):
    crafted = crafted_zip(tmp_path / "evil.zip", member, symlink)
    with pytest.raises(InputError, match=reason):
        extract_bundle(crafted, tmp_path / "deep" / "out")
    assert not (tmp_path / "deep" / "out").exists() and not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "deep" / "escape.txt").exists() and not Path("/tmp/absolute.txt").exists()


def rewritten(source: Path, target: Path, edit) -> Path:
    """A copy of the bundle with bundle.json passed through ``edit``."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "bundle.json":
                data = json.dumps(edit(json.loads(data))).encode()
            dst.writestr(info, data)
    return target


def test_bad_bundles_are_one_line_errors(bundle_dir, predict_scene, tmp_path, capsys):  # noqa: F811
    raster, _ = predict_scene
    source = bundle_dir / "model.zip"
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    damaged = tmp_path / "damaged.zip"
    rewritten(source, damaged, lambda meta: {**meta, "model": {**meta["model"], "sha256": "0" * 64}})
    cases = {
        truncated: "corrupt zip",
        rewritten(source, tmp_path / "newer.zip", lambda meta: {**meta, "version": BUNDLE_VERSION + 1}):
            f"format version {BUNDLE_VERSION + 1} is newer",
        crafted_zip(tmp_path / "evil.zip", "../escape.txt"): "refused",
        damaged: "does not match its sha256",
        tmp_path / "missing.zip": "bundle not found",
    }
    for bundle, message in cases.items():
        code = main(["predict", "--model", str(bundle), "--raster", str(raster), "-o", str(tmp_path / "o"),
                     "--events", "none"])
        stderr = capsys.readouterr().err
        assert code == 2, (bundle, stderr)
        assert stderr.count("\n") == 1 and stderr.startswith("aifactory: error:") and message in stderr, stderr
    # what a bundle does not do: TTA, bf16, ensembles (the torch runtime's)
    for extra, message in ((["--tta"], "without TTA"), (["--precision", "bf16"], "float32"),
                           (["--model", str(source)], "a bundle predicts alone")):
        code = main(["predict", "--model", str(source), "--raster", str(raster), "-o", str(tmp_path / "o"),
                     "--events", "none", *extra])
        stderr = capsys.readouterr().err
        assert code == 2 and stderr.count("\n") == 1 and message in stderr, stderr
    assert not (tmp_path / "o").exists()
