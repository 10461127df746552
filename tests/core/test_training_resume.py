"""Exact resume: a training killed with SIGKILL at a random step and resumed ends bit-identical to an
uninterrupted one (CPU, deterministic mode), with dropout, augmentation, gradient accumulation and a
data-loader worker in play."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

import pytest
import torch
from aifactory.progress import CallbackReporter, use_reporter
from aifactory.training import TrainConfig, train
from aifactory.training import checkpoint as ckpt
from test_training_support import config_data, make_dataset, write_config

TIMING = {"data_wait", "samples_per_s"}
STEPS = 9  # 25 train chips, batch 4 (6 batches, last partial dropped), accumulate 2 → 3 steps × 3 epochs


def command(config, run_dir, *extra):
    return [sys.executable, "-m", "aifactory.cli", "train", str(config), "-o", str(run_dir), *extra]


def records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tmp_path, cli):
    dataset = make_dataset(tmp_path / "data")
    config = write_config(
        tmp_path / "train.yaml", dataset,
        model={"architecture": "fpn", "params": {"encoder_depth": 3, "pyramid_channels": 32,
                                                 "segmentation_channels": 32, "dropout": 0.3}},
        epochs=3, batch_size=4, accumulate=2, num_workers=1, checkpoint_every=1, keep_checkpoints=2,
        deterministic=True, augment={"scale": [0.8, 1.25], "brightness": 0.1, "contrast": 0.1},
        schedule={"name": "cosine", "warmup_steps": 2})
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    result = cli("train", str(config), "-o", str(reference), "--events", "none")
    assert result.returncode == 0, result.stderr

    seed = random.randrange(1 << 30)
    kill_at = random.Random(seed).randint(2, STEPS - 2)
    proc = subprocess.Popen(command(config, killed, "--events", "jsonl"), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "metric" and event["name"] == "train/loss" and event["step"] >= kill_at:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.stdout.close()
    assert proc.wait(timeout=60) == -signal.SIGKILL, f"not killed (seed {seed})"
    assert not (killed / "model.pt").exists()
    assert ckpt.list_checkpoints(killed), f"no checkpoint before step {kill_at} (seed {seed})"

    # resumed under the other heap policy: how glibc keeps freed memory must not change a bit of the run
    result = cli("train", str(config), "-o", str(killed), "--resume", "--events", "none",
                 env={"AIFACTORY_HEAP": "lean"})
    assert result.returncode == 0, result.stderr
    assert json.loads((reference / "manifest.json").read_text())["heap"] == "reuse"  # training's default

    for name in ("model.pt", "checkpoints/best.pt"):
        ours = torch.load(killed / name, weights_only=True)
        theirs = torch.load(reference / name, weights_only=True)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), f"{name} differs (seed {seed}, kill {kill_at})"
    last_ours = ckpt.latest_checkpoint(killed)
    last_theirs = ckpt.latest_checkpoint(reference)
    assert last_ours is not None and last_theirs is not None
    loop_ours, loop_theirs = ({k: v for k, v in c["loop"].items() if k != "metrics_size"}  # log has timings
                              for c in (last_ours, last_theirs))
    assert loop_ours == loop_theirs and loop_ours["step"] == STEPS
    assert torch.equal(last_ours["rng"]["torch"], last_theirs["rng"]["torch"])
    assert records(killed) == records(reference), f"metrics differ (seed {seed}, kill {kill_at})"
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["status"] == "finished" and len(manifest["resumes"]) == 1


class _Stop(KeyboardInterrupt):
    """What a SIGTERM becomes inside a command (a KeyboardInterrupt subclass unwinds the same way)."""


def _stop_when(predicate):
    def callback(event):
        if predicate(event):
            raise _Stop

    return CallbackReporter(callback)


def test_stopped_between_log_lines_and_during_the_last_validation_resumes_exactly(tmp_path):
    """A checkpoint that falls between two log lines must carry the losses of the steps since the last line
    (else the resumed run logs another mean loss), and a run stopped during its final validation (after the
    checkpoint of its last step) must not resume with one step more than ``max_steps``. model.pt is then
    byte-identical to an uninterrupted run's (not only equal tensors: checksums of it are reproducible), and
    the manifest keeps the device of the start and of each resume."""
    dataset = make_dataset(tmp_path / "data")
    config = TrainConfig.model_validate(config_data(
        dataset, model={"architecture": "unet", "params": {"encoder_depth": 3, "decoder_channels": [8, 8, 8]}},
        epochs=1, max_steps=5, batch_size=2, log_every=2, checkpoint_every=1, deterministic=True))
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    train(config, reference, device="cpu")

    # stopped just after the line of step 4: the checkpoint of step 3 holds the loss of step 3
    at_step_4 = _stop_when(lambda e: e["event"] == "metric" and e["name"] == "train/loss" and e["step"] == 4)
    with use_reporter(at_step_4), pytest.raises(KeyboardInterrupt):
        train(config, stopped, device="cpu")
    assert ckpt.latest_checkpoint(stopped)["loop"]["step"] == 3
    # stopped during the final validation, after the checkpoint of step 5 (max_steps)
    validating = _stop_when(lambda e: e["event"] == "progress" and e["task"] == "validate")
    with use_reporter(validating), pytest.raises(KeyboardInterrupt):
        train(config, stopped, resume=True, device="cpu")
    assert ckpt.latest_checkpoint(stopped)["loop"]["step"] == 5
    train(config, stopped, resume=True, device="cpu")

    assert records(stopped) == records(reference)
    manifest = json.loads((stopped / "manifest.json").read_text())
    assert manifest["steps"] == 5 and manifest["status"] == "finished" and len(manifest["resumes"]) == 2
    assert manifest["device"]["type"] == "cpu" and all(r["device"]["type"] == "cpu" for r in manifest["resumes"])
    assert (stopped / "model.pt").read_bytes() == (reference / "model.pt").read_bytes()
