"""Evaluation reports: a self-contained ``report.html`` with its PNGs next to it (relative links).

Object reports show the tables (overall, per class, per group), the PR curve, F1 against the score
threshold, the object confusion matrix and thumbnails of the worst mistakes over the imagery: false
positives with the highest scores (confident errors) and the largest missed objects. Thumbnails read
small windows through :mod:`aifactory.io.raster`, so the raster's size does not matter, and work for
pixel-space rasters too; without a raster they show the outlines alone. Imagery that does not overlap
the objects at all is refused (:func:`check_imagery`): pictures of nothing would hide a wrong file. Pixel
reports show the tables, the confusion matrix and per-class IoU.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from rasterio.windows import Window

from aifactory.errors import InputError
from aifactory.evaluation import plots
from aifactory.evaluation.objects import EvaluationResult, bounds_overlap, extent_text, load_objects
from aifactory.evaluation.pixels import PixelResult
from aifactory.io.atomic import atomic_path
from aifactory.io.raster import open_raster, read_window
from aifactory.io.vector import align_to_crs
from aifactory.progress import reporter

THUMBNAILS = 8
THUMB_PX = 384
OVERVIEW_PX = 1400
COLUMNS = ("n_truth", "n_pred", "tp", "fp", "fn", "precision", "recall", "f1", "ap50", "ap")
STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#eef}td:first-child{text-align:left}img{max-width:100%;margin:0.5em 0}.muted{color:#777}"""


def write_report(result: EvaluationResult | PixelResult, out_dir: str | Path, *, raster: str | Path | None = None,
                 pred: gpd.GeoDataFrame | str | Path | None = None,
                 truth: gpd.GeoDataFrame | str | Path | None = None) -> Path:
    """Write ``out_dir/report.html`` + PNGs (+ ``metrics.json``) atomically; returns the HTML path.

    ``pred``/``truth`` (frames or paths) are the outlines drawn in thumbnails; by default the objects
    kept in ``result``. ``raster`` is the imagery under the thumbnails.
    """
    out_dir = Path(out_dir)
    if raster is not None and isinstance(result, EvaluationResult):
        check_imagery(raster, result.pred, result.truth)
    with atomic_path(out_dir, folder=True) as tmp:
        tmp.mkdir(parents=True)
        if isinstance(result, PixelResult):
            body = _pixel_body(result, tmp)
            data = result.to_dict()
        else:
            body = _object_body(result, tmp, raster, _frame(pred, result.pred, result), _frame(truth, result.truth,
                                                                                             result))
            data = result.to_dict()
        (tmp / "metrics.json").write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
        page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>AI Factory evaluation</title>"
                f"<style>{STYLE}</style></head><body><h1>Evaluation report</h1>{body}"
                "<p class='muted'>Raw numbers: <a href='metrics.json'>metrics.json</a></p></body></html>")
        (tmp / "report.html").write_text(page, encoding="utf-8")
    reporter().artifact("report", out_dir / "report.html")
    return out_dir / "report.html"


def check_imagery(raster: str | Path, *frames: gpd.GeoDataFrame) -> None:
    """Refuse imagery that does not overlap the objects of ``frames`` at all (any CRS): the overview and the
    thumbnails would show none of it, and a wrong file is likelier than a wish for blank pictures."""
    with open_raster(raster) as ds:
        bounds = [b for b in (_in_raster_crs(f, ds).total_bounds for f in frames if len(f)) if np.isfinite(b).all()]
        if not bounds:
            return
        left, bottom, right, top = ds.bounds
        imagery = np.array([min(left, right), min(bottom, top), max(left, right), max(bottom, top)])
        objects = np.array([*np.min(bounds, axis=0)[:2], *np.max(bounds, axis=0)[2:]])
        if not bounds_overlap(imagery, objects):
            raise InputError(f"{raster}: the imagery ({extent_text(ds.crs, imagery)}) does not overlap the evaluated "
                             f"objects ({extent_text(ds.crs, objects)}); give the imagery under them")


def _in_raster_crs(frame: gpd.GeoDataFrame, ds: Any) -> gpd.GeoDataFrame:
    """``frame`` in the raster's CRS; a frame without CRS over georeferenced imagery is taken as is."""
    return align_to_crs(frame, ds.crs, "report") if frame.crs is not None or ds.crs is None else frame


