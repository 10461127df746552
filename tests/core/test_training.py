"""Training: losses, augmentations, data order, a short real training that learns, the run directory,
MLflow tracking, other task families, and one-line errors for bad input."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from aifactory.cli import main
from aifactory.config import StrictModel
from aifactory.datasets.format import read_chips, read_meta
from aifactory.datasets.torch_dataset import ChipDataset
from aifactory.errors import AIFactoryError, ConfigError
from aifactory.models.card import load_run_model
from aifactory.progress import CallbackReporter, use_reporter
from aifactory.training import TrainConfig, train
from aifactory.training import checkpoint as ckpt
from aifactory.training.augment import Augmenter, hflip, rot90, vflip, zoom
from aifactory.training.config import AugmentConfig
from aifactory.training.data import EpochBatches
from aifactory.training.losses import LOSSES, LossContext, build_loss
from aifactory.training.metrics import ConfusionMatrix
from PIL import Image
from test_training_support import config_data, make_dataset, write_config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("train-data"))


# -- losses ----------------------------------------------------------------------------------------
DENSE = [e.name for e in LOSSES if getattr(e.params, "FAMILY", "dense") == "dense"]


@pytest.mark.parametrize("name", DENSE)
def test_dense_losses_reward_the_truth_ignore_pixels_and_weight_classes(name):
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 16, 16))
    target[:, :4] = 255
    perfect = torch.nn.functional.one_hot(torch.where(target == 255, 0, target), 3).permute(0, 3, 1, 2) * 8.0 - 4
    noise = torch.randn(2, 3, 16, 16)
    ctx = LossContext(3, 255)
    fn = build_loss([(name, 1.0, {})], ctx, "dense")
    good, bad = fn(perfect, target), fn(noise, target)
    assert torch.isfinite(good) and torch.isfinite(bad) and float(good) < float(bad)
    changed = noise.clone()
    changed[:, :, :4] = torch.randn(2, 3, 4, 16) * 10  # only ignored pixels differ
    assert torch.allclose(fn(changed, target), bad, atol=1e-5)
    if name != "lovasz":  # Lovász has no class weighting (documented)
        weighted = build_loss([(name, 1.0, {})], LossContext(3, 255, [0.1, 1.0, 5.0]), "dense")
        assert not torch.allclose(weighted(noise, target), bad)


def test_weighted_sum_and_family_check():
    ctx = LossContext(3, 255)
    logits, target = torch.randn(1, 3, 8, 8), torch.randint(0, 3, (1, 8, 8))
    total = build_loss([("ce", 1.0, {}), ("dice", 0.5, {})], ctx, "dense")(logits, target)
    parts = build_loss([("ce", 1.0, {})], ctx, "dense")(logits, target) + 0.5 * build_loss(
        [("dice", 1.0, {})], ctx, "dense")(logits, target)
    assert torch.allclose(total, parts)
    with pytest.raises(ConfigError, match="loss 'centernet' is for heatmap outputs"):
        build_loss([("centernet", 1.0, {})], ctx, "dense")
    with pytest.raises(ConfigError, match="unknown loss 'dicee'; did you mean dice"):
        build_loss([("dicee", 1.0, {})], ctx, "dense")


# -- augmentation ------------------------------------------------------------------------------------
def one_object_sample(bands: int = 7) -> dict:
    image = torch.randn(bands, 40, 56, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(40, 56, dtype=torch.int64)
    mask[5:17, 30:51] = 2  # rows 5..16, columns 30..50
    return {"image": image, "mask": mask, "boxes": torch.tensor([[30.0, 5.0, 51.0, 17.0]]),
            "labels": torch.tensor([2])}


def mask_box(mask: torch.Tensor) -> list[float]:
    rows, cols = torch.nonzero(mask == 2, as_tuple=True)
    return [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]


@pytest.mark.parametrize("op", [hflip, vflip, lambda s: rot90(s, 1), lambda s: rot90(s, 2), lambda s: rot90(s, 3)])
def test_dihedral_ops_move_image_mask_and_boxes_together(op):
    sample = one_object_sample()
    out = op(sample)
    assert out["image"].shape[0] == 7 and out["image"].shape[-2:] == out["mask"].shape
    assert out["boxes"][0].tolist() == mask_box(out["mask"])
    corner = sample["image"][:, 5, 30]  # a pixel of the object keeps its band vector
    assert any(torch.equal(out["image"][:, r, c], corner) for r, c in torch.nonzero(out["mask"] == 2).tolist())


def test_zoom_keeps_boxes_on_the_object_and_pads_with_ignore():
    sample = one_object_sample()
    rng = np.random.default_rng(1)
    out = zoom(sample, 0.5, rng, 255)
    assert out["image"].shape == sample["image"].shape and int((out["mask"] == 255).sum()) > 0
    assert np.allclose(out["boxes"][0].tolist(), mask_box(out["mask"]), atol=1.0)
    big = zoom(sample, 1.5, np.random.default_rng(2), 255)
    assert big["image"].shape == sample["image"].shape and len(big["boxes"]) == len(big["labels"])


@pytest.mark.parametrize("factor", [0.7, 1.3])
def test_zoomed_mask_stays_on_the_zoomed_image(factor):
    """The mask was resized with "nearest" (pixel corners) and the image bilinearly (pixel centres): the mask's
    edge sat a pixel right and down of the object's (47 pixels differed at 0.7)."""
    image = torch.zeros(1, 64, 64)
    image[:, 20:44, 12:40] = 1.0
    sample = {"image": image, "mask": (image[0] > 0).long(), "boxes": torch.zeros(0, 4),
              "labels": torch.zeros(0, dtype=torch.long)}
    out = zoom(sample, factor, np.random.default_rng(5), 255)
    inside = out["mask"] != 255
    assert torch.equal((out["image"][0] > 0.5)[inside], (out["mask"] == 1)[inside])


