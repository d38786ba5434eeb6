"""The frozen teacher of fixed-policy fine-tuning: a copy of the `init_from` SuperTransformer.

The fine-tuned subnet shares its weights with the SuperTransformer it was cut from, so the teacher
must be a separate, frozen copy that does not move with them.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Callable

import torch

from hat.model import ModelArgs, SuperTransformer
from hat.model.checkpoint import check_compatible, load_checkpoint
from hat.space import DesignSpace, load_subconfig


class Teacher:
    """Soft targets of one subnet (default: the largest) of a frozen SuperTransformer checkpoint."""

    def __init__(self, path: str | Path, subnet: str | Path | None, space: DesignSpace, args: ModelArgs,
                 device: torch.device) -> None:
        ckpt = load_checkpoint(path, device)
        check_compatible(ckpt, path, space, args)
        self.model = SuperTransformer(space, args).to(device)
        self.model.load_state_dict(ckpt["model"])
        self.model.eval().requires_grad_(False)
        self.subnet = space.validate(load_subconfig(subnet), source=str(subnet)) if subnet else space.largest()

    @torch.no_grad()
    def probs(self, sample: dict, autocast: Callable[[], AbstractContextManager]) -> torch.Tensor:
        with autocast():
            logits = self.model(sample["src_tokens"], sample["src_lengths"], sample["prev_output_tokens"], self.subnet)
        return torch.softmax(logits.float(), dim=-1)
