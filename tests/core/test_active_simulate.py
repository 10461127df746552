"""A miniature label-efficiency simulation (tiny synthetic scene, 2 rounds, 2 training steps per round):
what it writes, that strategies share the seed round and grow their own labelled sets from the pool only,
and that a re-run resumes without training again."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from aifactory.active.simulate import simulate
from aifactory.errors import InputError
from test_active_support import TILE, TRAIN, make_scene


def test_mini_simulation_curve_summary_and_resume(tmp_path, cli):
    make_scene(tmp_path)
    config = {
        "dataset": {"sources": [{"raster": "scene.tif", "labels": "truth.gpkg", "layer": "truth"}],
                    "chips": {"size": TILE},
                    "split": {"fractions": {"train": 1.0}, "holdout": [{"path": "test.gpkg"}]}},
        "train": TRAIN,
        "simulation": {"seed_tiles": 3, "per_round": 3, "rounds": 2, "repetitions": 1, "strategies": ["entropy"]},
    }
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    summary = simulate(path, out, device="cpu").data

    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [(r["strategy"], r["round"]) for r in records] == [
        ("seed", 0), ("random", 1), ("random", 2), ("entropy", 1), ("entropy", 2)]
    pool = pd.read_csv(out / "pool" / "chips.csv")
    pool_ids, test_ids = set(pool.query("split == 'train'")["chip_id"]), set(pool.query("split == 'test'")["chip_id"])
    assert len(test_ids) == 5 and len(pool_ids) == 15                  # the bottom tile row is the test area
    for strategy in ("random", "entropy"):
        sets = [set(records[0]["labelled"])] + [set(r["labelled"]) for r in records if r["strategy"] == strategy]
        assert [len(s) for s in sets] == [3, 6, 9]
        assert sets[0] < sets[1] < sets[2] and sets[2] <= pool_ids     # grows from the pool, never the test area

    curve = pd.read_csv(out / "curve.csv")
    assert list(curve.columns) == ["strategy", "round", "labelled_tiles", "f1_mean", "f1_std", "f1_min", "f1_max",
                                   "miou_mean", "repetitions"]
    assert curve["strategy"].tolist() == ["random"] * 3 + ["entropy"] * 3
    assert curve["labelled_tiles"].tolist() == [3, 6, 9] * 2
    assert curve.iloc[0]["f1_mean"] == curve.iloc[3]["f1_mean"] == pytest.approx(records[0]["f1"])  # shared seed round
    assert curve["f1_mean"].between(0, 1).all()
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    random_final = curve.iloc[2]["f1_mean"]
    assert summary["random"] == {"final_f1": pytest.approx(random_final), "final_f1_std": 0.0, "final_tiles": 9}
    entropy = summary["strategies"]["entropy"]
    reached = curve[(curve["strategy"] == "entropy") & (curve["f1_mean"] >= random_final)]
    expected = int(reached.iloc[0]["labelled_tiles"]) if len(reached) else None
    assert entropy["tiles_to_match_random"] == expected
    assert entropy["fraction_of_random_labels"] == (expected / 9 if expected else None)
    assert json.loads((out / "summary.json").read_text())["pool_tiles"] == 15

    # a re-run resumes: nothing is trained again, the same figures come out (through the CLI this time)
    before = (out / "records.jsonl").stat().st_mtime_ns
    result = cli("al", "simulate", str(path), "-o", str(out), "--device", "cpu", "--events", "none")
    assert result.returncode == 0, result.stderr
    assert (out / "records.jsonl").stat().st_mtime_ns == before
    assert result.stdout.splitlines()[1].startswith(f"random: F1 {random_final:.3f}")
    # another config never mixes into the same folder
    path.write_text(yaml.safe_dump({**config, "simulation": {**config["simulation"], "rounds": 1}}))
    with pytest.raises(InputError, match="holds a simulation of another config"):
        simulate(path, out, device="cpu")