def test_augmenter_is_a_function_of_its_generator():
    aug = Augmenter(AugmentConfig(scale=(0.8, 1.25), brightness=0.2, contrast=0.2), 255)
    first = aug(one_object_sample(), np.random.default_rng([0, 3, 17]))
    again = aug(one_object_sample(), np.random.default_rng([0, 3, 17]))
    other = aug(one_object_sample(), np.random.default_rng([0, 3, 18]))
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["boxes"], again["boxes"])
    assert not torch.equal(first["image"], other["image"])


def test_epoch_batches_depend_on_seed_and_epoch_and_resume_mid_epoch():
    batches = EpochBatches(10, 3, seed=5)
    full = list(batches)
    assert len(full) == 3 and all(len(b) == 3 for b in full)  # last partial batch dropped
    batches.set_position(0, 2)
    assert list(batches) == full[2:]
    batches.set_position(1)
    first = next(iter(batches))
    assert [i for i, _ in first] != [i for i, _ in full[0]] and first[0][1] == 1
    assert len(EpochBatches(2, 3, seed=0)) == 1  # a split smaller than one batch still trains


# -- training --------------------------------------------------------------------------------------
def test_short_training_learns_and_beats_chance(dataset, tmp_path):
    config = TrainConfig.model_validate(config_data(
        dataset, epochs=6, optimizer={"name": "adam", "lr": 0.01}, schedule={"name": "constant"},
        loss=[{"name": "ce"}, {"name": "dice", "weight": 0.5}], augment={"hflip": 0.5, "rot90": 0.5},
        checkpoint_every=100))
    run = train(config, tmp_path / "run", device="cpu")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_loss = [r["loss"] for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    assert np.mean(train_loss[-3:]) < 0.5 * np.mean(train_loss[:3])
    # the model on disk is the best validation checkpoint and reproduces its score on the held-out split
    best = max(val, key=lambda r: r["miou"])
    model, card = load_run_model(run)
    assert card.extra["best"] == pytest.approx(best["miou"])
    meter = ConfusionMatrix(card.num_classes, card.ignore_index)
    chips = ChipDataset(dataset, "val")
    counts = torch.zeros(card.num_classes)
    with torch.no_grad():
        for i in range(len(chips)):
            sample = chips[i]
            meter.update(model(sample["image"][None]).argmax(1)[0], sample["mask"])
            counts += torch.bincount(sample["mask"][sample["mask"] != 255], minlength=card.num_classes)
    assert meter.compute()["miou"] == pytest.approx(best["miou"], abs=1e-6)
    # chance: guessing each pixel from the class frequencies p gives an expected IoU of p / (2 - p)
    p = counts / counts.sum()
    chance = float((p[1:] / (2 - p[1:])).mean())
    assert best["miou"] > max(0.3, 5 * chance), (best, chance)


def test_run_directory_is_complete(dataset, tmp_path):
    config = TrainConfig.model_validate(config_data(dataset, epochs=1, bands=[5, 1, 2], seed=3))
    run = train(config, tmp_path / "run", device="cpu")
    meta = read_meta(dataset)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config_hash"] == config.resolved().digest() and manifest["seed"] == 3
    assert manifest["status"] == "finished" and manifest["device"]["type"] == "cpu"
    assert len(manifest["dataset"]["sha256"]) == 64 and manifest["packages"]["torch"]
    assert manifest["code"]["commit"] is None or len(manifest["code"]["commit"]) == 40
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["dataset"] == str(dataset.resolve()) and stored["bands"] == [5, 1, 2]
    model, card = load_run_model(run)
    assert card.classes == meta.classes and card.bands == [5, 1, 2] and card.in_channels == 3
    assert card.normalization.mean == [meta.normalization.mean[i] for i in (4, 0, 1)]
    assert card.tile_size == meta.tile_size and card.gsd == meta.gsd and card.task == "segmentation"
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, len(meta.classes), 64, 64)
    with Image.open(run / "report" / "curves.png") as png:
        assert png.size[0] > 500
    assert ckpt.list_checkpoints(run) and (run / "checkpoints" / "best.pt").is_file()
    assert not list(run.rglob(".*part*"))


