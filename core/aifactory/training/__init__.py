"""Training: ``train(config, run_dir, resume=False, device="auto") -> Path`` and ``TrainConfig``.

::

    from aifactory.training import TrainConfig, train
    config = TrainConfig.from_yaml("train.yaml")      # or TrainConfig(dataset="data/", model={...})
    run_dir = train(config, "runs/unet-1", device="auto")

The run directory layout is in :mod:`aifactory.training.rundir`; losses in
:mod:`aifactory.training.losses` (``LOSSES`` registry). ``TrainConfig`` imports without torch; ``train``
is imported on first use. Training depends on the datasets stage (``ChipDataset``) and the models stage
(architecture registry, model cards): it is the stage that joins them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aifactory.training.config import TrainConfig

if TYPE_CHECKING:
    from aifactory.training.loop import train

__all__ = ["TrainConfig", "train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from aifactory.training.loop import train

        return train
    raise AttributeError(name)
