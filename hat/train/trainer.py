"""The SuperTransformer training loop: data, update step, validation, checkpoints.

One update = `update_freq` global batches. A global batch is built for `max_tokens *
world_size` tokens and every rank takes the slice `batch[rank::world_size]`, so N workers with
`max_tokens=M` process exactly the batches one worker with `max_tokens=N*M` would. Losses are
summed, gradients all-reduced and divided by the global target-token count once.
Dropout is reseeded from `(seed, update, rank)` at every update, so a resumed run replays the
uninterrupted one bitwise on CPU; `save_interval_minutes` also saves by the training clock, so a
killed budget-bounded run resumes with its budget's clock as saved. Config: `hat.train.config`.
"""
from __future__ import annotations

import hashlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from hat.data.batching import batch_by_tokens, collate
from hat.data.dataset import ParallelDataset
from hat.errors import CheckpointError, ConfigError, DataError, first_line
from hat.files import atomic_write_text, remove_stale_temps, save_torch
from hat.model import SuperTransformer
from hat.model.checkpoint import FORMAT, FORMAT_VERSION, check_compatible, load_checkpoint
from hat.space import describe, load_space, load_subconfig
from hat.train import distributed as D
from hat.train.compute import AMP_DTYPES, autocast, resolve_compute
from hat.train.config import model_args
from hat.train.distill import Teacher
from hat.train.log import TrainLog
from hat.train.loop import run_updates
from hat.train.loss import distill_loss, label_smoothed_nll_loss
from hat.train.optim import LRSchedule, build_optimizer
from hat.train.rng import update_seed
from hat.train.sampling import Sampler
from hat.train.state import restore_run_state, run_state