def _frame(given: gpd.GeoDataFrame | str | Path | None, default: gpd.GeoDataFrame,
           result: EvaluationResult) -> gpd.GeoDataFrame:
    if given is None:
        return default
    frame = given if isinstance(given, gpd.GeoDataFrame) else load_objects(str(given))
    if result.inputs.get("crs") is None:
        return frame
    return align_to_crs(frame, default.crs, "report")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _table(rows: dict[str, dict[str, Any]], first: str, columns: tuple[str, ...] = COLUMNS) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (first, *columns))
    body = "".join("<tr><td>" + html.escape(name) + "</td>" + "".join(f"<td>{_fmt(v.get(c))}</td>" for c in columns)
                   + "</tr>" for name, v in rows.items())
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(name: str, alt: str) -> str:
    return f"<img src='{html.escape(name)}' alt='{html.escape(alt)}'>"


def _object_body(result: EvaluationResult, out: Path, raster: str | Path | None, pred: gpd.GeoDataFrame,
                 truth: gpd.GeoDataFrame) -> str:
    rep = reporter()
    params = (f"IoU ≥ {result.iou:g}, minimum area {result.min_area:g}, minimum score {result.min_score:g}"
              + (f", grouped by <code>{html.escape(result.by)}</code>" if result.by else "")
              + (f", classes cut to level {result.level}" if result.level is not None else "")
              + f", CRS {html.escape(str(result.inputs.get('crs') or 'none (pixel space)'))}")
    parts = [f"<p>{params}</p>", "<h2>Overall</h2>", _table({"all": result.overall}, "")]
    parts += ["<h2>Per class</h2>", _table(result.classes, "class")]
    if result.groups:
        parts += [f"<h2>Per {html.escape(result.by or 'group')}</h2>", _table(result.groups, result.by or "group")]
    curves = {"all classes": result.curve()}
    if len(result.classes) > 1:
        curves.update({c: result.curve(c) for c in result.classes})
    overall = curves["all classes"]
    best = int(np.argmax(overall.f1)) if len(overall.f1) else None
    mark = (float(overall.recall[best]), float(overall.precision[best]),
            f"max F1 {overall.f1[best]:.3f} at score {overall.scores[best]:.2f}") if best is not None else None
    plots.save(plots.pr_figure(curves, f"Precision-recall at IoU {result.iou:g}", mark), out / "pr_curve.png")
    plots.save(plots.threshold_figure(curves, "F1 against the score threshold", result.min_score or None,
                                      "minimum score"), out / "f1_curve.png")
    plots.save(plots.confusion_figure(result.confusion.labels, result.confusion.matrix,
                                      f"Objects matched at IoU {result.iou:g} (any class)"), out / "confusion.png")
    rep.progress("report", 0.4, "curves")
    parts += ["<h2>Curves</h2>", _img("pr_curve.png", "PR curve"), _img("f1_curve.png", "F1 against threshold"),
              "<h2>Confusion matrix</h2>", _img("confusion.png", "confusion matrix")]
    if raster is not None and (len(result.pred) or len(result.truth)):
        _overview(result, raster, out / "overview.png")
        rep.progress("report", 0.7, "overview")
        parts += ["<h2>Overview</h2><p class='muted'>green: matched truth; orange: missed truth; blue: true "
                  "positives; red: false positives (scores below the minimum are not drawn)</p>",
                  _img("overview.png", "overview of the evaluated area")]
    fps = result.pred[result.pred["status"] == "fp"].sort_values("score", ascending=False, kind="stable")
    fns = result.truth[result.truth["status"] == "fn"]
    fns = fns.iloc[np.argsort(-shapely.area(fns.geometry.array), kind="stable")]
    for name, title, chosen in (("worst_fp.png", "Worst false positives (highest scores)", fps),
                                ("worst_fn.png", "Worst false negatives (largest missed)", fns)):
        parts.append(f"<h2>{title}</h2><p class='muted'>dashed yellow: the object; green: truth; red: "
                     "predictions</p>")
        if len(chosen):
            _thumbnails(chosen.head(THUMBNAILS), pred, truth, raster, out / name, title,
                        is_pred=name == "worst_fp.png")
            parts.append(_img(name, title))
        else:
            parts.append("<p class='muted'>none</p>")
    rep.progress("report", 1.0, "thumbnails")
    inputs = result.inputs
    parts.append(f"<p class='muted'>Inputs: {_fmt(json.dumps(inputs, default=str))}</p>")
    return "".join(parts)


