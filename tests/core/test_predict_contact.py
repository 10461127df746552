"""``predict`` with contact models (``contact_unet``, task family ``contact``), from a run and from a bundle.

Two models: a tiny ``contact_unet`` trained a few steps through the product's own dataset builder and training
loop (a real network: bands, TTA, ensembles, export), and a hand-set probe whose heads are 1 × 1 convolutions of
the input bands, so that a raster can say exactly where objects and contacts are. The probe's expected scores
and polygons are written from the documentation (:mod:`aifactory.prediction.contact`: P(k) = s_k · (1 − c),
P(contact) = c · (1 − s0); vectorized like ``boundary`` labels), not from the code under test.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import shapely.affinity
import torch
from aifactory.cli import main
from aifactory.config import StrictModel
from aifactory.datasets.format import Normalization
from aifactory.errors import InputError
from aifactory.models import ARCHITECTURES
from aifactory.models.card import ModelCard, load_run_model, write_card
from aifactory.prediction import predict
from aifactory.prediction.contact import contact_stack, stack_classes
from aifactory.prediction.predict import label_mode_options
from aifactory.prediction.tta import transforms
from aifactory.prediction.vectorize import vectorize_array
from aifactory.training import TrainConfig, train
from test_bundle_support import run_cli, torch_loaded
from test_predict_support import make_card, write_run
from test_training_support import config_data, make_dataset
from torch import nn

PROBE = "contact_probe"
PROBE_CLASSES = ["background", "building"]
TILE = 64  # tiles of the probe: lines every 56 px cut through both squares
SIZE = 160
TRANSFORM = rasterio.Affine(0.5, 0, 500000.0, 0, -0.5, 5000000.0)
#: pixel boxes (row0, row1, col0, col1): two squares touching along column 70, and one alone
LEFT, RIGHT, ALONE = (40, 100, 30, 70), (40, 100, 70, 110), (118, 150, 20, 52)
#: contact band: the 2 px of each square nearest the other (what training targets mark)
CONTACT = (40, 100, 68, 72)
GAIN = 6.0


# --- the probe -------------------------------------------------------------------------------------------------

class ProbeParams(StrictModel):
    """No parameters."""

    TASK: ClassVar[str] = "contact"


class ContactProbe(nn.Module):
    """The contact family's outputs as 1 × 1 convolutions of the bands (set by the run's weights)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.semantic = nn.Conv2d(in_channels, num_classes, 1)
        self.boundary = nn.Conv2d(in_channels, 1, 1)
        self.contact = nn.Conv2d(in_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"semantic": self.semantic(x), "boundary": self.boundary(x), "contact": self.contact(x)}


def contact_probe(params: ProbeParams, in_channels: int, num_classes: int) -> nn.Module:
    """Test probe of the contact family."""
    return ContactProbe(in_channels, num_classes)


@pytest.fixture(scope="module", autouse=True)
def probe_architecture() -> Iterator[None]:
    """The probe registered for this module only (other tests list the architectures)."""
    ARCHITECTURES.register(PROBE, ProbeParams)(contact_probe)
    yield
    ARCHITECTURES._entries.pop(PROBE, None)


def probe_run(folder: Path) -> Path:
    """Band 1 says "object" (building logit +GAIN, else −GAIN), band 2 "contact"; the boundary head says nothing."""
    card = ModelCard(architecture=PROBE, task="contact", in_channels=2, num_classes=2, classes=PROBE_CLASSES,
                     bands=[1, 2], normalization=Normalization(mean=[0.0, 0.0], std=[1.0, 1.0]), tile_size=TILE,
                     gsd=0.5)
    state = {"semantic.weight": torch.tensor([[0.0, 0.0], [2 * GAIN, 0.0]])[:, :, None, None],
             "semantic.bias": torch.tensor([0.0, -GAIN]),
             "boundary.weight": torch.zeros(1, 2, 1, 1), "boundary.bias": torch.zeros(1),
             "contact.weight": torch.tensor([[0.0, 2 * GAIN]])[:, :, None, None], "contact.bias": torch.tensor([-GAIN])}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "model.pt")
    write_card(card, folder)
    return folder


