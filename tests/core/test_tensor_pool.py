"""The tensor pool (torch's large CPU blocks reused by size, within a cap): same results, blocks reused, cap kept,
and prediction still runs where it cannot be built. Each check runs in a fresh interpreter: the pool, once
installed, is the process's allocator for good."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from aifactory.errors import ConfigError
from aifactory.tensor_pool import cap_mb


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_the_pool_gives_the_same_outputs_and_reuses_the_blocks_of_the_last_pass():
    code = """
import json, torch, segmentation_models_pytorch as smp
from aifactory.tensor_pool import install_tensor_pool, pool_stats
torch.manual_seed(0)
model = smp.Unet("resnet18", encoder_weights=None, in_channels=4, classes=3).eval()
model = model.to(memory_format=torch.channels_last)
x = torch.randn(2, 4, 256, 256).contiguous(memory_format=torch.channels_last)
def run(bf16):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model(x).float()
before = [run(False), run(True)]
assert install_tensor_pool()
first = pool_stats()
after = [run(False), run(True), run(False)]
second = pool_stats()
print(json.dumps({"same": [bool(torch.equal(a, b)) for a, b in zip(before + before[:1], after)],
                  "first": first, "second": second}))
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["same"] == [True, True, True]
    second = result["second"]
    assert second["hits"] > second["misses"] > 0  # the third pass took back the first one's blocks
    assert 0 < second["cached_bytes"] <= second["cap_bytes"] == 512 << 20


def test_free_blocks_beyond_the_cap_are_released_oldest_first():
    code = """
import json, torch
from aifactory.tensor_pool import install_tensor_pool, pool_stats
assert install_tensor_pool()
for size in range(20):  # 20 blocks of 1-2 MB, all freed: more than the 4 MB cap
    torch.empty((1 << 18) + size * 4096, dtype=torch.float32)
again = torch.empty((1 << 18) + 19 * 4096, dtype=torch.float32)  # the newest free block is still there
print(json.dumps(pool_stats()))
"""
    done = run_python(code, {"AIFACTORY_TENSOR_POOL_MB": "4"})
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats["cap_bytes"] == 4 << 20 and stats["cached_bytes"] <= 4 << 20
    assert stats["evictions"] >= 16 and stats["hits"] == 1


def test_without_a_compiler_prediction_goes_on_without_the_pool(tmp_path):
    """Also past a build lock left by a killed build (torch would wait for it for ever)."""
    code = """
import os
from aifactory.tensor_pool import build_directory
lock = build_directory() / "lock"
lock.parent.mkdir(parents=True)
lock.touch()
os.utime(lock, (1e9, 1e9))
from aifactory.progress import CallbackReporter, use_reporter
from aifactory.tensor_pool import install_tensor_pool, pool_stats
events = []
with use_reporter(CallbackReporter(events.append)):
    installed = install_tensor_pool()
print([e["message"] for e in events if e.get("level") == "warning"])
print(installed, pool_stats())
"""
    done = run_python(code, {"AIFACTORY_CACHE": str(tmp_path / "cache"), "CXX": "/bin/false"}, timeout=120)
    assert done.returncode == 0, done.stderr
    warnings, outcome = done.stdout.strip().splitlines()[-2:]  # in seconds, not a timeout
    assert outcome == "False None"
    assert "tensor pool unavailable" in warnings and "predicting without it" in warnings


def test_an_unwritable_cache_is_a_warning_not_a_failure(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    code = """
from aifactory.tensor_pool import install_tensor_pool
print(install_tensor_pool())
"""
    done = run_python(code, {"AIFACTORY_CACHE": str(blocked)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_the_cap_variable(monkeypatch):
    monkeypatch.delenv("AIFACTORY_TENSOR_POOL_MB", raising=False)
    assert cap_mb() == 512
    monkeypatch.setenv("AIFACTORY_TENSOR_POOL_MB", "0")
    assert cap_mb() == 0
    monkeypatch.setenv("AIFACTORY_TENSOR_POOL_MB", "lots")
    with pytest.raises(ConfigError, match="AIFACTORY_TENSOR_POOL_MB='lots'"):
        cap_mb()


def test_each_installed_copy_of_the_source_builds_in_its_own_folder(monkeypatch, tmp_path):
    """torch rebuilds an extension whose source path changed: two installations must not share a build folder."""
    from aifactory import tensor_pool

    here = tensor_pool.build_directory()
    monkeypatch.setattr(tensor_pool, "SOURCE", tmp_path / "tensor_pool.cpp")
    elsewhere = tensor_pool.build_directory()
    assert here != elsewhere and here.parent == elsewhere.parent
