"""Adam(W) and HAT's learning-rate schedules (fairseq's `cosine` and `inverse_sqrt`).

The schedule is a pure function of the update number, so resuming needs no scheduler state
beyond the update counter (its `state_dict` is kept for the record and for sanity checks).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

from hat.errors import ConfigError

SCHEDULES = ("cosine", "wsd", "inverse_sqrt", "fixed")


def build_optimizer(
    params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float], eps: float, weight_decay: float
) -> torch.optim.Optimizer:
    """fairseq's Adam decays weights decoupled from the gradient, i.e. AdamW (wd=0 is plain Adam)."""
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


class LRSchedule:
    """Linear warm-up from `warmup_init_lr` to `lr`, then
    cosine: half a cosine down to `min_lr` at `max_updates` (HAT WMT: 1e-7 -> 1e-3, 10k warm-up);
    wsd (warm-up, stable, decay): `lr` until the last `decay_fraction` of the run, then linearly down
    to `min_lr` -- on a short budget far from convergence, cosine spends most updates at a rate
    too low to learn fast (see benchmarks/RESULTS.md, 2c);
    inverse_sqrt: lr * sqrt(warmup/update) (HAT IWSLT); fixed: constant.

    `warmup_share` warms up over that share of a wall-clock budget instead of (or as well as) a
    count of updates: a fixed count is a different share of every model's budget (200 updates were
    38 % of one model's run and 16 % of another's at the same budget)."""

    def __init__(
        self, kind: str, lr: float, warmup_updates: int, warmup_init_lr: float, min_lr: float, max_updates: int,
        decay_fraction: float = 0.2, warmup_share: float = 0.0,
    ) -> None:
        if kind not in SCHEDULES:
            raise ConfigError(f"lr_scheduler={kind!r}: expected one of {', '.join(SCHEDULES)}")
        if lr <= 0 or warmup_updates < 0 or max_updates <= 0 or not 0 <= warmup_share < 1:
            raise ConfigError("lr schedule needs lr > 0, warmup_updates >= 0, max_updates > 0, "
                              f"0 <= warmup_share < 1 (got {lr}, {warmup_updates}, {max_updates}, {warmup_share})")
        self.kind, self.lr, self.warmup, self.init_lr = kind, lr, warmup_updates, warmup_init_lr
        self.min_lr, self.max_updates, self.decay_fraction = min_lr, max_updates, decay_fraction
        self.warmup_share = warmup_share

    def lr_at(self, update: int, progress: float = 0.0) -> float:
        """Learning rate used by the `update`-th optimizer step (1-based; 0 gives warmup_init_lr).

        `progress` (0..1, e.g. the share of a wall-clock budget spent) moves the decay on as if
        `progress * max_updates` updates were done, when that is further than `update`: a
        time-budgeted run anneals within its budget whatever the machine's speed. Warm-up lasts
        until both the updates and the budget share of warm-up are done."""
        w = update / self.warmup if self.warmup and update < self.warmup else 1.0
        if self.warmup_share and progress < self.warmup_share:
            w = min(w, progress / self.warmup_share)
        if w < 1.0:
            return self.init_lr + (self.lr - self.init_lr) * w
        if self.kind == "fixed":
            return self.lr
        if self.kind == "inverse_sqrt":
            return self.lr * math.sqrt(max(self.warmup, 1) / max(update, 1))
        period = max(self.max_updates - self.warmup, 1)
        virtual = max(update, progress * self.max_updates)
        t = min(max(virtual - self.warmup, 0), period) / period
        if self.kind == "wsd":
            f = self.decay_fraction
            return self.lr if t < 1 - f else self.min_lr + (self.lr - self.min_lr) * (1 - t) / max(f, 1e-12)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * t))

    def step(self, optimizer: torch.optim.Optimizer, update: int, progress: float = 0.0) -> float:
        lr = self.lr_at(update, progress)
        for g in optimizer.param_groups:
            g["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"kind": self.kind, "lr": self.lr, "warmup_updates": self.warmup, "warmup_init_lr": self.init_lr,
                "min_lr": self.min_lr, "max_updates": self.max_updates, "decay_fraction": self.decay_fraction,
                "warmup_share": self.warmup_share}
