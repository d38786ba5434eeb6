"""Training checkpoints: atomic writes, validated loads, and a loader for other commands.

A checkpoint is a dict of plain Python values and tensors only (RNG states converted to
lists), so it loads with `torch.load(weights_only=True)`: opening a checkpoint never runs
pickled code.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch

from hat.errors import CheckpointError
from hat.model import ModelArgs, SuperTransformer
from hat.space import DesignSpace

FORMAT = "hat-supertransformer-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "version", "model", "space", "model_args", "update", "config")


def save_checkpoint(state: dict[str, Any], paths: Iterable[str | Path]) -> None:
    """Serialise `state` once and write it to every path atomically (temp file in the same
    directory, fsync, `os.replace`): a crash leaves the previous file intact."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    for path in paths:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and sanity-check a checkpoint; any problem is one CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, garbage, unpickling refused ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: {msg[:160]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a hat SuperTransformer checkpoint")
    if ckpt.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('version')} (this hat reads {FORMAT_VERSION})")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ckpt


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
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: model state does not match its space/args ({msg[:160]})") from None
    return model.to(map_location).eval(), ckpt
