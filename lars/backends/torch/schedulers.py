"""The core's learning-rate schedules as torch LR schedulers."""

from __future__ import annotations

import os

import torch

from lars.core.config import Config, as_config
from lars.core.schedules import Schedule


class CoreScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Sets every group's lr to `schedule(t)`, `t` the number of `scheduler.step()` calls so far.

    Call `scheduler.step()` after each `optimizer.step()`, as with any torch scheduler: the
    first update then uses `schedule(0)`, as TF and optax count.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule, last_epoch: int = -1) -> None:
        self.schedule = schedule
        super().__init__(optimizer, last_epoch)

    @classmethod
    def from_file(cls, optimizer: torch.optim.Optimizer, config: Config | str | os.PathLike[str],
                    ) -> CoreScheduler:
        """The schedule of a hyperparameter file (its constant lr if it has no `[schedule]`)."""
        return cls(optimizer, as_config(config).lr_schedule())

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [self.schedule(self.last_epoch)] * len(self.optimizer.param_groups)
