"""Training one fixed decoder-only LM from scratch (`hat train --task lm`).

LiteTransformerSearch trains only the architectures it chooses, each from scratch on the same
token budget: one update is `batch_size` blocks of `context` tokens (`hat.data.lm`), drawn in a
seeded order per epoch, with AdamW and the translation recipes' schedules (`hat.train.optim`:
warm-up, then cosine or wsd, decayed by updates or by the wall-clock budget, whichever is
further). Validation reports perplexity. As in `hat.train.trainer`, dropout is reseeded from
`(seed, update)` at every update and the data position and RNG states are saved, so a run
killed and resumed from `checkpoint_last.pt` replays the uninterrupted one bitwise on CPU.
Checkpoints are `hat.model.lm_checkpoint` files, written atomically.
"""
from __future__ import annotations

import math
import random
import sys
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from hat.data.lm import LMBlocks, lm_side
from hat.errors import CheckpointError, ConfigError, DataError
from hat.files import atomic_write_text, remove_stale_temps, save_torch
from hat.model.lm import LMArgs, StandaloneLM, perplexity
from hat.model.lm_checkpoint import FORMAT, FORMAT_VERSION, load_lm_checkpoint
from hat.space.lm import load_lm_config, load_lm_space
from hat.train.compute import AMP_DTYPES, autocast, resolve_compute
from hat.train.log import TrainLog
from hat.train.loop import run_updates
from hat.train.optim import LRSchedule, build_optimizer
from hat.train.rng import update_seed
from hat.train.state import restore_run_state, run_state


