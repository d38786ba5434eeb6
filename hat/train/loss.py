"""Label-smoothed cross-entropy with fairseq's semantics, and in-place distillation.

Both return SUMS over non-pad target tokens: gradients are divided by the global token count
once, after accumulation and all-reduce, which makes N micro-batches or N workers equal to one
big batch (fairseq's `sample_size` normalisation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def label_smoothed_nll_loss(
    logits: torch.Tensor, target: torch.Tensor, epsilon: float, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(loss_sum, nll_sum)` of logits (B,T,V) against target (B,T), pads ignored.

    fairseq: eps_i = eps/(V-1); loss = (1-eps-eps_i)*nll + eps_i*sum_v(-log p_v).
    """
    lprobs = F.log_softmax(logits.float(), dim=-1)
    target = target.unsqueeze(-1)
    nll = -lprobs.gather(dim=-1, index=target).squeeze(-1)
    smooth = -lprobs.sum(dim=-1)
    keep = target.squeeze(-1).ne(ignore_index)
    nll = nll.masked_fill(~keep, 0.0).sum()
    smooth = smooth.masked_fill(~keep, 0.0).sum()
    eps_i = epsilon / (lprobs.size(-1) - 1)
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    return loss, nll


def distill_loss(logits: torch.Tensor, teacher_probs: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Sum over non-pad tokens of the cross-entropy to the teacher's (detached) distribution."""
    lprobs = F.log_softmax(logits.float(), dim=-1)
    ce = -(teacher_probs * lprobs).sum(dim=-1)
    return ce.masked_fill(target.eq(ignore_index), 0.0).sum()