def box_raster(path: Path) -> np.ndarray:
    """The probe's scene (2 float32 bands, no nodata); returns its bands."""
    image = np.zeros((2, SIZE, SIZE), dtype="float32")
    for r0, r1, c0, c1 in (LEFT, RIGHT, ALONE):
        image[0, r0:r1, c0:c1] = 1
    r0, r1, c0, c1 = CONTACT
    image[1, r0:r1, c0:c1] = 1
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=2, dtype="float32",
                       crs="EPSG:32631", transform=TRANSFORM, tiled=True, blockxsize=64, blockysize=64) as ds:
        ds.write(image)
    return image


def expected_scores(image: np.ndarray) -> np.ndarray:
    """(2, h, w) uint8: building away from contacts, contact (the documented joint distribution, float64)."""
    building = 1 / (1 + np.exp(-(2 * GAIN * image[0].astype("float64") - GAIN)))  # softmax of [0, logit]
    contact = 1 / (1 + np.exp(-(2 * GAIN * image[1].astype("float64") - GAIN)))
    return np.rint(np.stack([building * (1 - contact), contact * building]) * 255).astype("uint8")


def map_box(r0: int, r1: int, c0: int, c1: int) -> shapely.Geometry:
    """A pixel box in map coordinates."""
    (x0, y0), (x1, y1) = TRANSFORM * (c0, r0), TRANSFORM * (c1, r1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


@pytest.fixture(scope="module")
def probe_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    base = tmp_path_factory.mktemp("contact-probe")
    raster = base / "boxes.tif"
    return probe_run(base / "run"), raster, box_raster(raster)


# --- the trained contact_unet -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def contact_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A contact_unet trained a few steps on a synthetic scene's dataset; the run and that scene (5 bands)."""
    base = tmp_path_factory.mktemp("contact-train")
    dataset = make_dataset(base, size=192)
    config = TrainConfig.model_validate(config_data(
        dataset, model={"architecture": "contact_unet",
                        "params": {"encoder": "resnet18", "encoder_depth": 3, "head_channels": 8}},
        epochs=1, max_steps=3, batch_size=4))
    return train(config, base / "run", device="cpu"), base / "scene.tif"


def read_scores(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str | None, ...]]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.dataset_mask() > 0, ds.descriptions


# --- the conversion -----------------------------------------------------------------------------------------------

def test_the_stack_is_a_joint_distribution_in_numpy_and_torch_alike():
    rng = np.random.default_rng(0)
    semantic = rng.random((2, 3, 5, 5)).astype("float32")
    semantic /= semantic.sum(axis=1, keepdims=True)
    contact = rng.random((2, 1, 5, 5)).astype("float32")
    stack = contact_stack(semantic, contact)
    assert stack.shape == (2, 4, 5, 5) and np.allclose(stack.sum(axis=1), 1, atol=1e-6)
    assert np.allclose(stack[:, 3], contact[:, 0] * (1 - semantic[:, 0]))
    assert np.allclose(stack[:, 1:3], semantic[:, 1:] * (1 - contact))
    assert np.array_equal(contact_stack(torch.from_numpy(semantic), torch.from_numpy(contact)).numpy(), stack)
    # a model trained on boundary labels has a "contact" class of its own: it joins the contact band
    assert stack_classes(["background", "building", "contact"]) == ["background", "building", "contact"]
    merged = contact_stack(semantic, contact, merged=2)
    assert merged.shape == (2, 3, 5, 5) and np.allclose(merged.sum(axis=1), 1, atol=1e-6)
    assert np.allclose(merged[:, 2], semantic[:, 2] + contact[:, 0] * (1 - semantic[:, 0] - semantic[:, 2]))
    # one sigmoid class: its background is what it leaves
    assert stack_classes(["building"]) == ["background", "building", "contact"]
    assert np.allclose(contact_stack(semantic[:, 1:2], contact).sum(axis=1), 1, atol=1e-6)


# --- from a run ---------------------------------------------------------------------------------------------------

