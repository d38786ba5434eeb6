"""The run state every trainer saves and resumes the same way: the position in the data, the
counters of the budget and the validation history (what makes a resumed run continue, not restart)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from hat.errors import CheckpointError, first_line
from hat.train.rng import rng_state, set_rng_state


def run_state(t: Any) -> dict[str, Any]:
    """The checkpoint fields of trainer `t`'s progress (RNG states included)."""
    return {"rng": rng_state(), "data": {"epoch": t.epoch, "batch_index": t.batch_index}, "update": t.update,
            "best_valid_loss": t.best_loss, "valid": t.valid_history, "elapsed_s": t.elapsed_s,
            "tokens_seen": t.tokens_seen}


def restore_run_state(t: Any, ckpt: dict[str, Any], path: str | Path, load_states: Callable[[], None]) -> None:
    """Set trainer `t`'s progress from `ckpt` after `load_states()` (the model's, the optimiser's,
    ...). A damaged or crafted file may have the right tag and the wrong insides: one
    CheckpointError naming `path`, never a crash."""
    try:
        load_states()
        set_rng_state(ckpt["rng"])
        t.update = int(ckpt["update"])
        t.epoch, t.batch_index = int(ckpt["data"]["epoch"]), int(ckpt["data"]["batch_index"])
        t.best_loss = float(ckpt.get("best_valid_loss", math.inf))
        t.valid_history = list(ckpt.get("valid", []))
        t.elapsed_s = float(ckpt.get("elapsed_s", 0.0))
        t.tokens_seen = int(ckpt.get("tokens_seen", 0))
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{path}: state does not match this model ({type(e).__name__}: "
                              f"{first_line(e, 160)})") from None