class Trainer:
    """Build everything from a resolved config; `train()` runs to `max_updates` (or the budget)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        dev, amp = resolve_compute(cfg)
        self.env = D.init_distributed(dev)
        self.device = torch.device(f"cuda:{self.env.local_rank}" if dev == "cuda" else "cpu")
        self.amp_dtype = AMP_DTYPES[amp]
        self.scaler = torch.amp.GradScaler(dev, enabled=amp == "fp16")

        self.space = load_space(cfg.space)
        self.train_data = ParallelDataset(cfg.data, "train")
        self.valid_data = ParallelDataset(cfg.data, "valid")
        sd, td = self.train_data.src_dict, self.train_data.tgt_dict
        self.pad, self.eos = td.pad, td.eos
        self.model_args = model_args(cfg, len(sd), len(td), self.pad)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        try:
            self.model = SuperTransformer(self.space, self.model_args).to(self.device)
        except ValueError as e:
            raise ConfigError(f"{cfg.data}: {e}") from None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        s = cfg.sampling
        subnet = self.space.validate(load_subconfig(s.subnet), source=str(s.subnet)) if s.subnet else None
        self.sampler = Sampler(self.space, s.policy, cfg.seed, s.sandwich_k, subnet)
        self.teacher = (Teacher(cfg.init_from, s.teacher, self.space, self.model_args, self.device)
                        if s.distill and s.policy == "fixed" else None)  # checked before anything is touched
        self.optimizer = build_optimizer(self.params, cfg.lr, tuple(cfg.adam_betas), cfg.adam_eps, cfg.weight_decay)
        self.schedule = LRSchedule(cfg.lr_scheduler, cfg.lr, cfg.warmup_updates, cfg.warmup_init_lr, cfg.min_lr,
                                   cfg.max_updates, cfg.decay_fraction, cfg.warmup_share)

        self.save_dir = Path(cfg.save_dir)
        self.update, self.epoch, self.batch_index = 0, 1, 0
        self.best_loss = math.inf
        self.valid_history: list[dict] = []
        self.subnet_digest = ""  # hash chain of the subnets trained so far (DDP consistency check)
        self.elapsed_s = 0.0  # training wall-clock across resumes (the budget's clock)
        self.tokens_seen = 0  # target tokens trained on, across resumes
        self._batches: list[list[int]] | None = None
        self._batches_epoch = 0
        last = self.save_dir / "checkpoint_last.pt"
        if self.env.is_master:
            remove_stale_temps(self.save_dir, "checkpoint*")  # what a kill during a save left behind
        self.log = TrainLog(self.save_dir / "train_log.jsonl", self.env.is_master)
        if last.is_file():
            self._resume(last)
            self.log.rewind(self.update)
        elif cfg.init_from:
            self._init_from(cfg.init_from)
        self.writer = None
        if self.env.is_master and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.save_dir / "tb"), purge_step=self.update + 1 if self.update else None)

    # ---- checkpoints ------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            **run_state(self),
            "subnet_digest": self.subnet_digest,
            "teacher_digest": self.teacher.digest if self.teacher else None,
            "world_size": self.env.world_size,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "space": self.space.to_dict(),
            "model_args": self.model_args.to_dict(),
        }

    def _resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path, self.device)
        check_compatible(ckpt, path, self.space, self.model_args)
        if self.teacher:
            self.teacher.check_resumed(ckpt.get("teacher_digest"), path)
        def load_states() -> None:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scaler.load_state_dict(ckpt["scaler"])
            self.subnet_digest = str(ckpt.get("subnet_digest", ""))
        restore_run_state(self, ckpt, path, load_states)
        if self.env.is_master:
            print(f"resumed from {path} at update {self.update} (epoch {self.epoch}, batch {self.batch_index})", file=sys.stderr)

    def _init_from(self, path: str) -> None:
        ckpt = load_checkpoint(path, self.device)
        check_compatible(ckpt, path, self.space, self.model_args)
        try:
            self.model.load_state_dict(ckpt["model"])
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{path}: weights do not match this model ({first_line(e, 160)})") from None
        if self.env.is_master:
            print(f"initialised weights from {path} (update {ckpt['update']})", file=sys.stderr)

    def progress(self) -> float:
        """Share of the wall-clock budget spent (0 without one)."""
        b = self.cfg.budget_minutes
        return min(self.elapsed_s / (60.0 * b), 1.0) if b else 0.0

    def save(self, best: bool = False, numbered: bool = False) -> None:
        if self.env.is_master:
            paths = [self.save_dir / "checkpoint_last.pt"]
            if numbered:
                paths.append(self.save_dir / f"checkpoint_{self.update}.pt")
            if best:
                paths.append(self.save_dir / "checkpoint_best.pt")
            save_torch(self._state(), paths)
            keep = self.cfg.keep_interval_checkpoints
            if numbered and keep >= 0:
                old = sorted(self.save_dir.glob("checkpoint_[0-9]*.pt"), key=lambda q: int(q.stem.split("_")[1]))
                for q in old[: max(len(old) - keep, 0)]:
                    q.unlink()
        D.barrier(self.env)

    # ---- data -------------------------------------------------------------------------------
    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        if self._batches is None or self._batches_epoch != epoch:
            w, c = self.env.world_size, self.cfg
            limit = c.max_tokens * w
            self._batches = batch_by_tokens(
                self.train_data.src_sizes, self.train_data.tgt_sizes, limit,
                max_sentences=c.max_sentences * w if c.max_sentences else None, seed=c.seed, epoch=epoch,
                shuffle=True, max_positions=c.max_positions, what=f"train (epoch {epoch})",
            )
            if not self._batches:
                raise DataError(f"{c.data}: no training pair fits max_tokens={c.max_tokens} and "
                                f"max_positions={c.max_positions}")
            self._batches_epoch = epoch
        return self._batches

    def _next_batch(self) -> list[int]:
        batches = self._epoch_batches(self.epoch)
        if self.batch_index >= len(batches):
            self.epoch, self.batch_index = self.epoch + 1, 0
            batches = self._epoch_batches(self.epoch)
        ids = batches[self.batch_index]
        self.batch_index += 1
        return ids[self.env.rank::self.env.world_size]

    def _collate(self, dataset: ParallelDataset, ids: list[int]) -> dict:
        sample = collate([dataset[i] for i in ids], self.pad, self.eos)
        for k in ("src_tokens", "src_lengths", "prev_output_tokens", "target"):
            sample[k] = sample[k].to(self.device, non_blocking=True)
        return sample

    def _autocast(self):
        return autocast(self.device, self.amp_dtype)

    # ---- one update -------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """Forward/backward `update_freq` micro-batches for each sampled subnet, all-reduce, step."""
        c = self.cfg
        update = self.update + 1
        configs = self.sampler.configs(update)
        key = ";".join(describe(x) for x in configs)
        self.subnet_digest = hashlib.sha256((self.subnet_digest + key).encode()).hexdigest()
        torch.manual_seed(update_seed(c.seed, update, self.env.rank))
        lr = self.schedule.step(self.optimizer, update, self.progress())
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        distill = c.sampling.distill and c.sampling.policy == "sandwich"
        alpha = float(c.sampling.distill_alpha)
        loss_sum = nll_sum = ntokens = nsent = 0.0
        for _ in range(c.update_freq):
            ids = self._next_batch()
            if not ids:
                continue
            sample = self._collate(self.train_data, ids)
            target = sample["target"]
            teacher = self.teacher.probs(sample, self._autocast) if self.teacher is not None else None
            for j, sub in enumerate(configs):
                with self._autocast():
                    logits = self.model(sample["src_tokens"], sample["src_lengths"], sample["prev_output_tokens"], sub)
                loss, nll = label_smoothed_nll_loss(logits, target, c.label_smoothing, self.pad)
                if j == 0:
                    loss_sum += loss.item()
                    nll_sum += nll.item()
                    if distill:
                        teacher = torch.softmax(logits.detach().float(), dim=-1)
                        # the largest learns from the data; the others from it below
                if teacher is not None and not (j == 0 and distill):
                    loss = (1 - alpha) * loss + alpha * distill_loss(logits, teacher, target, self.pad)
                self.scaler.scale(loss).backward()
                del logits
            ntokens += sample["ntokens"]
            nsent += sample["nsentences"]
        loss_sum, nll_sum, ntokens, nsent = D.all_reduce_sum([loss_sum, nll_sum, ntokens, nsent], self.env, self.device)
        D.all_reduce_grads(self.params, self.env)
        if ntokens > 0:
            for p in self.params:
                if p.grad is not None:
                    p.grad.div_(ntokens)
        self.scaler.unscale_(self.optimizer)
        gnorm = float("nan")
        if c.clip_norm > 0:
            gnorm = float(torch.nn.utils.clip_grad_norm_(self.params, c.clip_norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.update = update
        self.tokens_seen += int(ntokens)
        n = max(ntokens, 1)
        return {"loss": loss_sum / n, "nll": nll_sum / n, "ntokens": ntokens, "nsentences": nsent, "lr": lr, "gnorm": gnorm}

    # ---- validation -------------------------------------------------------------------------
    def _valid_batches(self) -> list[list[int]]:
        """The validation batches (over-long pairs skipped and counted); checked before training starts."""
        c, n = self.cfg, len(self.valid_data)
        n = min(n, int(c.max_valid_sentences)) if c.max_valid_sentences else n
        batches = batch_by_tokens(self.valid_data.src_sizes[:n], self.valid_data.tgt_sizes[:n],
                                  c.max_tokens * self.env.world_size, seed=c.seed, epoch=1, shuffle=False,
                                  max_positions=c.max_positions, what="valid")
        if not batches:
            raise DataError(f"{c.data}: no valid pair fits max_tokens={c.max_tokens} and max_positions={c.max_positions}")
        return batches

    @torch.no_grad()
    def validate(self) -> dict[str, dict[str, float]]:
        """Loss / nll (nats per target token) and perplexity of the validation subnets."""
        self.model.eval()
        w = self.env.world_size
        batches = self._valid_batches()
        out = {}
        for name, sub in self.sampler.validation_configs().items():
            loss_sum = nll_sum = ntok = 0.0
            for ids in batches:
                ids = ids[self.env.rank::w]
                if not ids:
                    continue
                sample = self._collate(self.valid_data, ids)
                with self._autocast():
                    logits = self.model(sample["src_tokens"], sample["src_lengths"], sample["prev_output_tokens"], sub)
                loss, nll = label_smoothed_nll_loss(logits, sample["target"], self.cfg.label_smoothing, self.pad)
                loss_sum += loss.item()
                nll_sum += nll.item()
                ntok += sample["ntokens"]
            loss_sum, nll_sum, ntok = D.all_reduce_sum([loss_sum, nll_sum, ntok], self.env, self.device)
            n = max(ntok, 1)
            out[name] = {"loss": loss_sum / n, "nll": nll_sum / n, "ppl": math.exp(min(nll_sum / n, 50))}
        return out

    # ---- loop -------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run to `max_updates` (or `max_epochs` / `stop_time_minutes`); return the last validation."""
        c, master = self.cfg, self.env.is_master
        self.save_dir.mkdir(parents=True, exist_ok=True)
        if master:
            atomic_write_text(self.save_dir / "config.yaml", OmegaConf.to_yaml(self.cfg))
            n = sum(p.numel() for p in self.params)
            print(f"hat train: space {self.space.name}, {n / 1e6:.2f} M params, policy {c.sampling.policy}, "
                  f"{len(self.train_data)} train pairs, world {self.env.world_size}, device {self.device}, "
                  f"amp {self.amp_dtype or 'fp32'}", file=sys.stderr)
        self._epoch_batches(self.epoch)  # data that cannot train is refused now, not mid-run
        self._valid_batches()
        if self.update >= c.max_updates:
            if master:
                print(f"hat train: {self.save_dir} already reached max_updates={c.max_updates}", file=sys.stderr)
            return {"update": self.update, "valid": self.valid_history[-1] if self.valid_history else None,
                    "subnet_digest": self.subnet_digest}
        last_valid = run_updates(self, validate=self._validate_and_log, save=self.save,
                                 show_progress=master and c.progress, agree=self._agreed,
                                 stop_minutes=c.stop_time_minutes, wall_s=True, lr_postfix=True, writer=self.writer)
        digests = D.all_gather_object(self.subnet_digest, self.env)
        if len(set(digests)) != 1:
            raise RuntimeError(f"ranks trained different subnets: {digests}")
        if self.writer:
            self.writer.close()
        return {"update": self.update, "valid": last_valid, "subnet_digest": digests[0],
                "elapsed_s": self.elapsed_s, "tokens_seen": self.tokens_seen}

    def _agreed(self, seconds: float) -> float:
        """The ranks' mean clock, so every rank stops (and saves by the clock) at the same update."""
        if self.env.world_size == 1 or not (self.cfg.budget_minutes or self.cfg.save_interval_minutes):
            return seconds
        return D.all_reduce_sum([seconds], self.env, self.device)[0] / self.env.world_size

    def _validate_and_log(self, t_start: float) -> tuple[dict, bool]:
        res = self.validate()
        first = next(iter(res))
        best = res[first]["loss"] < self.best_loss
        self.best_loss = min(self.best_loss, res[first]["loss"])
        rec = {"update": self.update, "epoch": self.epoch, "wall_s": round(time.time() - t_start, 1), **res}
        self.valid_history.append(rec)
        self.log.write({"valid": rec})
        if self.env.is_master:
            msg = " | ".join(f"{k} loss {v['loss']:.3f} ppl {v['ppl']:.2f}" for k, v in res.items())
            print(f"valid @ {self.update}: {msg}", file=sys.stderr, flush=True)
            if self.writer:
                for k, v in res.items():
                    self.writer.add_scalar(f"valid/{k}_loss", v["loss"], self.update)
                    self.writer.add_scalar(f"valid/{k}_ppl", v["ppl"], self.update)
        return res, best
