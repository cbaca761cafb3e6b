"""The PyTorch adapter: `LARS`, a `torch.optim.Optimizer`, its functional form `lars()`, and the
core's schedules as torch LR schedulers. Importing this module imports torch."""

from lars.backends.torch.functional import lars
from lars.backends.torch.optimizer import LARS
from lars.backends.torch.schedulers import CoreScheduler

__all__ = ["LARS", "CoreScheduler", "lars"]