def test_metrics_and_params_reach_mlflow(dataset, tmp_path):
    from mlflow.tracking import MlflowClient

    config = TrainConfig.model_validate(config_data(dataset, epochs=1, max_steps=3, tracking={"enabled": True}))
    run = train(config, tmp_path / "runs" / "first", device="cpu")
    manifest = json.loads((run / "manifest.json").read_text())
    uri = manifest["mlflow"]["uri"]
    assert uri == f"sqlite:///{tmp_path / 'runs' / 'mlruns.db'}"
    client = MlflowClient(uri)
    mlrun = client.get_run(manifest["mlflow"]["run_id"])
    assert mlrun.info.status == "FINISHED" and mlrun.data.params["model.architecture"] == "unet"
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "train/loss")] == [1, 2, 3]
    assert "val/miou" in mlrun.data.metrics
    assert {a.path for a in client.list_artifacts(mlrun.info.run_id)} >= {"model.json", "curves.png"}


def test_tracking_failure_warns_and_training_goes_on(dataset, tmp_path):
    store = tmp_path / "mlruns.db"  # looks like an MLflow store (so it passes the check up front), but is broken
    with closing(sqlite3.connect(store)) as db:
        db.execute("CREATE TABLE experiments (broken INTEGER)")
    config = TrainConfig.model_validate(config_data(dataset, epochs=1, max_steps=2, tracking={"enabled": True}))
    events = []
    with use_reporter(CallbackReporter(events.append)):
        run = train(config, tmp_path / "run", device="cpu", tracking_uri=f"sqlite:///{store}")
    assert (run / "model.pt").is_file()
    warnings = [e["message"] for e in events if e["event"] == "log" and e["level"] == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith("tracking off (start failed")
    assert {e["name"] for e in events if e["event"] == "metric"} >= {"train/loss", "val/miou"}


@pytest.mark.parametrize("architecture, params", [
    ("centernet", {"encoder_depth": 3, "head_channels": 16, "stride": 2}),
    ("contact_unet", {"encoder_depth": 3, "head_channels": 16, "bricks": ["scse"]}),
    ("faster_rcnn", {"representation_size": 64, "proposals": 50, "roi_samples": 32}),
    ("mask_rcnn", {"representation_size": 64, "proposals": 50, "roi_samples": 32}),
])
def test_every_task_family_trains_end_to_end(dataset, tmp_path, architecture, params):
    config = TrainConfig.model_validate(config_data(
        dataset, model={"architecture": architecture, "params": params}, epochs=1, max_steps=2, batch_size=2,
        augment={"scale": [0.8, 1.2]}))
    run = train(config, tmp_path / "run", device="cpu")
    _, card = load_run_model(run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "val"]
    assert card.task in ("heatmap", "contact", "detection", "instance") and card.architecture == architecture
    assert val and "f1" in val[-1] and all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")


# -- bad input -------------------------------------------------------------------------------------
def run_main(capsys, *args) -> tuple[int, list[str]]:
    code = main(list(args))
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("overrides, message", [
    ({"model": {"architecture": "unnet"}}, "unknown architecture 'unnet'; did you mean unet"),
    ({"model": {"architecture": "deeplabv3", "params": {"bricks": ["aspp"]}}}, "already has ASPP"),
    ({"model": {"architecture": "unet", "params": {"bricks": [{"name": "cbam", "wher": "skips"}]}}},
     "wher: unknown key"),
    ({"bands": [1, 2, 9]}, "band 9 requested, but dataset"),
    ({"class_weights": [1.0, 2.0]}, "class_weights: 2 weights for 4 classes"),
    ({"model": {"architecture": "faster_rcnn"}, "loss": [{"name": "dice"}]}, "computes its own losses"),
    ({"monitor": "map"}, "monitor: 'map' is not a validation metric"),
    ({"epochs": 0}, "epochs: Input should be greater than or equal to 1"),
])
def test_bad_configs_are_one_line_exit_2(dataset, tmp_path, capsys, overrides, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config_data(dataset, **overrides)))
    code, lines = run_main(capsys, "train", str(path), "-o", str(tmp_path / "run"), "--events", "none")
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "run" / "model.pt").exists()


