"""Batch normalisations folded into convolutions for prediction: same outputs, never a wrong fold."""

from __future__ import annotations

import pytest
import torch
from aifactory.datasets.format import Normalization
from aifactory.models import ARCHITECTURES, min_tile, task_of
from aifactory.models.card import ModelCard
from aifactory.models.folding import fold_batch_norms
from aifactory.prediction.runtime import FOLD_CHECK_TILE, inference_module
from test_models import BANDS, build
from torch import nn


def trained_statistics(model: nn.Module) -> nn.Module:
    """Statistics and affine parameters away from their initial values (a fresh BN is nearly the identity)."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for tensor, low, high in ((module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2.0),
                                      (module.weight, 0.5, 1.5), (module.bias, -0.2, 0.2)):
                tensor.data.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    return model.eval()


def norms(model: nn.Module) -> int:
    return sum(isinstance(module, nn.BatchNorm2d) for module in model.modules())


def example(size: int = 64) -> torch.Tensor:
    return torch.randn(1, BANDS, size, size, generator=torch.Generator().manual_seed(0))


def assert_same_outputs(model: nn.Module, folded: nn.Module, x: torch.Tensor) -> None:
    """The folded model's outputs on ``x`` are the original's up to float rounding (tensors or dicts of them)."""
    with torch.inference_mode():
        reference, candidate = model(x), folded(x)
    if isinstance(reference, dict):
        reference, candidate = torch.cat([v.flatten() for v in reference.values()]), \
            torch.cat([v.flatten() for v in candidate.values()])
    assert torch.allclose(reference, candidate, rtol=1e-4, atol=1e-4 * float(reference.abs().max()))


DENSE = [name for name in ARCHITECTURES.names() if task_of(name) not in ("detection", "instance")]


@pytest.mark.parametrize("name", DENSE)
def test_every_dense_architecture_folds_to_the_same_outputs(name):
    model = trained_statistics(build(name))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    size = max(64, min_tile(name))
    folded, count = fold_batch_norms(model, example(size))
    assert count > 0 and norms(folded) == norms(model) - count
    x = example(size) * 2 + 0.3  # not the input the folding was checked on
    assert_same_outputs(model, folded, x)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())  # original untouched


class SharedOutput(nn.Module):
    """The convolution's output feeds its normalisation and, unnormalised, the sum: not foldable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(BANDS, BANDS, 3, padding=1), nn.BatchNorm2d(BANDS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.norm(y) + y


class Apart(nn.Module):
    """An activation between convolution and normalisation (in place: the same tensor object goes on), and a
    pair run twice per pass: not foldable."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Sequential(nn.Conv2d(BANDS, 8, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(8))
        self.twice = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.twice(self.twice(self.first(x)))


@pytest.mark.parametrize("model", [SharedOutput(), Apart()], ids=["output used twice", "apart or run twice"])
def test_what_cannot_be_folded_is_left_as_it_is(model):
    model = trained_statistics(model)
    before = norms(model)
    folded, count = fold_batch_norms(model, example())
    assert folded is model and count == 0 and norms(model) == before > 0


def test_a_model_in_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(build("unet").train(), example())


def card(name: str, tile_size: int = 64) -> ModelCard:
    return ModelCard(architecture=name, params={}, in_channels=BANDS, num_classes=4, task=task_of(name),
                     classes=["background", "a", "b", "c"], bands=list(range(1, BANDS + 1)), tile_size=tile_size,
                     normalization=Normalization(mean=[0.0] * BANDS, std=[1.0] * BANDS))


def test_prediction_runs_dense_models_folded_and_detectors_as_they_are():
    unet = trained_statistics(build("unet"))
    assert norms(unet) > 0 and norms(inference_module(unet, card("unet"))) == 0
    detector = build("retinanet").eval()
    assert inference_module(detector, card("retinanet")) is detector


@pytest.mark.parametrize("name", DENSE)
def test_a_fold_checked_on_a_small_tile_holds_on_the_cards_larger_tiles(name):
    """Prediction checks the fold on a tile of FOLD_CHECK_TILE px (cheaper than the card's): the same
    normalisations fold as when checked on the card's 256-px tiles, and the outputs match there."""
    model = trained_statistics(build(name))
    tile = 2 * max(FOLD_CHECK_TILE, min_tile(name))
    folded = inference_module(model, card(name, tile))
    _, count_at_tile = fold_batch_norms(model, example(tile))
    assert count_at_tile > 0 and norms(folded) == norms(model) - count_at_tile
    x = example(tile) * 2 + 0.3
    assert_same_outputs(model, folded, x)