def _pixel_body(result: PixelResult, out: Path) -> str:
    classes = result.per_class()
    plots.save(plots.confusion_figure(result.labels, result.matrix, "Pixels (rows: truth)"), out / "confusion.png")
    plots.save(plots.bar_figure({k: v["iou"] for k, v in classes.items()}, "IoU per class", "IoU"),
               out / "iou.png")
    return "".join([
        "<h2>Overall</h2>", _table({"all": result.overall()}, "", ("pixels", "accuracy", "miou",
                                                                  "miou_foreground", "mean_f1")),
        "<h2>Per class</h2>", _table(classes, "class", ("support", "predicted", "iou", "precision", "recall",
                                                         "f1")),
        _img("iou.png", "IoU per class"), "<h2>Confusion matrix</h2>", _img("confusion.png", "confusion matrix"),
    ])


def _overview(result: EvaluationResult, raster: str | Path, path: Path) -> None:
    """The whole evaluated extent over the imagery (decimated to OVERVIEW_PX), objects coloured by outcome."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    with open_raster(raster) as ds:
        pred, truth = (_in_raster_crs(f, ds) for f in (result.pred, result.truth))
        pred = pred[pred["status"].isin(["tp", "fp"])]
        to_px = ~ds.transform
        geoms = {key: shapely.transform(frame.geometry.to_numpy(), lambda xy: np.column_stack(to_px * xy.T))
                 for key, frame in (("pred", pred), ("truth", truth))}
        x0, y0, x1, y1 = shapely.total_bounds(np.concatenate([geoms["pred"], geoms["truth"]]))
        x0, y0 = max(0.0, np.floor(x0) - 8), max(0.0, np.floor(y0) - 8)
        x1, y1 = min(float(ds.width), np.ceil(x1) + 8), min(float(ds.height), np.ceil(y1) + 8)
        window = Window(int(x0), int(y0), int(x1 - x0), int(y1 - y0))
        image = _stretch(_read_thumbnail(ds, window, _display_bands(ds), OVERVIEW_PX))
    width = 12.0
    fig, ax = plt.subplots(figsize=(width, width * (y1 - y0) / max(x1 - x0, 1) + 0.5))
    ax.imshow(image, extent=(x0, x1, y1, y0))
    styles = (("truth", "tp", "lime", "-", "matched truth"), ("truth", "fn", "orange", "--", "missed truth (FN)"),
              ("pred", "tp", "deepskyblue", "-", "true positive"), ("pred", "fp", "red", "-", "false positive"))
    for key, status, color, line, label in styles:  # one collection per style: a line per ring took seconds at 10⁴
        frame = truth if key == "truth" else pred
        chosen = (frame["status"] == status).to_numpy()
        rings = [ring for geom in geoms[key][chosen] for ring in _rings(geom)]
        ax.add_collection(LineCollection(rings, colors=color, linewidths=0.9, linestyles=line,
                                         label=f"{label}: {int(chosen.sum())}"))
    # in the picture itself, so that it still reads when shared without the report around it
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)
    ax.set_axis_off()
    ax.set_title(f"{Path(raster).name}: TP {result.overall['tp']}, FP {result.overall['fp']}, "
                 f"FN {result.overall['fn']}")
    plots.save(fig, path)


def _display_bands(ds: Any) -> list[int]:
    """Red, green, blue by band description when named, else the first three bands (or the first)."""
    names = [(d or "").lower() for d in ds.descriptions]
    if all(c in names for c in ("red", "green", "blue")):
        return [names.index(c) + 1 for c in ("red", "green", "blue")]
    return [1, 2, 3] if ds.count >= 3 else [1]


def _stretch(image: np.ndarray) -> np.ndarray:
    """(bands, h, w) → (h, w, 3) floats in [0, 1] with a 2–98 % stretch per band."""
    out = []
    for band in image.astype("float64"):
        lo, hi = np.percentile(band, (2, 98)) if band.size else (0, 1)
        out.append(np.clip((band - lo) / (hi - lo if hi > lo else 1), 0, 1))
    stacked = np.stack(out, axis=-1)
    return np.repeat(stacked, 3, axis=-1) if stacked.shape[-1] == 1 else stacked


def _thumbnails(chosen: gpd.GeoDataFrame, pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame,
                raster: str | Path | None, path: Path, title: str, is_pred: bool) -> None:
    """A grid of windows around ``chosen`` objects: imagery, truth (green), predictions (red)."""
    fig, axes = plots.axes_grid(len(chosen))
    if raster is not None:
        with open_raster(raster) as ds:
            to_px = ~ds.transform
            bands = _display_bands(ds)
            chosen, pred, truth = (_in_raster_crs(f, ds) for f in (chosen, pred, truth))
            _draw_all(axes, chosen, pred, truth, lambda xy: np.column_stack(to_px * xy.T), ds, bands, is_pred)
    else:  # map coordinates grow upwards, pixel coordinates downwards: flip the former
        flip = np.array([1.0, -1.0 if chosen.crs is not None else 1.0])
        _draw_all(axes, chosen, pred, truth, lambda xy: xy * flip, None, [], is_pred)
    fig.suptitle(title)
    plots.save(fig, path)


def _draw_all(axes: Any, chosen: gpd.GeoDataFrame, pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame,
              to_px: Any, ds: Any, bands: list[int], is_pred: bool) -> None:
    """Draw each chosen object in pixel coordinates (y down) with its surroundings."""
    pred_geoms = shapely.transform(pred.geometry.to_numpy(), to_px)
    truth_geoms = shapely.transform(truth.geometry.to_numpy(), to_px)
    pred_tree, truth_tree = shapely.STRtree(pred_geoms), shapely.STRtree(truth_geoms)
    for ax, (_, row) in zip(axes.flat, chosen.iterrows(), strict=False):
        geom = shapely.transform(row.geometry, to_px)
        x0, y0, x1, y1 = geom.bounds
        pad = max(16.0, 0.5 * max(x1 - x0, y1 - y0))
        x0, y0, x1, y1 = np.floor(x0 - pad), np.floor(y0 - pad), np.ceil(x1 + pad), np.ceil(y1 + pad)
        if ds is not None:
            ax.imshow(_stretch(_read_thumbnail(ds, Window(int(x0), int(y0), int(x1 - x0), int(y1 - y0)), bands)),
                      extent=(x0, x1, y1, y0))
        view = shapely.box(x0, y0, x1, y1)
        for tree, geoms, color in ((truth_tree, truth_geoms, "lime"), (pred_tree, pred_geoms, "red")):
            for g in geoms[tree.query(view)]:
                for ring in _rings(g):
                    ax.plot(*ring.T, color=color, lw=1.2)
        for ring in _rings(geom):
            ax.plot(*ring.T, color="yellow", lw=2.2, ls="--")
        label = f"{row['class']}" + (f" {row['score']:.2f}" if is_pred else "")
        ax.set_title(label, fontsize=8)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0)
        ax.set_aspect("equal")


def _read_thumbnail(ds: Any, window: Window, bands: list[int], max_px: int = THUMB_PX) -> np.ndarray:
    """Pixels of ``window``, decimated (from overviews) to at most ``max_px`` on a side: a huge object
    never means a huge read."""
    scale = max(window.width, window.height) / max_px
    if scale <= 1:
        return read_window(ds, window, bands)
    shape = (len(bands), max(1, round(window.height / scale)), max(1, round(window.width / scale)))
    return ds.read(bands, window=window, out_shape=shape, boundless=True, fill_value=0)


def _rings(geom: shapely.Geometry) -> list[np.ndarray]:
    """Coordinates of every ring of a (multi)polygon."""
    rings = shapely.get_rings(shapely.get_parts(geom))
    return [shapely.get_coordinates(r) for r in rings]
