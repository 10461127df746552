"""Run directories and scenes for the prediction tests, plus a check that the tiny trained model is real.

A U-Net (resnet18 encoder cut to 3 stages, small decoder) is trained for a few dozen steps on a
synthetic scene so that predictions mean something; it is trained once and kept in pytest's
cache folder (keyed by the recipe version), shared by every prediction test module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from aifactory.datasets.format import Normalization
from aifactory.io.atomic import atomic_path
from aifactory.io.synthetic import SceneSpec, generate_scene
from aifactory.models.card import ModelCard, build_model, write_card
from rasterio.features import rasterize

CLASSES = ["background", "building", "vegetation/tree"]
TILE = 128
PARAMS = {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16, 8]}


def make_card(tile: int = TILE, gsd: float | None = 0.5, bands: list[int] | None = None,
              classes: list[str] | None = None, **extra: object) -> ModelCard:
    bands = bands or [1, 2, 3, 4]
    classes = classes or CLASSES
    return ModelCard(architecture="unet", params=PARAMS, in_channels=len(bands), num_classes=len(classes),
                     classes=classes, bands=bands, normalization=Normalization(mean=[5000.0] * len(bands),
                                                                                std=[3000.0] * len(bands)),
                     tile_size=tile, gsd=gsd, extra=dict(extra))


def write_run(run_dir: Path, card: ModelCard, state: dict[str, torch.Tensor] | None = None) -> Path:
    """A run directory: model.json + model.pt (random weights unless ``state`` is given)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if state is None:
        torch.manual_seed(0)
        state = build_model(card).state_dict()
    torch.save(state, run_dir / "model.pt")
    write_card(card, run_dir)
    return run_dir


def truth_mask(raster: Path, truth) -> np.ndarray:
    with rasterio.open(raster) as ds:
        shape, transform = (ds.height, ds.width), ds.transform
    mask = np.zeros(shape, dtype="int64")
    for index, name in enumerate(CLASSES[1:], start=1):
        geoms = truth.geometry[truth["class"] == name]
        if len(geoms):
            mask[rasterize(geoms, out_shape=shape, transform=transform) > 0] = index
    return mask


RECIPE = "unet-r18d3-v1"


def trained_state(folder: Path) -> dict[str, torch.Tensor]:
    """Weights trained for 40 steps on a 384² synthetic scene (buildings and trees)."""
    raster = folder / "train.tif"
    truth = generate_scene(SceneSpec(width=384, height=384, seed=11, density=1.6), raster)
    with rasterio.open(raster) as ds:
        image = torch.from_numpy((ds.read().astype("float32") - 5000.0) / 3000.0)
    mask = torch.from_numpy(truth_mask(raster, truth))
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model(make_card())
    optimizer = torch.optim.Adam(model.parameters(), 5e-3)
    crop = 96
    for _ in range(40):
        rows, cols = rng.integers(0, 384 - crop, 8), rng.integers(0, 384 - crop, 8)
        x = torch.stack([image[:, r:r + crop, c:c + crop] for r, c in zip(rows, cols, strict=True)])
        y = torch.stack([mask[r:r + crop, c:c + crop] for r, c in zip(rows, cols, strict=True)])
        loss = torch.nn.functional.cross_entropy(model(x), y, weight=torch.tensor([0.1, 1.0, 1.0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def trained_run(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained run directory (trained on first use, then read from pytest's cache)."""
    run = pytestconfig.cache.mkdir(f"aifactory-predict-{RECIPE}") if pytestconfig.cache else \
        tmp_path_factory.mktemp("run-trained")
    if not (run / "model.json").exists():
        with atomic_path(run / "model.pt") as tmp:
            torch.save(trained_state(tmp_path_factory.mktemp("train")), tmp)
        write_card(make_card(), run)
    return run


@pytest.fixture(scope="session")
def predict_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 600 × 420 scene (not a multiple of the tile) with a nodata corner, and its truth."""
    base = tmp_path_factory.getbasetemp() / "predict-support"
    base.mkdir(exist_ok=True)
    raster, truth = base / "scene.tif", base / "truth.gpkg"
    if not raster.exists():
        generate_scene(SceneSpec(width=600, height=420, seed=5, density=1.2, nodata_corner=0.12), raster, truth)
    return raster, truth


def test_tiny_model_learns_the_scene(trained_run, predict_scene):
    from aifactory.models.card import load_run_model

    model, _ = load_run_model(trained_run)
    raster, truth_path = predict_scene
    import geopandas as gpd

    truth = gpd.read_file(truth_path)
    with rasterio.open(raster) as ds:
        image = torch.from_numpy((ds.read(window=((0, 256), (256, 512))).astype("float32") - 5000) / 3000)
    with torch.inference_mode():
        predicted = model(image[None]).argmax(1)[0].numpy()
    expected = truth_mask(raster, truth)[:256, 256:512]
    for index in (1, 2):
        inter = np.sum((predicted == index) & (expected == index))
        union = np.sum((predicted == index) | (expected == index))
        assert inter / union > 0.6, (CLASSES[index], inter / union)
