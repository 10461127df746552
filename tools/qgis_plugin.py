"""Build the QGIS plugin zip (``make package``) and open a real QGIS with the plugin on a sample project
(``make qgis``).

    python tools/qgis_plugin.py package            # dist/aifactory_qgis.zip
    python tools/qgis_plugin.py qgis               # build/qgis/: profile, plugin, sample project; runs qgis
    python tools/qgis_plugin.py project DIR        # only the sample project (used by the desktop test)
    python tools/qgis_plugin.py i18n               # refresh resources/i18n/*.ts from the tr() strings

The zip and the staged folder are the same thing: ``aifactory_qgis/`` with metadata.txt, LICENSE, icons,
styles and compiled translations copied in, so the plugin never reaches outside its folder when installed.
The sample project is a synthetic scene written by the worker (``aifactory synth``), its truth, and
*sample detections* derived from the truth (every object, with spread-out scores, plus shifted false
alarms) so that the RPS and review docks have something to work on without a trained model.
"""

from __future__ import annotations

import argparse
import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "aifactory_qgis"
BUILD = REPO / "build"
DIST = REPO / "dist"
WORKER_PYTHON = REPO / ".venv" / "bin" / "python"


def tr_strings() -> list[str]:
    """Every literal passed to ``tr(...)`` in the plugin, in first-seen order (the translation catalogue)."""
    import ast

    seen: dict[str, None] = {}
    for path in sorted((REPO / PLUGIN).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "tr"
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                seen.setdefault(node.args[0].value, None)
    return list(seen)


def update_translations() -> list[Path]:
    """Refresh each ``resources/i18n/aifactory_LANG.ts`` with the current strings, keeping translations."""
    import xml.etree.ElementTree as ET

    strings = tr_strings()
    written = []
    for path in sorted((REPO / "resources" / "i18n").glob("aifactory_*.ts")):
        old = {m.findtext("source"): m.findtext("translation") or ""
               for m in ET.parse(path).getroot().iter("message")}
        root = ET.Element("TS", version="2.1", language=path.stem.split("_", 1)[1])
        context = ET.SubElement(root, "context")
        ET.SubElement(context, "name").text = "AIFactory"
        for text in strings:
            message = ET.SubElement(context, "message")
            ET.SubElement(message, "source").text = text
            translation = ET.SubElement(message, "translation")
            if old.get(text):
                translation.text = old[text]
            else:
                translation.set("type", "unfinished")
        ET.indent(root)
        path.write_text('<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE TS>\n'
                        + ET.tostring(root, encoding="unicode") + "\n", encoding="utf-8")
        written.append(path)
    return written


def compile_translations(target: Path) -> list[Path]:
    """``resources/i18n/*.ts`` → ``target/*.qm`` with Qt's lrelease (skipped, with a note, if it is missing)."""
    sources = sorted((REPO / "resources" / "i18n").glob("*.ts"))
    lrelease = shutil.which("lrelease")
    if not sources:
        return []
    if lrelease is None:
        print("note: lrelease not found, translations not compiled", file=sys.stderr)
        return []
    target.mkdir(parents=True, exist_ok=True)
    out = []
    for source in sources:
        qm = target / source.with_suffix(".qm").name
        subprocess.run([lrelease, "-silent", str(source), "-qm", str(qm)], check=True)
        out.append(qm)
    return out


def stage(parent: Path) -> Path:
    """Copy the plugin with its resources into ``parent/aifactory_qgis`` (replacing an older copy)."""
    folder = parent / PLUGIN
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(REPO / PLUGIN, folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "metadata.txt", folder / "metadata.txt")
    shutil.copy2(REPO / "LICENSE", folder / "LICENSE")
    for kind in ("icons", "styles"):
        if (REPO / "resources" / kind).is_dir():
            shutil.copytree(REPO / "resources" / kind, folder / kind)
    compile_translations(folder / "i18n")
    return folder


def package() -> Path:
    """``dist/aifactory_qgis.zip``, written under a temporary name and renamed when complete."""
    folder = stage(BUILD / "package")
    DIST.mkdir(exist_ok=True)
    final = DIST / f"{PLUGIN}.zip"
    tmp = final.with_name(f".{final.name}.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder.parent).as_posix())
    os.replace(tmp, final)
    return final


class CaseSensitiveConfig(configparser.ConfigParser):
    """QGIS3.ini keys are case-sensitive; configparser lower-cases them by default."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def make_profile(root: Path, worker_python: Path = WORKER_PYTHON) -> Path:
    """A QGIS profiles folder with the staged plugin enabled and the worker interpreter set."""
    profile = root / "profiles" / "default"
    stage(profile / "python" / "plugins")
    ini_path = profile / "QGIS" / "QGIS3.ini"
    ini_path.parent.mkdir(parents=True, exist_ok=True)
    ini = CaseSensitiveConfig(interpolation=None)
    if ini_path.exists():
        ini.read(ini_path)
    for section, values in {
        "PythonPlugins": {PLUGIN: "true"},
        "aifactory": {"worker_python": str(worker_python), "work_dir": str(root / "jobs")},
        "qgis": {"checkVersion": "false", "showTips322": "false", "allowVersionCheck": "false"},
        "core": {"NewsFeed\\httpsfeedqgisorg\\disabled": "true"},
    }.items():
        if not ini.has_section(section):
            ini.add_section(section)
        for key, value in values.items():
            ini.set(section, key, value)
    with open(ini_path, "w", encoding="utf-8") as handle:
        ini.write(handle, space_around_delimiters=False)
    return root


def sample_data(folder: Path, worker_python: Path = WORKER_PYTHON, size: str = "768x512") -> dict[str, Path]:
    """Scene + truth from the real worker, sample detections derived from the truth with OGR, and the
    worker's RPS table for them."""
    folder.mkdir(parents=True, exist_ok=True)
    raster, truth, detections = folder / "scene.tif", folder / "truth.gpkg", folder / "detections.gpkg"
    if not raster.exists():
        subprocess.run([str(worker_python), "-m", "aifactory.cli", "synth", "-o", str(raster), "--truth", str(truth),
                        "--size", size, "--density", "2", "--seed", "11", "--events", "none"], check=True)
    if not detections.exists():
        write_sample_detections(truth, detections)
    rps = folder / "rps"
    if not (rps / "points.csv").exists():  # the RPS dock's table: the real worker on the sample detections
        subprocess.run([str(worker_python), "-m", "aifactory.cli", "rps", "--pred", str(detections), "--truth",
                        str(truth), "--sweep", "score=0.05:0.95:0.05", "-o", str(rps), "--events", "none"],
                       check=True, stdout=subprocess.DEVNULL)
    return {"raster": raster, "truth": truth, "detections": detections, "points": rps / "points.csv"}


def write_sample_detections(truth: Path, path: Path) -> int:
    """Every truth object as a detection with a spread-out score, plus one shifted false alarm in three."""
    from osgeo import ogr

    ogr.UseExceptions()
    source = ogr.Open(str(truth))
    layer = source.GetLayer(0)
    tmp = path.with_name(f".{path.stem}.part.gpkg")
    target = ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp))
    out = target.CreateLayer("detections", layer.GetSpatialRef(), ogr.wkbMultiPolygon)
    for name, kind in (("class", ogr.OFTString), ("score", ogr.OFTReal), ("model_run", ogr.OFTString),
                       ("tile_id", ogr.OFTString), ("area", ogr.OFTReal), ("review", ogr.OFTString),
                       ("reviewed_class", ogr.OFTString)):
        out.CreateField(ogr.FieldDefn(name, kind))
    count = 0
    for index, feature in enumerate(layer):
        geometry = feature.GetGeometryRef()
        copies = [(geometry.Clone(), 0.35 + 0.6 * ((index * 0.618034) % 1.0))]
        if index % 3 == 0:  # a false alarm next to it, with a lower score
            shifted = geometry.Clone()
            envelope = shifted.GetEnvelope()
            dx = 1.5 * (envelope[1] - envelope[0])
            for ring in range(shifted.GetGeometryCount()):
                part = shifted.GetGeometryRef(ring)
                for i in range(part.GetPointCount()):
                    part.SetPoint_2D(i, part.GetX(i) + dx, part.GetY(i))
            copies.append((shifted, 0.05 + 0.5 * ((index * 0.414214) % 1.0)))
        for geom, score in copies:
            new = ogr.Feature(out.GetLayerDefn())
            multi = ogr.ForceToMultiPolygon(geom)
            new.SetGeometry(multi)
            new["class"], new["score"], new["model_run"] = feature["class"], round(score, 4), "sample"
            new["tile_id"], new["area"], new["review"] = "sample", multi.GetArea(), "unreviewed"
            out.CreateFeature(new)
            count += 1
    target = None  # closes the file before the rename
    os.replace(tmp, path)
    return count


