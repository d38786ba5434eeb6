"""Where and in what precision a trainer computes: a training config's `compute`, `amp` and
`num_threads`, read the same way by the translation and the LM trainer."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, ContextManager

import torch

from hat.errors import ConfigError

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_compute(cfg: Any) -> tuple[str, str]:
    """(device kind, amp) of `cfg`: `auto` is CUDA when there is one, and bf16 autocast on CUDA
    (fp32 on CPU); sets torch's threads. compute=cuda without CUDA is refused in one line."""
    dev = cfg.compute if cfg.compute != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if dev == "cuda" and not torch.cuda.is_available():
        raise ConfigError("compute=cuda but CUDA is not available")
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    return dev, cfg.amp if cfg.amp != "auto" else ("bf16" if dev == "cuda" else "fp32")


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """Autocast to `dtype` on `device` (weights and optimizer state stay fp32), or nothing."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
