"""SuperTransformer training: sampling policies, loss, optimiser/schedules, checkpoints, DDP."""
from hat.train.checkpoint import load_checkpoint, load_super_checkpoint, save_checkpoint
from hat.train.loss import distill_loss, label_smoothed_nll_loss
from hat.train.optim import LRSchedule, build_optimizer
from hat.train.sampling import Sampler

__all__ = [
    "LRSchedule",
    "Sampler",
    "build_optimizer",
    "distill_loss",
    "label_smoothed_nll_loss",
    "load_checkpoint",
    "load_super_checkpoint",
    "save_checkpoint",
]