def write_project(folder: Path, data: dict[str, Path]) -> Path:

    """``folder/sample.qgz`` with the scene, truth and detections (styled with resources/styles if present)."""
    from qgis.core import (
        QgsApplication,
        QgsFillSymbol,
        QgsProject,
        QgsRasterLayer,
        QgsSingleSymbolRenderer,
        QgsVectorLayer,
    )

    app = QgsApplication([], False)
    app.initQgis()
    project = QgsProject.instance()
    raster = QgsRasterLayer(str(data["raster"]), "scene", "gdal")
    truth = QgsVectorLayer(f"{data['truth']}|layername=truth", "truth", "ogr")
    detections = QgsVectorLayer(f"{data['detections']}|layername=detections", "detections", "ogr")
    style = REPO / "resources" / "styles" / "detections.qml"
    if style.is_file():
        detections.loadNamedStyle(str(style))
    truth.setRenderer(QgsSingleSymbolRenderer(QgsFillSymbol.createSimple(
        {"color": "0,0,0,0", "outline_color": "0,200,255", "outline_width": "0.5"})))
    if raster.bandCount() >= 3 and hasattr(raster.renderer(), "setRedBand"):  # synthetic bands are B, G, R, NIR
        raster.renderer().setRedBand(3)
        raster.renderer().setBlueBand(1)
    project.addMapLayers([detections, truth, raster])  # legend order: detections on top
    project.setCrs(raster.crs())
    path = folder / "sample.qgz"
    assert project.write(str(path)), f"cannot write {path}"
    project.clear()
    app.exitQgis()
    return path


