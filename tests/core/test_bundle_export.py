"""ONNX export of the dense families, the verification catching a wrong graph, refusals, the pipeline task."""

from __future__ import annotations

import textwrap
import zipfile

import numpy as np
import onnxruntime as ort
import pytest
import torch
from aifactory.bundle.build import build_bundle
from aifactory.bundle.export import dataset_tiles, export_onnx, sample_tiles, verify
from aifactory.bundle.format import read_meta
from aifactory.errors import ConfigError, InputError
from aifactory.io.synthetic import SceneSpec, generate_scene
from aifactory.models.card import build_model
from aifactory.pipeline.runner import run
from aifactory.pipeline.spec import load_pipeline
from test_predict_support import make_card, write_run

TINY = {"encoder": "resnet18", "encoder_depth": 3}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "scene.tif"
    generate_scene(SceneSpec(width=256, height=160, seed=3), path)
    return path


@pytest.mark.parametrize(("architecture", "task", "params", "outputs"), [
    ("contact_unet", "contact", {**TINY, "head_channels": 8}, ["semantic", "boundary", "contact"]),
    ("centernet", "heatmap", {**TINY, "head_channels": 8, "stride": 2}, ["heatmap", "size", "offset"]),
])
def test_multi_head_families_export_and_verify(tmp_path, scene, architecture, task, params, outputs):
    card = make_card(tile=64).model_copy(update={"architecture": architecture, "task": task, "params": params})
    torch.manual_seed(0)
    model = build_model(card).train()  # left in training mode on purpose: the export must not care
    path = tmp_path / "model.onnx"
    assert export_onnx(model, card, path) == outputs
    tiles = sample_tiles(scene, card)
    result = verify(model, path, outputs, card, tiles, "scene")
    assert [o.output for o in result.real.outputs] == outputs and result.real.tiles == 2
    assert all(o.max_rel <= 1e-4 for check in (result.random, result.real) for o in check.outputs)
    one = ort.InferenceSession(str(path)).run(None, {"input": np.zeros((1, 4, 64, 64), "float32")})
    stride = params.get("stride", 1)
    assert one[0].shape == (1, 3, 64 // stride, 64 // stride)  # batch 1 through the dynamic axis


def test_verification_catches_a_graph_that_differs_from_torch(tmp_path, scene):
    card = make_card(tile=64)
    torch.manual_seed(0)
    exported = build_model(card)
    path = tmp_path / "model.onnx"
    names = export_onnx(exported, card, path)
    other = build_model(card).eval()  # other random weights: what a wrong export would compute
    with pytest.raises(InputError, match="does not match torch on random input"):
        verify(other, path, names, card, sample_tiles(scene, card), "scene")


def test_refusals_come_before_the_export(tmp_path, scene):
    detector = make_card().model_copy(update={"architecture": "faster_rcnn", "task": "detection", "params": {}})
    write_run(tmp_path / "detector", detector, state={})
    with pytest.raises(InputError, match="task 'detection' cannot be bundled: box detectors"):
        build_bundle(tmp_path / "detector", tmp_path / "d.zip", sample=scene)
    run_dir = write_run(tmp_path / "run", make_card(tile=64))
    with pytest.raises(InputError, match="give --sample RASTER"):  # no config.yaml: the dataset is unknown
        build_bundle(run_dir, tmp_path / "m.zip")
    with pytest.raises(ConfigError, match=r"a bundle is a \.zip file"):
        build_bundle(run_dir, tmp_path / "m.tar", sample=scene)
    fence = tmp_path / "chain.yaml"
    fence.write_text(f"ops:\n  - make_valid\n  - {{name: geofence, path: {scene}}}\n")
    with pytest.raises(ConfigError, match=r"ops\.1\.path: op 'geofence' reads a file"):
        build_bundle(run_dir, tmp_path / "m.zip", postprocess=fence, sample=scene)
    point = tmp_path / "op.json"
    point.write_text('{"version": 1}')
    with pytest.raises(InputError, match="not an operating point"):
        build_bundle(run_dir, tmp_path / "m.zip", operating_point=point, sample=scene)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.yaml", "detector", "op.json", "run"]


def dataset_from(scene, folder, tile=64):
    """A dataset folder of two chips cut from ``scene`` (what the verification falls back to)."""
    import pandas as pd
    import rasterio
    from aifactory.datasets.format import write_chips
    from rasterio.windows import Window

    (folder / "images").mkdir(parents=True)
    rows = []
    with rasterio.open(scene) as ds:
        for index, (split, col) in enumerate((("train", 0), ("val", tile))):
            window = Window(col, 0, tile, tile)
            image = f"images/{index}.tif"
            profile = {key: value for key, value in ds.profile.items() if key not in ("blockxsize", "blockysize")}
            profile.update(width=tile, height=tile, transform=ds.window_transform(window), driver="GTiff", tiled=False)
            with rasterio.open(folder / image, "w", **profile) as out:
                out.write(ds.read(window=window))
            rows.append({"chip_id": str(index), "split": split, "image": image, "mask": "", "source": str(scene),
                         "source_crs": "EPSG:32631", "col_off": col, "row_off": 0, "width": tile, "height": tile,
                         "footprint_wkt": "", "n_objects": 0, "boxes": []})
    write_chips(pd.DataFrame(rows), folder / "chips.csv")
    return folder


def test_bundle_pipeline_task_verifies_on_the_runs_dataset(tmp_path, scene):
    run_dir = write_run(tmp_path / "run", make_card(tile=64, bands=[3, 2, 1]))
    dataset = dataset_from(scene, tmp_path / "dataset")
    (run_dir / "config.yaml").write_text(f"dataset: {dataset}\nmodel: {{architecture: unet}}\n")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(textwrap.dedent(f"""
        tasks:
          pack: {{task: bundle, params: {{run: {run_dir}, overlap: 8}}}}
    """))
    outputs = run(load_pipeline(pipeline))
    zip_path = outputs["pack"]["bundle"]
    meta = read_meta(zip_path)
    assert meta.bands == [3, 2, 1] and meta.overlap == 8 and meta.tile_size == 64 and meta.postprocess is None
    assert meta.verification.real.source == f"dataset {dataset}" and meta.verification.real.tiles == 2
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.read("config.yaml") == (run_dir / "config.yaml").read_bytes()


def test_a_sample_at_another_gsd_warns(scene):
    from aifactory.progress import CallbackReporter, use_reporter

    events: list[dict] = []
    with use_reporter(CallbackReporter(events.append)):
        sample_tiles(scene, make_card(tile=64, gsd=0.5))  # the scene's own GSD
        assert not [e for e in events if e.get("level") == "warning"]
        sample_tiles(scene, make_card(tile=64, gsd=2.0))
    warnings = [e["message"] for e in events if e.get("level") == "warning"]
    assert len(warnings) == 1 and "GSD 0.5 m differs from the model's 2 m" in warnings[0]


def test_dataset_chips_that_are_mostly_nodata_are_not_verified_on(tmp_path):
    """Chips may hold up to ``max_nodata`` nodata: such a chip verifies the export on nothing."""
    import pandas as pd
    import rasterio
    from aifactory.datasets.format import write_chips

    dataset = tmp_path / "dataset"
    (dataset / "images").mkdir(parents=True)
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 4, "dtype": "uint16", "nodata": 0}
    for name, value in (("empty", 0), ("full", 4000)):
        with rasterio.open(dataset / "images" / f"{name}.tif", "w", **profile) as ds:
            ds.write(np.full((4, 64, 64), value, dtype="uint16"))
    chips = pd.DataFrame({"chip_id": ["a", "b"], "split": ["val", "val"],
                          "image": ["images/empty.tif", "images/full.tif"], "mask": ["", ""], "source": ["s", "s"],
                          "source_crs": ["", ""], "col_off": [0, 64], "row_off": [0, 0], "width": [64, 64],
                          "height": [64, 64], "footprint_wkt": ["", ""], "n_objects": [0, 0], "boxes": [[], []]})
    write_chips(chips, dataset / "chips.csv")
    run_dir = write_run(tmp_path / "run", make_card(tile=64))
    (run_dir / "config.yaml").write_text(f"dataset: {dataset}\n")
    tiles, source = dataset_tiles(run_dir, make_card(tile=64), count=1)
    assert source == f"dataset {dataset}" and (tiles == 4000).all()
