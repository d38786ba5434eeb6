"""The SuperTransformer checkpoint format (what `hat train` writes) and its loader.

It lives with the model so that export, search and the commands can open a trained
SuperTransformer without importing the trainer. A checkpoint is a tagged weights-only file
(`hat.files`): plain values and tensors only (RNG states as lists), never pickled code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hat.errors import CheckpointError, first_line
from hat.files import load_tagged
from hat.model.super import SuperTransformer
from hat.model.transformer import ModelArgs
from hat.space import DesignSpace

FORMAT = "hat-supertransformer-checkpoint"
FORMAT_VERSION = 1
WHAT = "SuperTransformer checkpoint"
# the fields every reader indexes, with their types: a file with the right tag and a field of
# another type is refused when it is opened, not where the field is used
REQUIRED_KEYS = {"format": str, "version": int, "model": dict, "space": dict, "model_args": dict, "update": int,
                 "config": dict}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and sanity-check a checkpoint; any problem is one CheckpointError naming the file."""
    return load_tagged(path, FORMAT, WHAT, version=FORMAT_VERSION, required=REQUIRED_KEYS, map_location=map_location)


def check_compatible(ckpt: dict[str, Any], path: str | Path, space: DesignSpace, model_args: ModelArgs) -> None:
    """Refuse a checkpoint whose design space or model arguments differ from the run's."""
    if ckpt["space"] != space.to_dict():
        raise CheckpointError(
            f"{path}: checkpoint was trained on design space {ckpt['space'].get('name')!r}, "
            f"which differs from this run's {space.name!r}"
        )
    theirs, ours = ckpt["model_args"], model_args.to_dict()
    arch_keys = ("src_vocab_size", "tgt_vocab_size", "padding_idx", "share_all_embeddings",
                 "share_decoder_input_output_embed", "normalize_before", "max_positions")
    diff = [k for k in arch_keys if theirs.get(k) != ours.get(k)]
    if diff:
        k = diff[0]
        raise CheckpointError(f"{path}: checkpoint has {k}={theirs.get(k)!r}, this run has {ours.get(k)!r}")


def load_super_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[SuperTransformer, dict[str, Any]]:
    """Rebuild the trained SuperTransformer of a `hat train` checkpoint (eval mode) and return it
    with the checkpoint dict (`space`, `model_args`, `config`, `update`, `valid`, ...)."""
    ckpt = load_checkpoint(path, map_location)
    try:
        space = DesignSpace.from_dict(ckpt["space"], source=str(path))
        model = SuperTransformer(space, ModelArgs(**ckpt["model_args"]))
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: model state does not match its space/args ({first_line(e, 160)})") from None
    return model.to(map_location).eval(), ckpt