def sample_project(folder: Path) -> Path:
    """Sample data and project; the QGIS part runs in a child process of its own (a clean QgsApplication)."""
    sample_data(folder)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    subprocess.run([sys.executable, __file__, "write-project", str(folder)], check=True, env=env)
    return folder / "sample.qgz"


def qgis_command(profiles: Path, project: Path, code: Path | None = None) -> list[str]:
    command = ["qgis", "--nologo", "--noversioncheck", "--profiles-path", str(profiles)]
    if code is not None:
        command += ["--code", str(code)]
    return [*command, str(project)]


def run_qgis() -> int:
    if not os.environ.get("DISPLAY"):
        print("make qgis: no DISPLAY; run it on a desktop (or under Xvfb: xvfb-run make qgis)", file=sys.stderr)
        return 2
    root = BUILD / "qgis"
    make_profile(root)
    project = sample_project(root / "sample")
    print(f"QGIS with the AI Factory plugin, profile {root}, project {project}", file=sys.stderr)
    return subprocess.call(qgis_command(root, project))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("package", help="build dist/aifactory_qgis.zip")
    sub.add_parser("qgis", help="open QGIS with the plugin on a sample project")
    sub.add_parser("i18n", help="refresh resources/i18n/*.ts with the plugin's tr() strings")
    project = sub.add_parser("project", help="write the sample data and project into DIR")
    project.add_argument("dir", type=Path)
    write = sub.add_parser("write-project", help=argparse.SUPPRESS)  # the QGIS part of `project`
    write.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "package":
        print(package())
        return 0
    if args.command == "i18n":
        for path in update_translations():
            print(path)
        return 0
    if args.command == "project":
        print(sample_project(args.dir))
        return 0
    if args.command == "write-project":
        folder = args.dir
        write_project(folder, {"raster": folder / "scene.tif", "truth": folder / "truth.gpkg",
                               "detections": folder / "detections.gpkg"})
        return 0
    return run_qgis()


if __name__ == "__main__":
    sys.exit(main())