def test_empty_dataset_and_foreign_weights_and_missing_cuda_are_one_line_exit_2(dataset, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "dataset.json").write_text((dataset / "dataset.json").read_text())
    table = read_chips(dataset)
    table[table["split"] == "val"].assign(boxes=lambda t: t["boxes"].map(json.dumps)).to_csv(empty / "chips.csv",
                                                                                              index=False)
    path = write_config(tmp_path / "empty.yaml", empty)
    code, lines = run_main(capsys, "train", str(path), "-o", str(tmp_path / "r1"), "--events", "none")
    assert code == 2 and len(lines) == 1 and "no chips in the train split" in lines[0]

    other = tmp_path / "retina.pt"
    from aifactory.models import ARCHITECTURES

    entry = ARCHITECTURES.get("retinanet")
    torch.save(entry.func(entry.parse_params({}, "x"), 5, 4).state_dict(), other)
    unet = {"architecture": "unet", "weights": str(other), "params": {"encoder_depth": 3, "decoder_channels": [8] * 3}}
    path = write_config(tmp_path / "foreign.yaml", dataset, model=unet)
    code, lines = run_main(capsys, "train", str(path), "-o", str(tmp_path / "r2"), "--events", "none")
    assert code == 2 and len(lines) == 1 and "share no tensor" in lines[0]

    if not torch.cuda.is_available():
        path = write_config(tmp_path / "ok.yaml", dataset)
        code, lines = run_main(capsys, "train", str(path), "-o", str(tmp_path / "r3"), "--device", "cuda",
                               "--events", "none")
        assert code == 2 and lines == ["aifactory: error: --device cuda: CUDA is not available on this machine"]