def test_a_trained_contact_model_predicts_from_its_run(contact_run, tmp_path):
    run, scene = contact_run
    _, card = load_run_model(run)
    assert card.task == "contact"
    result = predict([run], scene, tmp_path / "out", device="cpu", precision="fp32")
    scores, _, descriptions = read_scores(result.scores)
    assert list(descriptions) == [*card.classes[1:], "contact"] == result.classes
    assert len(scores) == len(card.classes)  # C - 1 object classes + contact
    summary = json.loads(result.summary.read_text())
    assert summary["task"] == "contact" and "contact" in summary["scores_meaning"]
    detections = gpd.read_file(result.detections, layer="detections")
    assert len(detections) == result.detections_count
    assert "contact" not in set(detections["class"])  # a contact is never an object


def test_tta_maps_every_head_back_and_ensembles_average_the_stacks(contact_run, tmp_path):
    """One tile through d4 TTA against the documented reference: each pass's heads mapped back, converted, averaged."""
    run, scene = contact_run
    model, card = load_run_model(run)
    crop = tmp_path / "crop.tif"
    window = ((64, 64 + card.tile_size), (64, 64 + card.tile_size))
    with rasterio.open(scene) as ds:
        pixels = ds.read(card.bands, window=window)
        with rasterio.open(crop, "w", driver="GTiff", width=card.tile_size, height=card.tile_size, count=ds.count,
                           dtype=ds.dtypes[0], crs=ds.crs, transform=ds.window_transform(window),
                           nodata=ds.nodata) as out:
            out.write(ds.read(window=window))
    mean = np.asarray(card.normalization.mean, "float32")[:, None, None]
    std = np.asarray(card.normalization.std, "float32")[:, None, None]
    x = torch.from_numpy(((pixels.astype("float32") - mean) / std)[None])
    total = np.zeros((len(card.classes) + 1, card.tile_size, card.tile_size))
    with torch.inference_mode():
        for t in transforms("d4"):
            heads = {k: t.inverse(v).double().numpy()[0] for k, v in model.eval()(t.forward(x)).items()}
            e = np.exp(heads["semantic"] - heads["semantic"].max(axis=0))
            s = e / e.sum(axis=0)
            c = 1 / (1 + np.exp(-heads["contact"]))
            total += np.concatenate([s[:1], s[1:] * (1 - c), c * (1 - s[:1])])
    expected = np.rint(total[1:] / 8 * 255)
    tta = predict([run], crop, tmp_path / "tta", tta="d4", device="cpu", precision="fp32")
    scores, _, _ = read_scores(tta.scores)
    assert np.abs(scores.astype("int16") - expected).max() <= 1  # float32 with folded batch norms vs float64
    plain = predict([run], crop, tmp_path / "plain", device="cpu", precision="fp32")
    pair = predict([run, run], crop, tmp_path / "pair", device="cpu", precision="fp32")
    assert np.array_equal(read_scores(plain.scores)[0], read_scores(pair.scores)[0])
    assert pair.detections_count == plain.detections_count


def test_touching_objects_come_apart_with_no_seam_at_tile_lines(probe_scene, tmp_path):
    run, raster, image = probe_scene
    result = predict([run], raster, tmp_path / "out", device="cpu", precision="fp32", overlap=8, score_floor=0.5)
    scores, valid, descriptions = read_scores(result.scores)
    assert descriptions == ("building", "contact") and valid.all()
    reference = expected_scores(image)
    assert np.abs(scores.astype("int16") - reference).max() <= 1
    detections = gpd.read_file(result.detections, layer="detections")
    # two squares, not one blob; each whole though tile lines cross it; each claims the contact pixels beside it
    # (1 px of the 2 px band on its side: 1 px short there) and nothing else: the lone square is exactly its pixels
    expected = [map_box(LEFT[0], LEFT[1], LEFT[2], CONTACT[2] + 1),
                map_box(RIGHT[0], RIGHT[1], CONTACT[3] - 1, RIGHT[3]), map_box(*ALONE)]
    assert len(detections) == 3 and set(detections["class"]) == {"building"}
    for box in expected:
        assert any(shapely.equals(box, geometry) for geometry in detections.geometry), box
    # the streamed polygons are those of one pass over the whole reference raster
    options = label_mode_options({}, result.classes, 2.0, "contact")
    single = vectorize_array(reference, np.ones((SIZE, SIZE), bool), score_floor=0.5, **options)
    assert len(single) == 3
    in_map = [shapely.affinity.affine_transform(g, TRANSFORM.to_shapely()) for g in single.geometry]
    assert sorted(g.wkt for g in shapely.normalize(in_map)) == \
        sorted(g.wkt for g in shapely.normalize(detections.geometry.array))