class LMTrainer:
    """Everything checked and built from a resolved LM config (nothing is written until
    `train()`); resumes from `save_dir/checkpoint_last.pt` when there is one."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        dev, amp = resolve_compute(cfg)
        self.device, self.amp_dtype = torch.device(dev), AMP_DTYPES[amp]  # amp: fp32 or bf16 (lm_config)
        self.space = load_lm_space(cfg.space)
        self.arch = self.space.validate(load_lm_config(cfg.subnet), source=str(cfg.subnet))
        self.context = int(cfg.context or self.space.max_positions)
        if self.context > self.space.max_positions:
            raise ConfigError(f"context={self.context} is longer than space {self.space.name}'s "
                              f"max_positions={self.space.max_positions}")
        data = Path(cfg.data)
        self.train_blocks = LMBlocks.from_data(data, "train", self.context, self.space.vocab_size, cfg.lang)
        self.valid_blocks = LMBlocks.from_data(data, "valid", self.context, self.space.vocab_size, cfg.lang)
        self.dictionary = self.train_blocks.dictionary
        spm = data / "spm.model"
        if not spm.is_file():
            raise DataError(f"{spm}: SentencePiece model not found (is {data} the output of `hat prepare`?)")
        self.vocabulary = {"lang": lm_side(data, cfg.lang)[0], "symbols": list(self.dictionary.symbols),
                           "spm_model": spm.read_bytes()}
        torch.manual_seed(cfg.seed)
        args = LMArgs(padding_idx=self.dictionary.pad, dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
                      activation_dropout=cfg.activation_dropout)
        self.model = StandaloneLM.from_space(self.arch, self.space, args).to(self.device)
        self.optimizer = build_optimizer(self.model.parameters(), cfg.lr, tuple(cfg.adam_betas), cfg.adam_eps,
                                         cfg.weight_decay)
        self.schedule = LRSchedule(cfg.lr_scheduler, cfg.lr, cfg.warmup_updates, cfg.warmup_init_lr, cfg.min_lr,
                                   cfg.max_updates, cfg.decay_fraction, cfg.warmup_share)
        self.save_dir = Path(cfg.save_dir)
        self.update, self.epoch, self.batch_index = 0, 1, 0
        self.best_loss = math.inf
        self.valid_history: list[dict] = []
        self.elapsed_s = 0.0
        self.tokens_seen = 0
        self.log = TrainLog(self.save_dir / "train_log.jsonl")
        last = self.save_dir / "checkpoint_last.pt"
        if last.is_file():
            self._resume(last)

    # ---- checkpoints ------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": FORMAT_VERSION,
            "model": self.model.state_dict(), "init_kwargs": self.model.init_kwargs(),
            "lm_config": self.arch.to_dict(), "space": self.space.to_dict(), "context": self.context,
            "vocabulary": self.vocabulary, "config": OmegaConf.to_container(self.cfg, resolve=True),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.schedule.state_dict(), **run_state(self),
        }

    def _resume(self, path: Path) -> None:
        ckpt = load_lm_checkpoint(path, self.device)
        ours = {"space": self.space.to_dict(), "lm_config": self.arch.to_dict(), "context": self.context}
        for key, value in ours.items():
            if ckpt[key] != value:
                raise CheckpointError(f"{path}: checkpoint has another {key} ({ckpt[key]!r}) than this run "
                                      f"({value!r}): use another save_dir")
        if ckpt["vocabulary"].get("symbols") != self.vocabulary["symbols"]:
            raise CheckpointError(f"{path}: checkpoint was trained with another dictionary than {self.cfg.data}'s")
        def load_states() -> None:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        restore_run_state(self, ckpt, path, load_states)
        print(f"resumed from {path} at update {self.update} (epoch {self.epoch}, batch {self.batch_index})",
              file=sys.stderr)

    def save(self, best: bool = False) -> None:
        paths = [self.save_dir / "checkpoint_last.pt"] + ([self.save_dir / "checkpoint_best.pt"] if best else [])
        save_torch(self._state(), paths)

    def progress(self) -> float:
        """Share of the wall-clock budget spent (0 without one)."""
        b = self.cfg.budget_minutes
        return min(self.elapsed_s / (60.0 * b), 1.0) if b else 0.0

    # ---- data -------------------------------------------------------------------------------
    def _batches_per_epoch(self) -> int:
        return max(1, len(self.train_blocks) // self.cfg.batch_size)

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of the seeded epoch order (a pure function of seed, epoch and position;
        the last partial batch of an epoch is left out, so every update sees the same tokens)."""
        if self.batch_index >= self._batches_per_epoch():
            self.epoch, self.batch_index = self.epoch + 1, 0
        order = list(range(len(self.train_blocks)))
        random.Random(self.cfg.seed * 1_000_003 + self.epoch).shuffle(order)
        b = self.cfg.batch_size
        ids = order[self.batch_index * b:(self.batch_index + 1) * b]
        self.batch_index += 1
        xs, ys = zip(*(self.train_blocks[i] for i in ids))
        return torch.stack(xs).to(self.device), torch.stack(ys).to(self.device)

    def _valid_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.valid_blocks.batches(self.cfg.batch_size, limit=self.cfg.max_valid_blocks)
        return ((x.to(self.device), y.to(self.device)) for x, y in batches)

    # ---- one update, validation ---------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        c = self.cfg
        update = self.update + 1
        torch.manual_seed(update_seed(c.seed, update, 0))
        lr = self.schedule.step(self.optimizer, update, self.progress())
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        x, y = self._next_batch()
        with self._autocast():
            logits = self.model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        gnorm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_norm)) if c.clip_norm else math.nan
        self.optimizer.step()
        self.update = update
        self.tokens_seen += y.numel()
        return {"loss": loss.item(), "ntokens": y.numel(), "lr": lr, "gnorm": gnorm}

    def validate(self) -> dict[str, float]:
        """Validation loss (nats per token) and perplexity."""
        with self._autocast():
            ppl = perplexity(self.model, self._valid_batches())
        return {"loss": math.log(ppl), "ppl": ppl}

    def _autocast(self) -> Any:
        return autocast(self.device, self.amp_dtype)

    # ---- loop -------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run to `max_updates` (or `max_epochs` / the budget); return the last validation."""
        c = self.cfg
        self.save_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.save_dir, "checkpoint*")  # what a kill during a save left behind
        self.log.rewind(self.update)
        atomic_write_text(self.save_dir / "config.yaml", OmegaConf.to_yaml(c))
        n = sum(p.numel() for p in self.model.parameters())
        print(f"hat train: decoder-only LM {self.arch.describe()}, {n / 1e6:.2f} M params, context {self.context}, "
              f"{self.train_blocks.num_tokens} train tokens in {len(self.train_blocks)} blocks, "
              f"device {self.device}, amp {'bf16' if self.amp_dtype else 'fp32'}", file=sys.stderr)
        if self.update >= c.max_updates:
            print(f"hat train: {self.save_dir} already reached max_updates={c.max_updates}", file=sys.stderr)
            return self._result(self.valid_history[-1] if self.valid_history else None)
        last_valid = run_updates(self, validate=lambda t_start: self._validate_and_log(),
                                 save=lambda best, numbered: self.save(best=best), show_progress=c.progress)
        return self._result(last_valid)

    def _result(self, valid: dict | None) -> dict[str, Any]:
        return {"update": self.update, "valid": valid, "elapsed_s": self.elapsed_s, "tokens_seen": self.tokens_seen}

    def _validate_and_log(self) -> tuple[dict, bool]:
        res = self.validate()
        best = res["loss"] < self.best_loss
        self.best_loss = min(self.best_loss, res["loss"])
        rec = {"update": self.update, "epoch": self.epoch, "elapsed_s": round(self.elapsed_s, 1),
               "tokens_seen": self.tokens_seen, **res}
        self.valid_history.append(rec)
        self.log.write({"valid": rec})
        print(f"valid @ {self.update}: loss {res['loss']:.3f} ppl {res['ppl']:.2f}", file=sys.stderr, flush=True)
        return rec, best
