"""The decoder-only LM checkpoint format (what `hat train --task lm` writes) and its loader.

It lives with the model, as the SuperTransformer's does, so that evaluation and export open a
trained LM without importing the trainer. A tagged weights-only file (`hat.files`):

    format "hat-lm-checkpoint", version 1
    model         the StandaloneLM state dict;  init_kwargs  StandaloneLM.init_kwargs()
    lm_config     the LMConfig trained;  space  its LMSpace;  context  the block length trained on
    vocabulary    {lang, symbols (the dictionary, specials first), spm_model (bytes)}: the model's
                  vocabulary, so it scores and exports without its data directory
    config        the resolved training config;  update, elapsed_s, tokens_seen, valid (history)
    optimizer, scheduler, rng, data {epoch, batch_index}   the run's state, for resuming
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from hat.errors import CheckpointError, first_line
from hat.files import load_tagged
from hat.model.lm import StandaloneLM

FORMAT = "hat-lm-checkpoint"
FORMAT_VERSION = 1
WHAT = "decoder-only LM checkpoint"
REQUIRED_KEYS = {"format": str, "version": int, "model": dict, "init_kwargs": dict, "lm_config": dict,
                 "space": dict, "context": int, "vocabulary": dict, "config": dict, "update": int}


def load_lm_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and sanity-check an LM checkpoint; any problem is one CheckpointError naming the file."""
    return load_tagged(path, FORMAT, WHAT, version=FORMAT_VERSION, required=REQUIRED_KEYS,
                       map_location=map_location, hint=" (make one with `hat train --task lm`)")


def load_lm(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[StandaloneLM, dict[str, Any]]:
    """The trained StandaloneLM of an LM checkpoint (eval mode) and the checkpoint dict."""
    ckpt = load_lm_checkpoint(path, map_location)
    try:
        model = StandaloneLM.from_kwargs(ckpt["init_kwargs"])
        model.load_state_dict(ckpt["model"])
        symbols = ckpt["vocabulary"]["symbols"]
        if not isinstance(symbols, list) or len(symbols) > model.embed_tokens.num_embeddings:
            raise ValueError("its dictionary does not fit the model's vocabulary")
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{path}: model state does not match its architecture ({first_line(e, 160)})") from None
    return model.to(map_location).eval(), ckpt


def is_lm_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a torch file tagged as an LM checkpoint: commands that take models of
    both tasks ask this first. Memory-mapped, so a large file is not read to find out."""
    p = Path(path)
    if not p.is_file() or not zipfile.is_zipfile(p):
        return False
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  (anything unreadable is not ours; the caller's loader says why)
        return False
    return isinstance(obj, dict) and obj.get("format") == FORMAT
