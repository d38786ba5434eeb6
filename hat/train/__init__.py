"""SuperTransformer training: configuration, sampling policies, loss, optimiser/schedules, DDP.

The checkpoint format lives with the model (`hat.model.checkpoint`), so that only training
imports this package.
"""
from hat.train.loss import distill_loss, label_smoothed_nll_loss
from hat.train.optim import LRSchedule, build_optimizer
from hat.train.sampling import Sampler

__all__ = [
    "LRSchedule",
    "Sampler",
    "build_optimizer",
    "distill_loss",
    "label_smoothed_nll_loss",
]
