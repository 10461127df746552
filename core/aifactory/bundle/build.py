"""``build_bundle``: a trained run directory → ``model.zip`` (layout in :mod:`aifactory.bundle.format`).

Everything that can be refused is checked before the (slow) export: the model family, the operating
point, the post-processing chain (validated op by op; ops that read side files, such as a geofence
filter, are refused since a bundle carries none), the report folder, and a source of real tiles for the
verification (``sample`` raster, else the run's dataset). The zip is written to a temporary file and
renamed when complete; ``docker`` extracts it into a ready build context.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import aifactory
from aifactory.bundle.docker import docker_texts, vendor_files
from aifactory.bundle.export import (
    DEFAULT_OPSET,
    check_exportable,
    dataset_tiles,
    export_onnx,
    sample_tiles,
    verify,
)
from aifactory.bundle.format import LABEL_KEYS, META_NAME, ONNX_NAME, BundleMeta, OnnxInfo, extract_bundle
from aifactory.bundle.runtime import PREDICTED_TASKS
from aifactory.catalog.hierarchy import tree
from aifactory.errors import ConfigError, InputError
from aifactory.io.atomic import atomic_path
from aifactory.io.hashing import sha256_file
from aifactory.io.output_paths import LISTING_NAME, absolute, check_file_output, check_folder_output
from aifactory.models.card import ModelCard, read_card
from aifactory.progress import reporter

RUN_FILES = ("model.json", "config.yaml", "manifest.json")
EXECUTABLE = 0o755
READABLE = 0o644


def bundle_chain(postprocess: Path | None, point: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The chain a bundle applies: the chain file's ops, then the operating point's; all validated."""
    from aifactory.evaluation.rps import operating_chain
    from aifactory.postprocess import load_chain, resolve_chain

    ops: list[dict[str, Any]] = []
    if postprocess is not None:
        ops = load_chain(postprocess)
        for index, step in enumerate(resolve_chain(ops, str(postprocess))):
            for field in type(step.params).model_fields:
                if isinstance(getattr(step.params, field), Path):
                    raise ConfigError(f"{postprocess}: ops.{index}.{field}: op {step.entry.name!r} reads a file, "
                                      "and a bundle carries none; apply it after prediction")
    if point is not None:
        ops += operating_chain(point)
        resolve_chain(ops, "operating point")
    return ops or None


def real_tiles(run_dir: Path, card: ModelCard, sample: Path | None) -> tuple[Any, str]:
    """Raw tiles to verify the export on: the sample raster's, else the run's dataset's."""
    if sample is not None:
        return sample_tiles(sample, card), f"raster {sample}"
    found = dataset_tiles(run_dir, card)
    if found is None:
        raise InputError(f"{run_dir}: the run's dataset is not here (or has no mostly valid chip) to verify the "
                         "ONNX export on real tiles; give --sample RASTER")
    return found


