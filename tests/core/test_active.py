"""Active learning, the parts without a trained model: acquisition functions on constructed probability
maps (known rankings), per-tile aggregation, k-center diversity and the minimum ground distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from aifactory.active import ACQUISITIONS
from aifactory.active.acquisitions import aggregate
from aifactory.active.diversity import choose
from aifactory.active.options import SelectOptions
from aifactory.errors import ConfigError


def maps(*pixels: tuple[float, ...], size: int = 4) -> torch.Tensor:
    """(1, N, C, size, size) probabilities: tile i has the class distribution ``pixels[i]`` everywhere."""
    probs = torch.tensor(pixels, dtype=torch.float32)
    return probs[None, :, :, None, None].expand(1, len(pixels), probs.shape[1], size, size).clone()


def score(name: str, probs: torch.Tensor, **params) -> torch.Tensor:
    entry, parsed = ACQUISITIONS.resolve({"name": name, **params}, "test")
    return entry.func(parsed, probs, torch.Generator().manual_seed(0))


def test_registry_lists_the_builtin_acquisitions_with_parameters():
    assert {"entropy", "margin", "least_confidence", "bald", "random"} <= set(ACQUISITIONS.names())
    lines = "\n".join(ACQUISITIONS.describe_lines())
    assert "samples=8 (int)" in lines and "dropout=0.2 (float)" in lines
    with pytest.raises(ConfigError, match="unknown acquisition function 'entropi'; did you mean entropy"):
        ACQUISITIONS.get("entropi")
    with pytest.raises(ConfigError, match="samples"):
        ACQUISITIONS.resolve({"name": "bald", "samples": 1}, "strategy")


@pytest.mark.parametrize("name", ["entropy", "margin", "least_confidence"])
def test_uncertainty_ranks_uniform_over_unsure_over_sure(name):
    probs = maps((0.99, 0.01), (0.5, 0.5), (0.7, 0.3))
    pixels = score(name, probs)
    assert pixels.shape == (3, 4, 4)
    tile = pixels.mean(dim=(1, 2))
    assert tile.argsort(descending=True).tolist() == [1, 2, 0]
    assert float(tile[1]) == pytest.approx(1.0, abs=1e-5)  # normalised: a 50/50 pixel is the maximum
    assert 0.0 <= float(tile[0]) < 0.1


def test_margin_and_entropy_disagree_where_they_should():
    # two tied classes and a third at zero: margin 0 (most uncertain); three spread classes: highest entropy
    probs = maps((0.5, 0.5, 0.0), (0.4, 0.3, 0.3))
    ent, mar = score("entropy", probs)[:, 0, 0], score("margin", probs)[:, 0, 0]
    assert float(ent[1]) > float(ent[0]) and float(mar[0]) > float(mar[1])
    assert float(ent[0]) == pytest.approx(math.log(2) / math.log(3), abs=1e-5)
    assert float(mar[0]) == pytest.approx(1.0) and float(mar[1]) == pytest.approx(0.9, abs=1e-6)
    least = score("least_confidence", probs)[:, 0, 0]
    assert float(least[0]) == pytest.approx(0.75) and float(least[1]) == pytest.approx(0.9, abs=1e-6)


def test_bald_separates_disagreeing_samples_from_aleatoric_noise():
    agree = torch.tensor([0.5, 0.5]).expand(8, 2)                        # every sample says 50/50
    disagree = torch.tensor([[0.99, 0.01], [0.01, 0.99]]).repeat(4, 1)     # samples contradict each other
    sure = torch.tensor([0.99, 0.01]).expand(8, 2)
    probs = torch.stack([agree, disagree, sure], dim=1)[..., None, None].expand(8, 3, 2, 2, 2)
    pixels = score("bald", probs)
    tile = pixels.mean(dim=(1, 2))
    assert tile.argsort(descending=True).tolist()[0] == 1
    assert float(tile[0]) == pytest.approx(0.0, abs=1e-5) and float(tile[2]) == pytest.approx(0.0, abs=1e-5)
    assert float(tile[1]) > 0.9
    # the entropy of the mean cannot tell the first two apart
    ent = score("entropy", probs).mean(dim=(1, 2))
    assert float(ent[0]) == pytest.approx(float(ent[1]), abs=1e-5)


def test_random_is_constant_per_tile_and_reproducible():
    probs = torch.empty(1, 5, 0, 3, 3)
    entry, params = ACQUISITIONS.resolve("random", "test")
    first = entry.func(params, probs, torch.Generator().manual_seed(4))
    again = entry.func(params, probs, torch.Generator().manual_seed(4))
    other = entry.func(params, probs, torch.Generator().manual_seed(5))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.all(first == first[:, :1, :1])
    assert not params.NEEDS_MODEL


def test_aggregation_mean_topk_max_over_valid_pixels_only():
    pixels = torch.zeros(2, 10, 10)
    pixels[0, 0, :5] = 1.0          # tile 0: one small unsure spot (5 of 100 pixels)
    pixels[1] = 0.2                 # tile 1: evenly a little unsure
    pixels[1, 9, :] = 50.0          # ... except in its nodata row, which must not count
    valid = torch.ones(2, 10, 10, dtype=torch.bool)
    valid[1, 9, :] = False
    mean = aggregate(pixels, valid, "mean")
    top = aggregate(pixels, valid, "topk", top_k=0.05)
    high = aggregate(pixels, valid, "max")
    assert mean.tolist() == pytest.approx([0.05, 0.2])
    assert top.tolist() == pytest.approx([1.0, 0.2])          # top 5 % of tile 1's 90 valid pixels: 0.2
    assert high.tolist() == pytest.approx([1.0, 0.2])
    assert mean.argmax() == 1 and top.argmax() == 0            # the spot wins only under top-k
    empty = aggregate(pixels, torch.zeros_like(valid), "topk")
    assert empty.tolist() == [0.0, 0.0]


def clusters() -> tuple[np.ndarray, np.ndarray]:
    """15 embeddings in 3 tight clusters; scores favour cluster 0 (an uncertainty ranking alone would pick it)."""
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8) * 10
    embeddings = np.concatenate([c + rng.normal(0, 0.1, (5, 8)) for c in centres])
    scores = np.concatenate([np.linspace(0.99, 0.95, 5), np.linspace(0.6, 0.5, 5), np.linspace(0.4, 0.3, 5)])
    return embeddings, scores


def test_kcenter_picks_one_tile_per_cluster_where_uncertainty_picks_one_cluster():
    embeddings, scores = clusters()
    plain = choose(scores, 3)
    assert plain == [0, 1, 2]
    diverse = choose(scores, 3, diversity="kcenter", embeddings=embeddings, top_m=15)
    assert diverse[0] == 0                                  # starts with the most uncertain tile
    assert sorted(i // 5 for i in diverse) == [0, 1, 2]
    # already labelled tiles of cluster 0 are centres: the picks avoid it
    labelled = embeddings[:1] + 0.01
    picks = choose(scores, 2, diversity="kcenter", embeddings=embeddings, labelled=labelled, top_m=15)
    assert sorted(i // 5 for i in picks) == [1, 2]
    # hybrid: only the top-M most uncertain tiles are candidates
    hybrid = choose(scores, 3, diversity="kcenter", embeddings=embeddings, top_m=7)
    assert set(hybrid) <= set(range(7)) and {i // 5 for i in hybrid} == {0, 1}


def test_minimum_distance_spaces_picks_within_a_coordinate_group():
    # a 6 × 6 grid of 100 m tiles; scores highest in the top-left corner
    xs, ys = np.meshgrid(np.arange(6) * 100.0 + 50, np.arange(6) * 100.0 + 50)
    centres = np.column_stack([xs.ravel(), ys.ravel()])
    scores = -(centres[:, 0] + centres[:, 1])
    picks = choose(scores, 4, centres=centres, min_distance=250.0)
    assert len(picks) == 4 and picks[0] == 0
    gaps = [np.linalg.norm(centres[a] - centres[b]) for i, a in enumerate(picks) for b in picks[i + 1:]]
    assert min(gaps) >= 250.0
    assert choose(scores, 4, centres=centres)[:2] == [0, 1]     # without spacing, neighbours are picked
    # two images in pixel space: the same coordinates in another group do not constrain each other
    both = np.concatenate([centres, centres])
    groups = np.array(["a"] * 36 + ["b"] * 36)
    twice = choose(np.concatenate([scores, scores]), 2, centres=both, groups=groups, min_distance=250.0)
    assert sorted(twice) == [0, 36]
    # too far apart for the grid: fewer tiles than asked, never a violation
    few = choose(scores, 10, centres=centres, min_distance=450.0)
    assert len(few) == 4
    spaced = choose(scores, 4, diversity="kcenter", embeddings=np.eye(36), centres=centres, min_distance=250.0,
                    top_m=36)
    assert min(np.linalg.norm(centres[a] - centres[b]) for i, a in enumerate(spaced) for b in spaced[i + 1:]) >= 250


def test_select_options_label_and_strategy_name():
    assert SelectOptions().label == "entropy"
    options = SelectOptions(strategy={"name": "bald", "samples": 4}, diversity="kcenter")
    assert options.name == "bald" and options.label == "bald+kcenter"
