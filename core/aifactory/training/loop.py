"""The training loop: ``train(config, run_dir, resume=False, device="auto") -> run_dir``.

A small own loop rather than Lightning, Ignite or Accelerate. The requirement that shapes it is *exact*
resume after a SIGKILL: model, optimiser, scheduler, scaler, every RNG state and the position inside
the epoch, verified bit for bit by a test. Lightning's mid-epoch restart is not exact (its fault-tolerant
loops were removed in 2.0) and Ignite/Accelerate would still leave data order, per-sample augmentation and
RNG bookkeeping to us; what remains after those (AMP, channels-last, gradient accumulation, a scheduler
step) is a few lines of plain torch. The pieces it leans on are in sibling modules: data order and
seeds (:mod:`.data`), checkpoints (:mod:`.checkpoint`), task families (:mod:`.tasks`), losses,
metrics, run directory and MLflow tracking (:mod:`aifactory.tracking`).

Order of work in an epoch: optimiser steps (a checkpoint every ``checkpoint_every`` steps), then
validation, best-weights selection and early stopping, then an end-of-epoch checkpoint. A resumed run
restarts from the newest checkpoint and repeats exactly what the killed one did after it.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aifactory.config import dump_yaml
from aifactory.datasets.format import DatasetMeta, Normalization, read_meta
from aifactory.datasets.torch_dataset import ChipDataset
from aifactory.errors import AIFactoryError, ConfigError, InputError
from aifactory.heap import apply_heap_policy
from aifactory.io.atomic import write_text_atomic
from aifactory.io.output_paths import output_folder
from aifactory.models import ARCHITECTURES, TORCHVISION_FAMILIES, min_tile, task_of
from aifactory.models.base import load_weights, pooled_batch_norm
from aifactory.models.card import ModelCard, write_card
from aifactory.progress import reporter
from aifactory.tracking import Tracker
from aifactory.tracking.store import check_store
from aifactory.training import checkpoint as ckpt
from aifactory.training.augment import Augmenter
from aifactory.training.config import TrainConfig
from aifactory.training.data import Collate, EpochBatches, TrainingSamples, checked, make_loader, to_device
from aifactory.training.losses import LossContext, build_loss, check_loss
from aifactory.training.rundir import (
    MetricsLog,
    code_version,
    dataset_digest,
    now,
    package_versions,
    plot_curves,
    read_manifest,
    write_manifest,
)
from aifactory.training.tasks import ADAPTERS, LOSS_FAMILY, TaskAdapter

BEST = "best.pt"
#: Validation metrics each family reports (``monitor`` must be one of them); "loss" is minimised.
METRICS = {"segmentation": ("miou", "f1", "accuracy", "loss"), "contact": ("miou", "f1", "accuracy", "loss"),
           "heatmap": ("f1", "precision", "recall", "loss"), "detection": ("f1", "precision", "recall"),
           "instance": ("f1", "precision", "recall")}


#: how the dataset drew its labels: prediction needs it to turn scores back into objects
LABEL_KEYS = ("label_mode", "core_factor", "contact_class")

def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; asking for CUDA without it is a one-line error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine")
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"--device: expected auto, cpu or cuda, got {device!r}")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def lr_factor(config: TrainConfig, total_steps: int) -> Any:
    """LR multiplier per optimiser step: linear warm-up, then constant, cosine, poly or step decay."""
    sched = config.schedule

    def factor(step: int) -> float:
        if step < sched.warmup_steps:
            return (step + 1) / sched.warmup_steps
        if sched.name == "constant":
            return 1.0
        if sched.name == "step":
            return float(sched.gamma ** ((step - sched.warmup_steps) // sched.step_size))
        progress = min(1.0, (step - sched.warmup_steps) / max(1, total_steps - sched.warmup_steps))
        low = sched.min_lr_ratio
        if sched.name == "cosine":
            return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))
        return low + (1 - low) * (1 - progress) ** sched.power

    return factor


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    opt = config.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay, nesterov=True)
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay)
    return torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)


@dataclass
class Data:
    meta: DatasetMeta
    bands: list[int]
    train: ChipDataset
    val: ChipDataset | None


def load_data(config: TrainConfig, family: str, source: str) -> Data:
    """Dataset checks that fail early with one line: bands, emptiness, boxes, tile size, class weights."""
    root = Path(config.dataset)
    try:
        meta = read_meta(root)
    except AIFactoryError as exc:
        exc.args = (f"{source}: dataset: {exc} (a relative path is taken from the config file's folder)",)
        raise
    bands = config.bands or list(range(1, meta.bands + 1))
    wrong = [b for b in bands if not 1 <= b <= meta.bands]
    if wrong:
        raise ConfigError(f"{source}: bands: band {wrong[0]} requested, but dataset {root} has {meta.bands} bands")
    train = ChipDataset(root, "train")
    if len(train) == 0:
        raise InputError(f"{root}: the dataset has no chips in the train split")
    train.check_files()
    first, _ = train.read_raw(0)
    if first.shape[0] != meta.bands:
        raise InputError(f"{root / train.table.iloc[0]['image']}: chip has {first.shape[0]} bands, dataset.json "
                         f"says {meta.bands}")
    if family != "segmentation" and not any(len(b) for b in train.table["boxes"]):
        raise InputError(f"{root}: no boxes in the train split, and a {family} model learns from boxes")
    arch = config.model.architecture
    if meta.tile_size % 32 or meta.tile_size < min_tile(arch):
        raise InputError(f"{root}: tile size {meta.tile_size} does not fit {arch!r} "
                         f"(needs a multiple of 32, at least {min_tile(arch)})")
    if config.class_weights is not None and len(config.class_weights) != meta.num_classes:
        raise ConfigError(f"{source}: class_weights: {len(config.class_weights)} weights for "
                          f"{meta.num_classes} classes ({', '.join(meta.classes)})")
    val = ChipDataset(root, config.val_split)
    val.check_files()
    if not len(val):
        reporter().warning(f"{root}: no chips in the {config.val_split} split: no validation, no early stopping; "
                           f"model.pt will hold the last weights")
    return Data(meta, bands, train, val if len(val) else None)


def loss_terms(config: TrainConfig, family: str, where: str) -> list[tuple[str, float, dict[str, Any]]] | None:
    """The ``(name, weight, params)`` loss terms of the config, None for a family that computes its own losses."""
    loss_family = LOSS_FAMILY[family]
    if loss_family is None:
        if "loss" in config.model_fields_set:
            raise ConfigError(f"{where}loss: {config.model.architecture!r} computes its own losses; "
                              f"remove the loss key")
        return None
    if loss_family == "heatmap" and "loss" not in config.model_fields_set:
        return [("centernet", 1.0, {})]
    return [(t.name, t.weight, t.params) for t in config.loss]


def check_config(config: TrainConfig, source: str, prefix: str = "", *, weights: bool = True) -> tuple[str, Any]:
    """The model's family and parameters, after checking what needs no dataset: architecture, its parameters,
    loss terms and (``weights``) the starting weights file.

    ``al round`` runs it on its nested ``train`` config (``prefix="train."``) before round 1, so that a typo is
    not found only after the analyst has tagged.
    """
    where = f"{source}: {prefix}"
    arch = config.model.architecture
    family = task_of(arch, f"{where}model.architecture")
    params = ARCHITECTURES.get(arch).parse_params(config.model.params, f"{where}model.params")
    terms, loss_family = loss_terms(config, family, where), LOSS_FAMILY[family]
    if terms is not None and loss_family is not None:
        check_loss(terms, loss_family, f"{where}loss")
    if weights and config.model.weights and not Path(config.model.weights).is_file():
        raise InputError(f"{where}model.weights: {config.model.weights}: weights file not found")
    return family, params


def tracking_store(config: TrainConfig, tracking_uri: str | None, source: str) -> str | None:
    """The MLflow store of the run, checked now (None: the default next to the run directory): a wrong store
    given by the user is a one-line error before the training, where a failure later only turns tracking off."""
    if not config.tracking.enabled:
        return "none"
    uri = tracking_uri or config.tracking.uri
    if uri is None:
        return None
    try:
        return check_store(uri, write=True)
    except AIFactoryError as exc:
        exc.args = (f"{'--tracking-uri' if tracking_uri else f'{source}: tracking.uri'}: {exc}",)
        raise


def build_model(config: TrainConfig, params: Any, in_channels: int, num_classes: int, source: str) -> nn.Module:
    try:
        return ARCHITECTURES.get(config.model.architecture).func(params, in_channels, num_classes)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def check_batch(config: TrainConfig, model: nn.Module, data: Data, source: str) -> None:
    """Refuse training batches of one sample for a model that batch-normalises a globally pooled feature:
    torch would stop at the first step with a ValueError traceback (:func:`aifactory.models.base.pooled_batch_norm`).
    A split smaller than ``batch_size`` is one batch of that split (:class:`~aifactory.training.data.EpochBatches`)."""
    if min(config.batch_size, len(data.train)) > 1:
        return
    block = pooled_batch_norm(model)
    if block is None:
        return
    arch = config.model.architecture
    why = f"{arch!r} batch-normalises a globally pooled feature ({block}) and needs at least 2 samples a batch"
    if config.batch_size < 2:
        raise ConfigError(f"{source}: batch_size: 1: {why}; set batch_size: 2 or more")
    raise InputError(f"{config.dataset}: 1 chip in the train split: {why}")


def make_adapter(config: TrainConfig, family: str, meta: DatasetMeta, params: Any, source: str) -> TaskAdapter:
    ctx = LossContext(meta.num_classes, meta.ignore_index, config.class_weights)
    terms, loss_family = loss_terms(config, family, f"{source}: "), LOSS_FAMILY[family]
    loss_fn = None if terms is None or loss_family is None else build_loss(terms, ctx, loss_family, f"{source}: loss")
    return ADAPTERS[family](meta.num_classes, meta.ignore_index, loss_fn, config.validation,
                            stride=int(getattr(params, "stride", 1)))


def prepare_run_dir(config: TrainConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
    manifest = read_manifest(run_dir)
    if resume:
        if not manifest:
            raise InputError(f"{run_dir}: nothing to resume (no manifest.json)")
        if manifest.get("config_hash") != config.digest():
            raise ConfigError(f"{run_dir}: the config differs from the one this run started with "
                              f"({run_dir / 'config.yaml'}); resume with that config or start a new run")
    elif manifest:
        raise InputError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another -o")
    return manifest


def train(config: TrainConfig, run_dir: str | Path, resume: bool = False, device: str = "auto", *,
          tracking_uri: str | None = None, source: str = "config") -> Path:
    """Train ``config`` into ``run_dir`` (see :mod:`aifactory.training.rundir`); returns ``run_dir``.

    ``resume`` continues the run from its newest checkpoint, exactly. ``tracking_uri`` overrides
    ``config.tracking.uri`` (``"none"`` disables MLflow). ``source`` names the config in error lines.
    Relative paths in ``config`` are taken from the current directory.
    """
    apply_heap_policy("reuse")  # freed activations reused by the next step (aifactory.heap: 1.3–1.4× on CPU)
    config = config.resolved()
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    family, params = check_config(config, source, weights=not resume)
    tracking_uri = tracking_store(config, tracking_uri, source)
    manifest = prepare_run_dir(config, run_dir, resume)
    seed_everything(config.seed, config.deterministic)
    data = load_data(config, family, source)
    meta = data.meta
    model = build_model(config, params, len(data.bands), meta.num_classes, source)
    check_batch(config, model, data, source)
    adapter = make_adapter(config, family, meta, params, source)
    monitor = config.monitor or adapter.monitor
    if data.val is not None and monitor not in METRICS[family]:
        raise ConfigError(f"{source}: monitor: {monitor!r} is not a validation metric of {family} models "
                          f"({', '.join(METRICS[family])})")
    state = ckpt.latest_checkpoint(run_dir) if resume else None
    if config.model.weights and state is None:
        try:
            skipped = load_weights(model, config.model.weights, strict=config.model.strict_weights)
        except InputError as exc:
            raise InputError(f"{source}: model.weights: {exc}") from None
        if skipped:
            reporter().warning(f"{config.model.weights}: {len(skipped)} tensors not loaded (name or shape differ)")
    output_folder(run_dir)  # only now: a config or dataset refused above leaves no folder behind
    session = Session(config, run_dir, dev, family, data, model, params, adapter, monitor, manifest)
    return session.run(state, tracking_uri, resumed=resume)


class Session:
    """One training process: owns the model, optimiser, loaders, logs and tracker."""

    def __init__(self, config: TrainConfig, run_dir: Path, dev: torch.device, family: str, data: Data,
                 model: nn.Module, params: Any, adapter: TaskAdapter, monitor: str, manifest: dict[str, Any]):
        self.config, self.run_dir, self.dev, self.family = config, run_dir, dev, family
        self.data, self.params, self.adapter, self.monitor, self.manifest = data, params, adapter, monitor, manifest
        self.channels_last = config.channels_last and family not in TORCHVISION_FAMILIES
        self.model = model.to(dev)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.amp_dtype = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
        self.use_amp = config.amp and dev.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.optimizer = make_optimizer(config, self.model)
        collate = Collate(family, data.meta.num_classes, int(getattr(params, "stride", 1)))
        bands = [b - 1 for b in data.bands]
        augmenter = Augmenter(config.augment, data.meta.ignore_index)
        self.train_batches = EpochBatches(len(data.train), config.batch_size, config.seed)
        self.train_loader = make_loader(TrainingSamples(data.train, bands, augmenter, config.seed),
                                        self.train_batches, collate, config.num_workers, config.seed,
                                        dev.type == "cuda")
        self.val_loader = None
        if data.val is not None:
            self.val_batches = EpochBatches(len(data.val), config.batch_size, config.seed, shuffle=False,
                                            drop_last=False)
            self.val_loader = make_loader(TrainingSamples(data.val, bands, None, config.seed), self.val_batches,
                                          collate, config.num_workers, config.seed, dev.type == "cuda")
        self.batches_per_epoch = len(self.train_batches.batches(0))
        steps_per_epoch = math.ceil(self.batches_per_epoch / config.accumulate)
        self.total_steps = min(config.max_steps or 2**62, config.epochs * steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(config, self.total_steps))
        self.metrics = MetricsLog(run_dir / "metrics.jsonl")
        self.loop: dict[str, Any] = {"epoch": 0, "batch": 0, "step": 0, "best": None, "best_step": None,
                                     "bad_epochs": 0, "stop": False, "metrics_size": 0}
        #: micro-batch losses since the last ``train`` log line: checkpointed, so that a resumed run logs the
        #: same mean loss as an uninterrupted one when ``checkpoint_every`` is not a multiple of ``log_every``
        self.pending_losses: list[torch.Tensor] = []
        self.tracker = Tracker(None, config.tracking.experiment, run_dir)

    # -- checkpoints -------------------------------------------------------------------------------
    def _architecture_id(self) -> dict[str, Any]:
        return {"architecture": self.config.model.architecture, "params": self.params.model_dump(mode="json")}

    def save(self) -> None:
        self.loop["metrics_size"] = self.metrics.size()
        loop = {**self.loop, "pending_losses": [float(v) for v in self.pending_losses]}
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                 "rng": ckpt.rng_state(), "loop": loop, **self._architecture_id()}
        ckpt.save_checkpoint(ckpt.checkpoint_path(self.run_dir, self.loop["step"]), state,
                             self.config.keep_checkpoints)

    def restore(self, state: dict[str, Any]) -> None:
        expected = self._architecture_id()
        found = {"architecture": state.get("architecture"), "params": state.get("params")}
        if found != expected:
            raise InputError(f"{self.run_dir / ckpt.CHECKPOINT_DIR}: checkpoint is for architecture "
                             f"{found['architecture']!r} {found['params']}, not {expected['architecture']!r} "
                             f"{expected['params']}")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise InputError(f"{self.run_dir / ckpt.CHECKPOINT_DIR}: checkpoint does not fit the model: "
                             f"{str(exc).splitlines()[0]}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.loop = dict(state["loop"])
        # float32 losses round-trip exactly through Python floats (checkpoints of older runs have none)
        self.pending_losses = [torch.tensor(v, dtype=torch.float32, device=self.dev)
                               for v in self.loop.pop("pending_losses", [])]

    def save_weights(self, path: Path, weights: dict[str, torch.Tensor] | None = None) -> None:
        ckpt.save_tensors(path, weights if weights is not None else self.model.state_dict())

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, state: dict[str, Any] | None, tracking_uri: str | None, resumed: bool) -> Path:
        rep = reporter()
        if state is not None:
            self.restore(state)
            rep.log(f"resuming {self.run_dir} at epoch {self.loop['epoch'] + 1}, step {self.loop['step']}")
        self.metrics.truncate(self.loop["metrics_size"])
        self._start_manifest(resumed)
        self._start_tracking(tracking_uri)
        status = "FAILED"
        try:
            while self.loop["epoch"] < self.config.epochs and not self.loop["stop"]:
                self.train_epoch()
                self.end_epoch()
            self.finish()
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self.tracker.finish(status)
            self._set_manifest(status=status.lower(), ended=now())
            del self.train_loader, self.val_loader  # stops loader workers
        return self.run_dir

    def _autocast(self) -> Any:
        return torch.autocast(self.dev.type, dtype=self.amp_dtype, enabled=self.use_amp)

    def train_epoch(self) -> None:
        config, loop, rep = self.config, self.loop, reporter()
        epoch = loop["epoch"]
        self.train_batches.set_position(epoch, loop["batch"])
        self.model.train()
        if loop["step"] >= self.total_steps:
            # resumed from the checkpoint of the last step (stopped during the last validation): only the
            # epoch's end is left, not one more step
            loop["stop"] = True
            return
        batches = checked(self.train_loader)
        losses = self.pending_losses
        wait = 0.0
        started = time.perf_counter()
        samples = 0
        for index in range(loop["batch"], self.batches_per_epoch):
            before = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - before
            batch = to_device(batch, self.dev, self.channels_last)
            with self._autocast():
                loss = self.adapter.loss(self.model, batch)
            self.scaler.scale(loss / config.accumulate).backward()
            loss = loss.detach()
            losses.append(loss)
            samples += len(batch["image"])
            if (index + 1) % config.accumulate and index + 1 < self.batches_per_epoch:
                continue
            self.optimizer_step()
            loop["step"] += 1
            loop["batch"] = index + 1
            if loop["step"] % config.log_every == 0 or index + 1 == self.batches_per_epoch:
                elapsed = time.perf_counter() - started
                mean_loss = float(torch.stack(losses).float().mean())
                if not math.isfinite(mean_loss):
                    raise AIFactoryError(f"training diverged: loss is {mean_loss} at step {loop['step']}; "
                                         f"lower optimizer.lr or check the data")
                self.log("train", {"loss": mean_loss, "lr": self.scheduler.get_last_lr()[0],
                                   "data_wait": wait / max(elapsed, 1e-9), "samples_per_s": samples / elapsed})
                losses.clear()
                wait, samples, started = 0.0, 0, time.perf_counter()
            best = f", best {self.monitor} {loop['best']:.3f}" if loop["best"] is not None else ""
            rep.progress("train", loop["step"] / self.total_steps,
                         f"epoch {epoch + 1}/{config.epochs} loss {loss.item():.4f}{best}")
            if loop["step"] % config.checkpoint_every == 0:
                self.save()
            if loop["step"] >= self.total_steps:
                loop["stop"] = True
                break

    def optimizer_step(self) -> None:
        if self.config.optimizer.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optimizer.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def log(self, split: str, values: dict[str, Any]) -> None:
        record = {"split": split, "step": self.loop["step"], "epoch": self.loop["epoch"], **values}
        self.metrics.append(record)
        numeric = {f"{split}/{k}": float(v) for k, v in values.items() if isinstance(v, int | float)}
        for name, value in numeric.items():
            reporter().metric(name, value, self.loop["step"])
        self.tracker.log_metrics(numeric, self.loop["step"])

    def validate(self) -> dict[str, Any]:
        assert self.val_loader is not None
        self.model.eval()
        meter = self.adapter.meter()
        losses = []
        self.val_batches.set_position(0)
        with torch.no_grad(), self._autocast():
            for batch in reporter().track(checked(self.val_loader), task="validate", total=len(self.val_loader)):
                loss = self.adapter.validate(self.model, to_device(batch, self.dev, self.channels_last), meter)
                if loss is not None:
                    losses.append(float(loss))
        self.model.train()
        result: dict[str, Any] = meter.compute()
        if losses:
            result["loss"] = float(np.mean(losses))
        return result

    def end_epoch(self) -> None:
        loop, config = self.loop, self.config
        last = loop["stop"] or loop["epoch"] + 1 == config.epochs
        if self.val_loader is not None and ((loop["epoch"] + 1) % config.validation.every == 0 or last):
            result = self.validate()
            self.log("val", result)
            self.select_best(result[self.monitor])
        loop["epoch"] += 1
        loop["batch"] = 0
        self.save()

    def select_best(self, value: float) -> None:
        loop = self.loop
        delta = self.config.early_stopping.min_delta if self.config.early_stopping else 0.0
        sign = -1.0 if self.monitor == "loss" else 1.0
        if loop["best"] is None or sign * (value - loop["best"]) > delta:
            loop["best"], loop["best_step"], loop["bad_epochs"] = value, loop["step"], 0
            self.save_weights(self.run_dir / ckpt.CHECKPOINT_DIR / BEST)
        else:
            loop["bad_epochs"] += 1
            if self.config.early_stopping and loop["bad_epochs"] >= self.config.early_stopping.patience:
                reporter().log(f"early stopping: no {self.monitor} improvement in {loop['bad_epochs']} validations")
                loop["stop"] = True

    # -- run directory -----------------------------------------------------------------------------
    def _set_manifest(self, **values: Any) -> None:
        self.manifest.update(values)
        write_manifest(self.run_dir, self.manifest)

    def _start_manifest(self, resumed: bool) -> None:
        config = self.config
        if not self.manifest:
            write_text_atomic(self.run_dir / "config.yaml", dump_yaml(config))
            self.manifest = {
                "code": code_version(), "config_hash": config.digest(),
                "dataset": {"path": config.dataset, "sha256": dataset_digest(Path(config.dataset))},
                "packages": package_versions(), "heap": apply_heap_policy("reuse"),
                "seed": config.seed, "deterministic": config.deterministic,
                "architecture": config.model.architecture, "task": self.family, "started": now(), "resumes": [],
            }
        device = {"type": self.dev.type, "torch_threads": torch.get_num_threads(), "amp": self.use_amp,
                  "channels_last": self.channels_last}
        if self.dev.type == "cuda":
            device["name"] = torch.cuda.get_device_name(self.dev)
        if resumed and "device" in self.manifest:
            # "device" stays where the run started; each resume records its own (a run started on a GPU
            # and resumed on a CPU must not lose the first)
            self.manifest.setdefault("resumes", []).append({"at": now(), "step": self.loop["step"],
                                                            "code": code_version(), "device": device})
            self._set_manifest(status="running")
            return
        self._set_manifest(device=device, status="running")

    def _start_tracking(self, tracking_uri: str | None) -> None:
        """``tracking_uri``: the store :func:`tracking_store` checked."""
        self.tracker = Tracker(tracking_uri, self.config.tracking.experiment, self.run_dir)
        code = self.manifest["code"]
        run_id = self.tracker.start(self.config.model_dump(mode="json"),
                                    {"aifactory.run_dir": str(self.run_dir.resolve()),
                                     "aifactory.commit": str(code.get("commit")), "aifactory.task": self.family},
                                    run_id=self.manifest.get("mlflow", {}).get("run_id"))
        if run_id is not None:
            self._set_manifest(mlflow={"uri": self.tracker.uri, "run_id": run_id})

    def finish(self) -> None:
        rep, meta, loop = reporter(), self.data.meta, self.loop
        best_path = self.run_dir / ckpt.CHECKPOINT_DIR / BEST
        weights = torch.load(best_path, map_location="cpu", weights_only=True) if best_path.is_file() else None
        self.save_weights(self.run_dir / "model.pt", weights)
        selected = [b - 1 for b in self.data.bands]
        card = ModelCard(
            architecture=self.config.model.architecture, params=self.params.model_dump(mode="json"),
            task=self.family, in_channels=len(selected), num_classes=meta.num_classes, classes=meta.classes,  # type: ignore[arg-type]
            bands=self.data.bands,
            normalization=Normalization(mean=[meta.normalization.mean[b] for b in selected],
                                        std=[meta.normalization.std[b] for b in selected]),
            tile_size=meta.tile_size, gsd=meta.gsd, ignore_index=meta.ignore_index,
            extra={**{key: meta.extra[key] for key in LABEL_KEYS if key in meta.extra},
                   "monitor": self.monitor, "best": loop["best"], "best_step": loop["best_step"],
                   "steps": loop["step"], "band_names": [meta.band_names[b] for b in selected
                                                         if b < len(meta.band_names)]})
        write_card(card, self.run_dir)
        report = plot_curves(self.metrics.records(), self.monitor, self.run_dir / "report" / "curves.png")
        for kind, path in (("model", self.run_dir / "model.pt"), ("model_card", self.run_dir / "model.json"),
                           ("report", report)):
            rep.artifact(kind, path)
        for path in (self.run_dir / "model.json", self.run_dir / "config.yaml", report):
            self.tracker.log_artifact(path)
        self._set_manifest(best={"metric": self.monitor, "value": loop["best"], "step": loop["best_step"]},
                           steps=loop["step"], epochs=loop["epoch"])
        rep.log(f"trained {self.config.model.architecture} for {loop['step']} steps; "
                f"best {self.monitor} = {loop['best']}; run in {self.run_dir}")