# --- from a bundle ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["probe", "trained"])
def test_a_contact_bundle_predicts_without_torch_like_its_run(which, probe_scene, contact_run, tmp_path):
    run, raster = (probe_scene[0], probe_scene[1]) if which == "probe" else contact_run
    bundle = tmp_path / "model.zip"  # bundled here: the probe's architecture is registered in this process only
    assert main(["bundle", str(run), "-o", str(bundle), "--sample", str(raster), "--events", "none"]) == 0
    reference = predict([run], raster, tmp_path / "torch", device="cpu", precision="fp32")
    out = tmp_path / "onnx"
    done = run_cli(["predict", "--model", str(bundle), "--raster", str(raster), "-o", str(out), "--events", "none"],
                   tmp_path)
    assert done.returncode == 0, done.stderr
    assert not torch_loaded(done)
    torch_scores, onnx_scores = read_scores(reference.scores), read_scores(out / "scores.tif")
    assert torch_scores[2] == onnx_scores[2] and np.array_equal(torch_scores[1], onnx_scores[1])
    assert np.abs(torch_scores[0].astype("int16") - onnx_scores[0]).max() <= 1  # ONNX Runtime vs torch, uint8
    ours = gpd.read_file(out / "detections.gpkg", layer="detections")
    theirs = gpd.read_file(reference.detections, layer="detections")
    if which == "probe":
        assert len(ours) == 3 and sorted(ours.geometry.normalize().to_wkt()) == \
            sorted(theirs.geometry.normalize().to_wkt())
    else:  # a few training steps: many faint objects, where one score level may move a pixel
        assert abs(len(ours) - len(theirs)) <= max(2, len(theirs) // 20)


# --- bad input ---------------------------------------------------------------------------------------------------

def test_bad_input_is_still_one_line(probe_scene, contact_run, tmp_path, cli):
    run, raster, _ = probe_scene
    trained, _ = contact_run
    out = tmp_path / "out"
    # the trained model reads 5 bands; the probe's raster has 2
    with pytest.raises(InputError, match="has 2 band") as excinfo:
        predict([trained], raster, out)
    assert "\n" not in str(excinfo.value) and not (out / "scores.tif").exists()
    # a segmentation model and a contact model do not make an ensemble
    segmentation = write_run(tmp_path / "seg", make_card(tile=TILE, bands=[1, 2], classes=PROBE_CLASSES))
    with pytest.raises(InputError, match="an ensemble needs one task family"):
        predict([run, segmentation], raster, out)
    assert not (out / "scores.tif").exists()
    # a contact bundle whose network lacks the contact head
    bundle = tmp_path / "model.zip"
    assert main(["bundle", str(run), "-o", str(bundle), "--sample", str(raster), "--events", "none"]) == 0
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(tmp_path / "headless.zip", "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "bundle.json":
                meta = json.loads(data)
                meta["model"]["outputs"] = ["semantic", "boundary"]
                data = json.dumps(meta).encode()
            dst.writestr(info, data)
    with pytest.raises(InputError, match="the contact network has no 'contact' output") as excinfo:
        predict([tmp_path / "headless.zip"], raster, out)
    assert "\n" not in str(excinfo.value) and not (out / "scores.tif").exists()
    done = cli("predict", "--model", str(trained), "--raster", str(raster), "-o", str(out), "--events", "none")
    lines = [line for line in done.stderr.splitlines() if line.startswith("aifactory: error")]
    assert done.returncode == 2 and len(lines) == 1 and "has 2 band" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and not (out / "scores.tif").exists()