def test_batch_of_one_for_batch_norm_after_global_pooling_is_one_line_exit_2(dataset, tmp_path, capsys):
    """DeepLabV3's image-level ASPP branch cannot train on one sample: torch's ValueError came as a traceback at
    the first step, after the run folder was made."""
    path = write_config(tmp_path / "one.yaml", dataset, batch_size=1,
                        model={"architecture": "deeplabv3", "params": {"encoder_depth": 3, "decoder_channels": 16}})
    code, lines = run_main(capsys, "train", str(path), "-o", str(tmp_path / "run"), "--events", "none")
    assert code == 2 and len(lines) == 1, lines
    assert "batch_size: 1: 'deeplabv3' batch-normalises a globally pooled feature" in lines[0]
    assert not (tmp_path / "run").exists()


def test_existing_run_needs_resume_and_same_config(dataset, tmp_path, capsys):
    path = write_config(tmp_path / "a.yaml", dataset, epochs=1, max_steps=2)
    assert run_main(capsys, "train", str(path), "-o", str(tmp_path / "run"), "--events", "none")[0] == 0
    code, lines = run_main(capsys, "train", str(path), "-o", str(tmp_path / "run"), "--events", "none")
    assert code == 2 and "already holds a run; pass --resume" in lines[0]
    changed = write_config(tmp_path / "b.yaml", dataset, epochs=1, max_steps=3)
    code, lines = run_main(capsys, "train", str(changed), "-o", str(tmp_path / "run"), "--resume",
                           "--events", "none")
    assert code == 2 and "config differs" in lines[0]
    code, lines = run_main(capsys, "train", str(path), "-o", str(tmp_path / "nothing"), "--resume", "--events", "none")
    assert code == 2 and "nothing to resume" in lines[0]


def test_checkpoint_write_failure_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    ckpt.save_checkpoint(ckpt.checkpoint_path(run, 1), {"model": {"w": torch.ones(3)}, "loop": {"step": 1}}, keep=2)

    def full_disk(obj, stream):  # checkpoints are saved through a stream (a constant archive name)
        stream.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(AIFactoryError, match=r"No space left on device.*previous checkpoint is intact"):
        ckpt.save_checkpoint(ckpt.checkpoint_path(run, 2), {"model": {}, "loop": {}}, keep=2)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000001.pt"]
    assert torch.equal(ckpt.latest_checkpoint(run)["model"]["w"], torch.ones(3))


def test_train_config_validates_without_importing_torch(dataset, tmp_path):
    path = write_config(tmp_path / "c.yaml", dataset)
    code = ("import sys; from aifactory.training import TrainConfig; c = TrainConfig.from_yaml(sys.argv[1]); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(c.model.architecture)")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "unet", result.stderr
    assert issubclass(TrainConfig, StrictModel)


def test_example_config_validates_and_builds():
    example = Path(__file__).resolve().parents[2] / "resources" / "examples" / "train.yaml"
    config = TrainConfig.from_yaml(example)
    assert Path(config.dataset).is_absolute() and config.model.architecture == "unet"
    from aifactory.models import ARCHITECTURES

    entry = ARCHITECTURES.get(config.model.architecture)
    model = entry.func(entry.parse_params(config.model.params, "example"), 4, 3)
    assert any(".gate_proj." in k for k in model.state_dict())
    ctx = LossContext(3, 255, config.class_weights)
    assert build_loss([(t.name, t.weight, t.params) for t in config.loss], ctx, "dense") is not None


def test_without_validation_chips_the_last_weights_are_the_model(dataset, tmp_path):
    folder = tmp_path / "train-only"
    folder.mkdir()
    for name in ("dataset.json", "images", "masks"):
        (folder / name).symlink_to(dataset / name)
    table = read_chips(dataset)
    table[table["split"] == "train"].assign(boxes=lambda t: t["boxes"].map(json.dumps)).to_csv(
        folder / "chips.csv", index=False)
    events = []
    config = TrainConfig.model_validate(config_data(folder, epochs=1, max_steps=2))
    with use_reporter(CallbackReporter(events.append)):
        run = train(config, tmp_path / "run", device="cpu")
    assert any(e["event"] == "log" and "no validation" in e["message"] for e in events)
    final = ckpt.latest_checkpoint(run)["model"]
    weights = torch.load(run / "model.pt", weights_only=True)
    assert all(torch.equal(weights[k], final[k]) for k in final)
