"""The update loop every trainer runs (`hat.train.trainer`, `hat.train.lm`): updates until
`max_updates`, `max_epochs` or the budget, a windowed `{"train": ...}` log record every
`log_interval`, validation every `validate_interval`, saves every `save_interval` (and by the
clock, and at a new best), then a last validation and save at the final update.

The loop itself draws no random numbers and touches no RNG state, so the trainer's
`train_step` (which reseeds per update) and its saves alone decide what a resumed run replays.
What differs between trainers comes in as hooks and options.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from hat.train.log import Progress


def run_updates(t: Any, *, validate: Callable[[float], tuple[Any, bool]], save: Callable[[bool, bool], None],
                show_progress: bool, agree: Callable[[float], float] | None = None,
                stop_minutes: float | None = None, wall_s: bool = False, lr_postfix: bool = False,
                writer: Any = None) -> Any:
    """Train `t` from its current update on; return the last validation (None if none ran).

    `t` is a trainer: `cfg` (`max_updates`, `max_epochs`, `budget_minutes`, `log_interval`,
    `validate_interval`, `save_interval`, `save_interval_minutes`), the counters `update`,
    `epoch`, `elapsed_s` (set here, the budget's clock) and `tokens_seen`, `log` (a TrainLog),
    `progress()` and `train_step()` (returning `loss`, `ntokens` and `lr`).

    Hooks: `validate(t_start)` validates and logs, returning (record, is_best); `save(best,
    numbered)` writes the checkpoints (`numbered`: the save falls on `save_interval`);
    `agree(seconds)` turns this process's training seconds into the ones every rank uses
    (identity by default). Options: `show_progress` (the bar), `stop_minutes` (a wall-clock guard
    of this process), `wall_s` (log this process's seconds too), `lr_postfix` (the rate on the
    bar), `writer` (a tensorboard SummaryWriter for the train scalars, or None).
    """
    c = t.cfg
    bar = Progress(c.max_updates, t.update, c.budget_minutes, t.elapsed_s, show_progress)
    t_start = t0 = time.time()
    win_loss = win_tok = 0.0
    last_valid, saved_at, validated_at = None, -1, -1
    elapsed0 = saved_s = t.elapsed_s
    while t.update < c.max_updates:
        if c.max_epochs and t.epoch > c.max_epochs:
            break
        if stop_minutes and time.time() - t_start > 60 * stop_minutes:
            break
        if t.progress() >= 1.0:
            break
        stats = t.train_step()
        seconds = time.time() - t_start
        t.elapsed_s = elapsed0 + (agree(seconds) if agree else seconds)
        win_loss += stats["loss"] * stats["ntokens"]
        win_tok += stats["ntokens"]
        bar.step(t.elapsed_s)
        u = t.update
        if u % c.log_interval == 0 or u == c.max_updates:
            dt = max(time.time() - t0, 1e-9)
            rec = {"update": u, "epoch": t.epoch, "loss": win_loss / max(win_tok, 1), "lr": stats["lr"],
                   "tokens_per_s": win_tok / dt}
            if wall_s:
                rec["wall_s"] = round(time.time() - t_start, 1)
            rec |= {"elapsed_s": round(t.elapsed_s, 1), "tokens_seen": t.tokens_seen}
            postfix = {"update": str(u), "loss": f"{rec['loss']:.3f}", "tok_s": f"{rec['tokens_per_s']:.0f}"}
            if lr_postfix:
                postfix["lr"] = f"{stats['lr']:.2e}"
            bar.postfix(**postfix)
            t.log.write({"train": rec})
            if writer:
                writer.add_scalar("train/loss", rec["loss"], u)
                writer.add_scalar("train/lr", stats["lr"], u)
                writer.add_scalar("train/tokens_per_s", rec["tokens_per_s"], u)
            t0, win_loss, win_tok = time.time(), 0.0, 0.0
        best = False
        if u % c.validate_interval == 0:
            last_valid, best = validate(t_start)
            validated_at = u
        timed = c.save_interval_minutes and t.elapsed_s - saved_s >= 60 * c.save_interval_minutes
        if u % c.save_interval == 0 or best or timed:
            save(best, u % c.save_interval == 0)
            saved_at, saved_s = u, t.elapsed_s
    bar.close()
    if validated_at != t.update:
        last_valid, best = validate(t_start)
        if best or saved_at != t.update:
            save(best, False)
    elif saved_at != t.update:
        save(False, False)
    return last_valid
