"""The frozen teacher of fixed-policy fine-tuning: a copy of the `init_from` SuperTransformer.

The fine-tuned subnet shares its weights with the SuperTransformer it was cut from, so the teacher
must be a separate, frozen copy that does not move with them. A resumed run re-reads the teacher
from `init_from`; the checkpoint keeps the file's digest, so a teacher replaced at the same path
(e.g. a SuperTransformer that trained on) is refused instead of silently teaching something else.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Callable

import torch

from hat.errors import CheckpointError
from hat.files import file_digest
from hat.model import ModelArgs, SuperTransformer
from hat.model.checkpoint import check_compatible, load_checkpoint
from hat.space import DesignSpace, load_subconfig


class Teacher:
    """Soft targets of one subnet (default: the largest) of a frozen SuperTransformer checkpoint."""

    def __init__(self, path: str | Path, subnet: str | Path | None, space: DesignSpace, args: ModelArgs,
                 device: torch.device) -> None:
        self.subnet = space.validate(load_subconfig(subnet), source=str(subnet)) if subnet else space.largest()
        ckpt = load_checkpoint(path, device)
        check_compatible(ckpt, path, space, args)
        self.path, self.digest = Path(path), file_digest(path)
        self.model = SuperTransformer(space, args).to(device)
        self.model.load_state_dict(ckpt["model"])
        self.model.eval().requires_grad_(False)

    def check_resumed(self, saved_digest: object, checkpoint: str | Path) -> None:
        """Refuse to resume `checkpoint` with a teacher other than the one it was trained with."""
        if isinstance(saved_digest, str) and saved_digest != self.digest:
            raise CheckpointError(f"{self.path}: init_from changed since {checkpoint} was saved (the distillation "
                                  "teacher would differ): restore it, or fine-tune into a new save_dir")

    @torch.no_grad()
    def probs(self, sample: dict, autocast: Callable[[], AbstractContextManager]) -> torch.Tensor:
        with autocast():
            logits = self.model(sample["src_tokens"], sample["src_lengths"], sample["prev_output_tokens"], self.subnet)
        return torch.softmax(logits.float(), dim=-1)