def build_bundle(run_dir: str | Path, out: str | Path, *, operating_point: str | Path | None = None,
                 postprocess: str | Path | None = None, report: str | Path | None = None,
                 docker: str | Path | None = None, sample: str | Path | None = None,
                 opset: int = DEFAULT_OPSET, overlap: int | None = None) -> BundleMeta:
    """Export, verify and package the model of ``run_dir`` into the zip ``out``; returns its ``bundle.json``.

    ``operating_point``: an RPS ``operating_point.json``; ``postprocess``: a chain YAML; both are applied
    by predictions with the bundle. ``report``: an evaluation report folder to include. ``docker``: also
    extract the bundle there as a Docker build context. ``sample``: a raster to verify the export on
    (default: the run's dataset chips). ``overlap``: tile overlap for predictions (default: 1/8 tile).
    """
    from aifactory.evaluation.rps import read_operating_point
    from aifactory.models.card import load_run_model
    from aifactory.prediction.rows import default_overlap

    run_dir, out = Path(run_dir), Path(out)
    rep = reporter()
    if out.suffix.lower() != ".zip":
        raise ConfigError(f"-o {out}: a bundle is a .zip file")
    check_file_output(absolute(out))  # a folder of that name: refused now, not after the (slow) export
    if docker is not None:  # refused after the export, the bundle itself was left: both are checked first
        check_folder_output(absolute(docker))
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: run directory not found")
    card = read_card(run_dir)
    check_exportable(card, str(run_dir))
    point = read_operating_point(operating_point) if operating_point is not None else None
    chain = bundle_chain(Path(postprocess) if postprocess is not None else None, point)
    report_dir = Path(report) if report is not None else None
    if report_dir is not None and not report_dir.is_dir():
        raise InputError(f"{report_dir}: report folder not found")
    if overlap is not None and not 0 <= overlap < card.tile_size:
        raise ConfigError(f"--overlap {overlap}: expected 0 <= overlap < tile size {card.tile_size}")
    tiles, tiles_source = real_tiles(run_dir, card, Path(sample) if sample is not None else None)
    rep.progress("bundle", 0.05, "loading the model")
    model, _ = load_run_model(run_dir)
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=out.parent if out.parent.is_dir() else None) as tmp:
        onnx_path = Path(tmp) / ONNX_NAME
        rep.progress("bundle", 0.1, "exporting to ONNX")
        outputs = export_onnx(model, card, onnx_path, opset)
        rep.progress("bundle", 0.6, "verifying against torch")
        verification = verify(model, onnx_path, outputs, card, tiles, tiles_source)
        extra = dict(card.extra)
        meta = BundleMeta(
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), aifactory=aifactory.__version__, run=run_dir.resolve().name,
            model=OnnxInfo(sha256=sha256_file(onnx_path), opset=opset, outputs=outputs,
                           architecture=card.architecture, params=card.params, task=card.task),
            classes=card.classes, hierarchy=tree(card.classes[1:] if len(card.classes) > 1 else card.classes),
            bands=card.bands, band_names=extra.pop("band_names", []), normalization=card.normalization,
            tile_size=card.tile_size, overlap=default_overlap(card.tile_size) if overlap is None else overlap,
            gsd=card.gsd, label_mode=extra.get("label_mode", "fill"), core_factor=extra.get("core_factor"),
            operating_point=point, postprocess=chain, verification=verification,
            training={k: v for k, v in extra.items() if k not in LABEL_KEYS})
        rep.progress("bundle", 0.8, "writing the zip")
        write_zip(out, meta, onnx_path, run_dir, report_dir)
    if card.task not in PREDICTED_TASKS:
        rep.warning(f"{out}: `aifactory predict --model` and the Docker image run {', '.join(PREDICTED_TASKS)} "
                    f"bundles only: this {card.task} bundle's ONNX network is for a runtime of your own")
    if docker is not None:
        extract_bundle(out, docker)
        rep.artifact("docker_context", docker)
    rep.progress("bundle", 1.0, f"{out.name}")
    rep.artifact("bundle", out)
    return meta


def write_zip(out: Path, meta: BundleMeta, onnx_path: Path, run_dir: Path, report_dir: Path | None) -> None:
    """Write the members (``bundle.json`` last, with the digests of the others), atomically."""
    files: list[tuple[Path, str]] = [(onnx_path, ONNX_NAME)]
    files += [(run_dir / name, name) for name in RUN_FILES if (run_dir / name).is_file()]
    if report_dir is not None:
        files += [(path, f"report/{path.relative_to(report_dir).as_posix()}")
                  for path in sorted(report_dir.rglob("*")) if path.is_file() and path.name != LISTING_NAME]
    texts = {}
    if meta.operating_point is not None:
        texts["operating_point.json"] = json.dumps(meta.operating_point, indent=2)
    meta.files = {name: sha256_file(path) for path, name in files}
    meta.files.update({name: hashlib.sha256(text.encode()).hexdigest() for name, text in texts.items()})
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, name in files:
            archive.write(path, name, compress_type=zipfile.ZIP_STORED if name == ONNX_NAME else None)
        for name, text in {**texts, **docker_texts(meta)}.items():
            write_text_member(archive, name, text)
        for path, name in vendor_files():
            archive.write(path, name)
        write_text_member(archive, META_NAME, meta.model_dump_json(indent=2))


def write_text_member(archive: zipfile.ZipFile, name: str, text: str) -> None:
    """A text member readable by all (executable for shell scripts): extracted files keep these modes."""
    info = zipfile.ZipInfo(name, time.localtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (EXECUTABLE if name.endswith(".sh") else READABLE) << 16
    archive.writestr(info, text)
