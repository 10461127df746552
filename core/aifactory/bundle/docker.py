"""The deployment image of a bundle: Dockerfile, entrypoint and requirements, written into the zip's root.

The unzipped bundle is the build context (``unzip model.zip -d ctx && docker build -t NAME ctx``), and the
image predicts a raster into a GeoPackage with ONNX Runtime (``docker run -v $PWD:/data NAME
/data/scene.tif /data/out``). The entrypoint runs exactly ``aifactory predict --model BUNDLE`` — the same
torch-free code path the tests run — so the image has no second predictor to drift from the first.

How the aifactory code gets into the image: **vendored**. The bundle carries the ``aifactory`` package
source it was made with (``vendor/aifactory``, ≈ 0.2 MB zipped) on ``PYTHONPATH``; the requirements list
the torch-free libraries of the prediction path, pinned to the versions the bundle was verified with.
Why not ``pip install aifactory --no-deps``: aifactory is not published on an index, and building it in
the image would need the repository there; vendoring also pins the predictor to the exact code that
verified the export. The package's torch modules travel along but are never imported on this path
(a test runs the entrypoint with torch made unimportable).
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import aifactory
from aifactory.bundle.format import BundleMeta
from aifactory.bundle.runtime import PREDICTED_TASKS

#: distributions the torch-free prediction path imports (the image installs these and their requirements);
#: pytz and six too: pandas uses pytz when it is installed, python-dateutil imports six (a test checks the list)
RUNTIME_DISTRIBUTIONS = (
    "numpy", "onnxruntime", "rasterio", "affine", "pyproj", "shapely", "pyogrio", "geopandas", "pandas", "scipy",
    "scikit-image", "matplotlib", "pydantic", "pyyaml", "click", "tqdm", "pytz", "six",
)
VENDOR = "vendor"
BUNDLE_DIR = "/opt/aifactory/bundle"

ENTRYPOINT = """\
#!/bin/sh
# Predict a raster with the bundle in this image (ONNX Runtime, no torch):
#   entrypoint.sh RASTER OUT_DIR [aifactory predict options...]
# writes OUT_DIR/detections.gpkg (layer detections; raw_detections as well when the bundle carries
# post-processing or an operating point), OUT_DIR/scores.tif, OUT_DIR/prediction.json, OUT_DIR/preview.png.
# A bad input prints one line on stderr and exits 2.
set -eu
if [ "$#" -lt 2 ]; then
    echo "usage: entrypoint.sh RASTER OUT_DIR [aifactory predict options...]" >&2
    exit 2
fi
raster="$1"
out="$2"
shift 2
exec "${PYTHON:-python}" -c 'import sys; from aifactory.cli import main; sys.exit(main(sys.argv[1:]))' \\
    predict --model "${AIFACTORY_BUNDLE:-%(bundle)s}" --raster "$raster" -o "$out" "$@"
"""


def requirements() -> str:
    """``requirements.txt`` of the image: the runtime distributions at the versions installed here."""
    lines = ["# Torch-free runtime of an aifactory bundle, pinned to the versions it was verified with."]
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            lines.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            lines.append(name)
    return "\n".join(lines) + "\n"


def dockerfile(meta: BundleMeta) -> str:
    """The Dockerfile of a bundle (its comments say what the model is and how to run it)."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    classes = ", ".join(meta.classes[1:]) if len(meta.classes) > 1 else meta.classes[0]
    return unsupported_note(meta) + f"""\
# AI Factory model bundle {meta.run!r}: {meta.model.architecture} ({meta.model.task}), classes: {classes};
# tile {meta.tile_size} px, bands {meta.bands}, GSD {meta.gsd if meta.gsd is not None else 'any'}.
# Build from the unzipped bundle:   unzip model.zip -d ctx && docker build -t NAME ctx
# Predict:   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/data" NAME /data/scene.tif /data/out
FROM python:{python}-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/opt/aifactory/{VENDOR} \\
    AIFACTORY_BUNDLE={BUNDLE_DIR} MPLBACKEND=Agg MPLCONFIGDIR=/tmp/matplotlib
COPY requirements.txt /opt/aifactory/requirements.txt
RUN pip install --no-cache-dir -r /opt/aifactory/requirements.txt
COPY {VENDOR}/ /opt/aifactory/{VENDOR}/
COPY bundle.json {meta.model.file} {BUNDLE_DIR}/
COPY entrypoint.sh /opt/aifactory/entrypoint.sh
RUN chmod 755 /opt/aifactory/entrypoint.sh
WORKDIR /data
ENTRYPOINT ["/opt/aifactory/entrypoint.sh"]
"""


def unsupported_note(meta: BundleMeta) -> str:
    """A warning atop the Dockerfile of a bundle whose task the entrypoint cannot predict: without it, the image
    builds and only fails when it is run, with a message that does not say the bundle was the wrong kind."""
    if meta.model.task in PREDICTED_TASKS:
        return ""
    return (f"# WARNING: this image cannot predict yet: its entrypoint (aifactory predict) runs "
            f"{', '.join(PREDICTED_TASKS)} bundles only,\n# and this model is a {meta.model.task} model; use "
            f"{meta.model.file} with a runtime of your own.\n")


def docker_texts(meta: BundleMeta) -> dict[str, str]:
    """The image's text files by name in the zip."""
    return {"Dockerfile": dockerfile(meta), "entrypoint.sh": ENTRYPOINT % {"bundle": BUNDLE_DIR},
            "requirements.txt": requirements()}


def vendor_files() -> list[tuple[Path, str]]:
    """(source file, name in the zip) of every module of the running aifactory package."""
    package = Path(aifactory.__file__).resolve().parent
    return [(path, f"{VENDOR}/aifactory/{path.relative_to(package).as_posix()}")
            for path in sorted(package.rglob("*.py")) if "__pycache__" not in path.parts]
