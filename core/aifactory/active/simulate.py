"""``al simulate``: how many labels each strategy needs, measured on a fully labelled dataset.

The dataset config is built once into ``DIR/pool`` with chips the size of the tagging tiles, no overlap
and every chip kept: its ``train`` split is the pool an annotator would tag from, its ``test`` split the
held-out area every round is scored on (``val`` is not used). Each repetition draws a random seed set,
trains round 0 on it (shared by every strategy of that repetition), then each strategy — and random
sampling with the same seed set, budget and seeds — runs ``rounds`` rounds: score the unlabelled pool with
the last model (:class:`~aifactory.active.scoring.TileScorer`, as ``al select`` does), label the
``per_round`` tiles it picks (their labels are already known), retrain, score on the test chips.

Training is the real trainer on a view of the pool: ``DIR/runs/.../dataset`` holds ``dataset.json`` and a
``chips.csv`` of the labelled chips whose image and mask paths point (absolute) at the pool's files, so no
chip is copied. With ``warm_start`` (default) each round continues from the previous round's weights for
``max_steps`` more steps, as a project retraining after each tagging session would; without it every
round starts from scratch. The metric is the trainer's own validation F1 (mean over foreground classes)
on the test chips' labels, in the label mode the model learns (e.g. crown cores for ``core``).

Outputs: ``records.jsonl`` (one line per repetition × strategy × round, with the labelled chip ids; a
re-run with the same config resumes after the last line), ``curve.csv`` (mean, standard deviation, min and
max over repetitions per strategy and round), ``curve.png`` and ``summary.json`` — for each strategy its
final F1 and the fraction of random sampling's final label count it needed to reach random's final F1.

This stage imports datasets (the pool), training (the trainer and its confusion matrix) and models.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from pydantic import Field, field_validator

from aifactory.active.options import SelectOptions
from aifactory.active.plots import curve_figure, save
from aifactory.config import StrictModel, load_yaml, validate
from aifactory.datasets.config import DatasetConfig, resolve_paths
from aifactory.errors import ConfigError, InputError
from aifactory.io.atomic import write_text_atomic
from aifactory.io.output_paths import output_folder
from aifactory.progress import Reporter, reporter, use_reporter
from aifactory.training.config import TrainConfig

SEED_LABEL = "seed"
KEEP_ALL_NEGATIVES = 1e9


class SimulationPlan(StrictModel):
    seed_tiles: int = Field(default=8, ge=1, description="randomly drawn tiles labelled before round 1")
    per_round: int = Field(default=8, ge=1, description="tiles labelled per round")
    rounds: int = Field(default=4, ge=1)
    repetitions: int = Field(default=3, ge=1, description="independent seed sets (the spread of the curves)")
    strategies: list[SelectOptions] = Field(default_factory=lambda: [SelectOptions()],
                                            description="compared with random sampling (always added)")
    warm_start: bool = True
    seed: int = 0

    @field_validator("strategies", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return [{"strategy": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value


class SimulateConfig(StrictModel):
    dataset: DatasetConfig = Field(description="fully labelled; chips.size is the tile size; test = evaluation")
    train: dict[str, Any] = Field(description="a training config without 'dataset' (the budget of one round)")
    simulation: SimulationPlan = Field(default_factory=SimulationPlan)


def prepare_simulation(data: dict[str, Any], source: str, base: Path) -> tuple[SimulateConfig, TrainConfig]:
    """Validate a simulation config (relative paths from ``base``) and its per-round training config."""
    config = validate(SimulateConfig, data, source)
    if "dataset" in config.train:
        raise ConfigError(f"{source}: train.dataset: the simulation builds the datasets; remove the key")
    train = validate(TrainConfig, {**config.train, "dataset": "."}, source, prefix="train")
    labels = [s.label for s in config.simulation.strategies]
    if len(set(labels)) != len(labels) or "random" in labels:
        raise ConfigError(f"{source}: simulation.strategies: each strategy once, and not random (always run)")
    dataset = resolve_paths(config.dataset, base)
    chips = dataset.chips.model_copy(update={"overlap": 0, "negative_ratio": KEEP_ALL_NEGATIVES})
    return config.model_copy(update={"dataset": dataset.model_copy(update={"chips": chips})}), train


def load_simulation(path: str | Path) -> tuple[SimulateConfig, TrainConfig]:
    path = Path(path)
    return prepare_simulation(load_yaml(path), str(path), path.resolve().parent)


class OnceReporter(Reporter):
    """Forwards to ``inner``, each warning once (the simulation folder's paths stripped), info lines of the
    inner steps (trainings, selections) dropped: a simulation repeats them dozens of times."""

    def __init__(self, inner: Reporter, folder: Path) -> None:
        self.inner, self.folder = inner, str(folder)
        self.seen: set[str] = set()

    def emit(self, event: dict[str, Any]) -> None:
        if event["event"] == "log":
            if event.get("level") == "info":
                return
            key = re.sub(r"\S*" + re.escape(self.folder) + r"\S*", "…", event["message"])
            if key in self.seen:
                return
            self.seen.add(key)
        if event["event"] in ("metric", "artifact"):
            return
        self.inner.emit(event)


@dataclass
class Pool:
    """The pool dataset: train chips to pick from, test chips to score on, tile centres and groups."""

    root: Path
    chips: pd.DataFrame
    test: pd.DataFrame
    meta: dict[str, Any]
    centres: np.ndarray = field(init=False)
    groups: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        centroids = shapely.centroid(shapely.from_wkt(self.chips["footprint_wkt"].to_numpy()))
        self.centres = shapely.get_coordinates(centroids)
        self.groups = np.where(self.chips["source_crs"] != "", self.chips["source_crs"],
                               "pixel:" + self.chips["source"].astype(str)).astype(str)

    @property
    def ids(self) -> list[str]:
        return self.chips["chip_id"].tolist()


def build_pool(config: SimulateConfig, out: Path) -> Pool:
    """Build (once) the fully labelled pool; reuse it when it exists."""
    from aifactory.datasets.export import build_dataset
    from aifactory.datasets.format import read_chips

    root = out / "pool"
    if not (root / "dataset.json").is_file():
        build_dataset(config.dataset, root)
    chips = read_chips(root)
    pool, test = chips[chips["split"] == "train"], chips[chips["split"] == "test"]
    if test.empty:
        raise InputError(f"{root}: no test chips: give the dataset a test split (split.fractions.test or "
                         "split.holdout) to score the rounds on")
    return Pool(root, pool.reset_index(drop=True), test.reset_index(drop=True),
                json.loads((root / "dataset.json").read_text()))


def write_view(pool: Pool, labelled: list[str], folder: Path) -> Path:
    """A dataset folder training on the ``labelled`` pool chips (paths point at the pool's files)."""
    from aifactory.datasets.format import write_chips

    folder.mkdir(parents=True, exist_ok=True)
    chips = pool.chips.set_index("chip_id").loc[labelled].reset_index()
    for column in ("image", "mask"):
        chips[column] = [str(pool.root / rel) for rel in chips[column]]
    meta = {**pool.meta, "splits": {"train": len(chips), "val": 0, "test": 0}}
    write_chips(chips, folder / "chips.csv")
    write_text_atomic(folder / "dataset.json", json.dumps(meta, indent=2))
    return folder


def evaluate_chips(run: Path, pool: Pool, device: str, batch_size: int = 16) -> dict[str, float]:
    """The trainer's validation metrics (foreground F1, mean IoU) of ``run`` on the pool's test chips."""
    import torch

    from aifactory.datasets.torch_dataset import ChipDataset
    from aifactory.models.card import load_run_model
    from aifactory.prediction.runtime import select_device
    from aifactory.training.metrics import ConfusionMatrix

    dev = select_device(device)
    model, card = load_run_model(run, device=dev)
    test = ChipDataset(pool.root, "test")
    bands = [b - 1 for b in card.bands]
    matrix = ConfusionMatrix(card.num_classes, card.ignore_index)
    with torch.inference_mode():
        for start in range(0, len(test), batch_size):
            samples = [test[i] for i in range(start, min(start + batch_size, len(test)))]
            x = torch.stack([s["image"][bands] for s in samples]).to(dev)
            matrix.update(model(x).argmax(1).cpu(), torch.stack([s["mask"] for s in samples]))
    result = matrix.compute()
    return {"f1": result["f1"], "miou": result["miou"]}


def pool_batches(pool: Pool, keys: list[int], bands: list[int] | None, batch_size: int
                 ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
    """``(keys, raw data, valid)`` batches of pool chips, as ``al select`` reads raster tiles."""
    from aifactory.datasets.format import IGNORE_INDEX
    from aifactory.datasets.torch_dataset import ChipDataset

    reader = ChipDataset(pool.root, "train")
    for start in range(0, len(keys), batch_size):
        part = keys[start:start + batch_size]
        raws = [reader.read_raw(k) for k in part]
        data = np.stack([image if bands is None else image[[b - 1 for b in bands]] for image, _ in raws])
        yield part, data.astype("float32"), np.stack([mask != IGNORE_INDEX for _, mask in raws])


def pick(pool: Pool, run: Path, labelled: list[str], options: SelectOptions, n: int, device: str) -> list[str]:
    """The ``n`` unlabelled pool chips ``options`` would have an annotator tag next."""
    from aifactory.active.diversity import choose
    from aifactory.active.scoring import TileScorer
    from aifactory.active.select import score_batches

    embed = options.diversity == "kcenter"
    scorer = TileScorer(run, options, embed=embed, device=device)
    done = set(labelled)
    open_keys = [i for i, chip in enumerate(pool.ids) if chip not in done]
    labelled_keys = [i for i, chip in enumerate(pool.ids) if chip in done]
    wanted = open_keys + (labelled_keys if embed else [])
    scored = score_batches(scorer, pool_batches(pool, wanted, scorer.bands, options.batch_size), len(wanted),
                           task="score pool")
    is_open = np.isin(scored.keys, open_keys)
    candidates = scored.keys[is_open]
    embeddings = scored.embeddings[is_open] if scored.embeddings is not None else None
    known = scored.embeddings[~is_open] if scored.embeddings is not None and (~is_open).any() else None
    chosen = choose(scored.scores[is_open], n, diversity=options.diversity, embeddings=embeddings, labelled=known,
                    top_m=options.top_m, centres=pool.centres[candidates], groups=pool.groups[candidates],
                    min_distance=options.min_distance)
    return [pool.ids[int(candidates[i])] for i in chosen]


class Simulator:
    """Runs (and resumes) the rounds of every repetition and strategy; records go to ``records.jsonl``."""

    def __init__(self, config: SimulateConfig, train: TrainConfig, out: Path, device: str) -> None:
        self.config, self.train_config, self.out, self.device = config, train, out, device
        self.plan = config.simulation
        self.strategies = [SelectOptions(strategy="random"), *self.plan.strategies]
        self.records_path = out / "records.jsonl"
        self.records = ([json.loads(line) for line in self.records_path.read_text().splitlines() if line.strip()]
                        if self.records_path.is_file() else [])
        self.pool: Pool | None = None
        self.done = 0
        self.total = self.plan.repetitions * (1 + len(self.strategies) * self.plan.rounds)

    def record(self, entry: dict[str, Any]) -> None:
        self.records.append(entry)
        write_text_atomic(self.records_path, "".join(json.dumps(r) + "\n" for r in self.records))

    def find(self, repetition: int, strategy: str, round_number: int) -> dict[str, Any] | None:
        return next((r for r in self.records if (r["repetition"], r["strategy"], r["round"])
                     == (repetition, strategy, round_number)), None)

    def train_and_score(self, labelled: list[str], folder: Path, seed: int, previous: Path | None) -> dict[str, Any]:
        from aifactory.training.loop import train

        assert self.pool is not None
        started = time.monotonic()
        if folder.exists():  # an attempt killed before its record: start it again
            shutil.rmtree(folder)
        view = write_view(self.pool, labelled, folder / "dataset")
        config = self.train_config
        model = config.model
        if previous is not None and self.plan.warm_start:
            model = model.model_copy(update={"weights": str(previous / "model.pt")})
        config = config.model_copy(update={"dataset": str(view), "model": model, "seed": seed,
                                           "batch_size": min(config.batch_size, len(labelled))})
        run = train(config, folder / "run", device=self.device, source="simulation: train")
        shutil.rmtree(run / "checkpoints", ignore_errors=True)  # model.pt is what later rounds need
        metrics = evaluate_chips(run, self.pool, self.device)
        self.done += 1
        reporter().progress("simulate", self.done / self.total,
                            f"{len(labelled)} tiles: F1 {metrics['f1']:.3f}")
        return {"labelled_tiles": len(labelled), **metrics, "run": str(run), "labelled": labelled,
                "seconds": round(time.monotonic() - started, 1)}

    def run(self) -> None:
        self.pool = build_pool(self.config, self.out)
        plan = self.plan
        if plan.seed_tiles + plan.per_round * plan.rounds > len(self.pool.ids):
            raise InputError(f"simulation: {plan.seed_tiles} seed tiles + {plan.rounds} rounds × {plan.per_round} "
                             f"need {plan.seed_tiles + plan.per_round * plan.rounds} tiles, the pool has "
                             f"{len(self.pool.ids)}")
        reporter().log(f"pool: {len(self.pool.ids)} tiles, test: {len(self.pool.test)} tiles")
        for repetition in range(plan.repetitions):
            seed = plan.seed + repetition
            base = self.find(repetition, SEED_LABEL, 0)
            if base is None:
                rng = np.random.default_rng(seed)
                seeds = sorted(rng.choice(self.pool.ids, size=plan.seed_tiles, replace=False).tolist())
                base = {"repetition": repetition, "strategy": SEED_LABEL, "round": 0,
                        **self.train_and_score(seeds, self.out / "runs" / f"rep-{repetition}" / "round-0", seed,
                                               None)}
                self.record(base)
            else:
                self.done += 1
            for options in self.strategies:
                self.run_strategy(repetition, options, base)

    def run_strategy(self, repetition: int, options: SelectOptions, base: dict[str, Any]) -> None:
        last = base
        for round_number in range(1, self.plan.rounds + 1):
            found = self.find(repetition, options.label, round_number)
            if found is not None:
                last, self.done = found, self.done + 1
                continue
            assert self.pool is not None
            seed = self.plan.seed + repetition
            round_options = options.model_copy(update={"seed": seed * 1000 + round_number})
            labelled = last["labelled"] + pick(self.pool, Path(last["run"]), last["labelled"], round_options,
                                               self.plan.per_round, self.device)
            folder = self.out / "runs" / f"rep-{repetition}" / options.label / f"round-{round_number}"
            last = {"repetition": repetition, "strategy": options.label, "round": round_number,
                    **self.train_and_score(labelled, folder, seed, Path(last["run"]))}
            self.record(last)


@dataclass
class Summary:
    data: dict[str, Any]

    def lines(self) -> list[str]:
        d = self.data
        out = [f"pool {d['pool_tiles']} tiles, test {d['test_tiles']} tiles; {d['repetitions']} repetitions, "
               f"{d['seconds'] / 60:.1f} min",
               f"random: F1 {d['random']['final_f1']:.3f} ± {d['random']['final_f1_std']:.3f} "
               f"with {d['random']['final_tiles']} tiles"]
        for name, s in d["strategies"].items():
            reach = (f"reaches random's final F1 with {s['tiles_to_match_random']} tiles "
                     f"({s['fraction_of_random_labels']:.0%} of random's labels)"
                     if s["tiles_to_match_random"] is not None else "does not reach random's final F1")
            out.append(f"{name}: F1 {s['final_f1']:.3f} ± {s['final_f1_std']:.3f}; {reach}")
        return out


def curve_table(records: list[dict[str, Any]], labels: list[str]) -> pd.DataFrame:
    """Mean and spread per strategy and round over repetitions (round 0 = the shared seed models)."""
    frame = pd.DataFrame([{k: r[k] for k in ("repetition", "strategy", "round", "labelled_tiles", "f1", "miou")}
                          for r in records])
    seeds = frame[frame["strategy"] == SEED_LABEL]
    parts = [frame[frame["strategy"] == label] for label in labels]
    frame = pd.concat([*(seeds.assign(strategy=label) for label in labels), *parts], ignore_index=True)
    grouped = frame.groupby(["strategy", "round"], sort=False)
    table = grouped.agg(labelled_tiles=("labelled_tiles", "first"), f1_mean=("f1", "mean"),
                        f1_std=("f1", lambda v: float(np.std(v))), f1_min=("f1", "min"), f1_max=("f1", "max"),
                        miou_mean=("miou", "mean"), repetitions=("f1", "size")).reset_index()
    return table.sort_values(["strategy", "round"], key=lambda c: c.map(labels.index) if c.name == "strategy"
                             else c).reset_index(drop=True)


def summarize(table: pd.DataFrame, labels: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    """Final F1 per strategy and the labels it needed to reach random sampling's final F1."""
    def final(label: str) -> pd.Series:
        rows = table[table["strategy"] == label]
        return rows.iloc[-1]

    random_final = final("random")
    target = float(random_final["f1_mean"])
    strategies = {}
    for label in labels[1:]:
        rows = table[table["strategy"] == label]
        reached = rows[rows["f1_mean"] >= target]
        tiles = int(reached["labelled_tiles"].iloc[0]) if len(reached) else None
        strategies[label] = {
            "final_f1": float(rows["f1_mean"].iloc[-1]), "final_f1_std": float(rows["f1_std"].iloc[-1]),
            "tiles_to_match_random": tiles,
            "fraction_of_random_labels": tiles / int(random_final["labelled_tiles"]) if tiles is not None else None,
        }
    return {**extra, "metric": "F1 (mean over foreground classes) on the test tiles",
            "random": {"final_f1": target, "final_f1_std": float(random_final["f1_std"]),
                       "final_tiles": int(random_final["labelled_tiles"])},
            "strategies": strategies,
            "note": "fractions are resolved to one round (per_round tiles); null: not reached within the budget"}


def config_digest(config: SimulateConfig, train: TrainConfig) -> str:
    text = json.dumps([config.model_dump(mode="json"), train.model_dump(mode="json")], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def simulate(config_path: str | Path, out: str | Path, device: str = "auto") -> Summary:
    """Run (or resume) the simulation of the YAML file ``config_path`` into ``out``."""
    config, train = load_simulation(config_path)
    return run_simulation(config, train, out, device)


def run_simulation(config: SimulateConfig, train: TrainConfig, out: str | Path, device: str = "auto") -> Summary:
    """Run (or resume) a validated simulation into ``out``; writes the records, the curve and the summary."""
    started = time.monotonic()
    out = output_folder(out)
    digest = config_digest(config, train)
    stamp = out / "config.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("digest") != digest:
        raise InputError(f"{out}: holds a simulation of another config; choose another -o or remove it")
    write_text_atomic(stamp, json.dumps({"digest": digest, "config": config.model_dump(mode="json")}, indent=2,
                                        default=str))
    simulator = Simulator(config, train, out, device)
    with use_reporter(OnceReporter(reporter(), out.resolve())):
        simulator.run()
    labels = [s.label for s in simulator.strategies]
    table = curve_table(simulator.records, labels)
    write_text_atomic(out / "curve.csv", table.to_csv(index=False))
    plan = config.simulation
    assert simulator.pool is not None
    summary = summarize(table, labels, {
        "pool_tiles": len(simulator.pool.ids), "test_tiles": len(simulator.pool.test),
        "tile_size": int(simulator.pool.meta["tile_size"]), "seed_tiles": plan.seed_tiles,
        "per_round": plan.per_round, "rounds": plan.rounds, "repetitions": plan.repetitions,
        "warm_start": plan.warm_start, "steps_per_round": train.max_steps,
        "seconds": round(time.monotonic() - started, 1),
        "training_seconds": round(sum(r["seconds"] for r in simulator.records), 1)})
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    series = {label: (rows["labelled_tiles"].tolist(), rows["f1_mean"].tolist(), rows["f1_std"].tolist())
              for label in labels for rows in [table[table["strategy"] == label]]}
    figure = curve_figure(series, "F1 on the test tiles", f"label efficiency ({plan.repetitions} repetitions, "
                          "mean ± std)", target=(summary["random"]["final_f1"], "random, final"))
    reporter().artifact("plot", save(figure, out / "curve.png"))
    reporter().artifact("summary", out / "summary.json")
    return Summary(summary)
