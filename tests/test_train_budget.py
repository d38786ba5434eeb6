"""Wall-clock budgets (time-aware LR decay, resumable clock) and distillation while fine-tuning."""
from __future__ import annotations

import pytest
import torch

from hat.model.checkpoint import load_checkpoint
from hat.space import load_space, save_subconfig
from hat.train import LRSchedule
from hat.train.config import load_train_config
from hat.train.trainer import Trainer
from test_train import _train, trained, work  # noqa: F401  (module fixtures)


class FakeClock:
    """`time.time` that advances `step` seconds per call: a deterministic wall clock."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 1000.0, step

    def time(self) -> float:
        self.now += self.step
        return self.now


def test_lr_decay_follows_the_budget_share():
    cos = LRSchedule("cosine", 1e-3, warmup_updates=10, warmup_init_lr=1e-7, min_lr=1e-5, max_updates=1010)
    assert cos.lr_at(20, progress=1.0) == pytest.approx(1e-5)  # budget spent: fully annealed
    assert cos.lr_at(20, progress=0.5) == pytest.approx(cos.lr_at(505))
    assert cos.lr_at(800, progress=0.1) == pytest.approx(cos.lr_at(800))  # updates further on: they rule
    assert cos.lr_at(5, progress=0.9) == pytest.approx(cos.lr_at(5))  # warm-up counts updates


def test_wsd_holds_the_rate_then_decays_linearly_in_the_last_share():
    wsd = LRSchedule("wsd", 1e-3, warmup_updates=10, warmup_init_lr=1e-7, min_lr=1e-5, max_updates=1010,
                     decay_fraction=0.2)
    assert wsd.lr_at(5) == pytest.approx((1e-7 + 1e-3) / 2)  # warm-up as before
    assert [wsd.lr_at(u) for u in (10, 500, 810)] == pytest.approx([1e-3] * 3)  # stable
    assert wsd.lr_at(910) == pytest.approx((1e-3 + 1e-5) / 2)  # half-way down the last 20 %
    assert wsd.lr_at(1010) == pytest.approx(1e-5)
    assert wsd.lr_at(20, progress=0.9) == pytest.approx(wsd.lr_at(909))  # 0.9 of the budget = update 909 of 1010
    assert LRSchedule("cosine", 1e-3, 10, 1e-7, 1e-5, 1010).lr_at(500) < 1e-3  # cosine would have decayed


def test_budget_stops_anneals_and_survives_a_resume(work, tmp_path, monkeypatch):
    import hat.train.trainer as T

    monkeypatch.setattr(T, "time", FakeClock(step=1.0))  # every clock read: +1 s
    out = tmp_path / "budget"
    # 1 minute of budget; max_updates far away, so only the clock can stop the run
    assert _train(work, out, "max_updates=100000", "budget_minutes=1", "save_interval=5", "validate_interval=1000") == 0
    ck = load_checkpoint(out / "checkpoint_last.pt")
    assert 5 < ck["update"] < 100 and ck["elapsed_s"] >= 60.0
    assert ck["tokens_seen"] > 0
    lrs = [r["train"]["lr"] for r in map(__import__("json").loads, (out / "train_log.jsonl").read_text().splitlines())
           if "train" in r]
    assert lrs[-1] < 0.2 * max(lrs)  # annealed within the budget, not cut at full learning rate
    # a rerun finds the budget spent and trains nothing more
    assert _train(work, out, "max_updates=100000", "budget_minutes=1", "save_interval=5", "validate_interval=1000") == 0
    assert load_checkpoint(out / "checkpoint_last.pt")["update"] == ck["update"]
    # a larger budget resumes the clock where it stopped instead of starting it again
    assert _train(work, out, "max_updates=100000", "budget_minutes=1.5", "save_interval=5", "validate_interval=1000") == 0
    more = load_checkpoint(out / "checkpoint_last.pt")
    assert ck["update"] < more["update"] < 2 * ck["update"] + 5 and more["elapsed_s"] >= 90.0


def _fixed_trainer(work, trained, tmp_path, name: str, *extra: str) -> Trainer:  # noqa: F811
    space = load_space(work / "space.yaml")
    save_subconfig(space.smallest(), tmp_path / "sub.yaml")
    cfg = load_train_config(str(work / "cfg.yaml"), [
        f"save_dir={tmp_path / name}", "sampling.policy=fixed", f"sampling.subnet={tmp_path / 'sub.yaml'}",
        f"init_from={trained / 'checkpoint_last.pt'}", "dropout=0", "attention_dropout=0", *extra])
    return Trainer(cfg)


def test_fixed_distillation_learns_from_a_frozen_teacher(work, trained, tmp_path):  # noqa: F811
    plain = _fixed_trainer(work, trained, tmp_path, "plain")
    kd = _fixed_trainer(work, trained, tmp_path, "kd", "sampling.distill=true", "sampling.distill_alpha=1.0")
    assert plain.teacher is None and kd.teacher is not None
    teacher, sub = kd.teacher.model, kd.teacher.subnet
    assert sub == kd.space.largest()
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    a, b = plain.train_step(), kd.train_step()
    assert a["loss"] == pytest.approx(b["loss"])  # same data, same start: the reported CE agrees
    w = "encoder.layers.0.ffn.fc1.weight"
    moved_plain = plain.model.state_dict()[w] - frozen[w]
    moved_kd = kd.model.state_dict()[w] - frozen[w]
    assert moved_kd.abs().sum() > 0 and not torch.allclose(moved_plain, moved_kd)  # the KD term changed the update
    for _ in range(2):
        kd.train_step()
    assert all(torch.equal(frozen[k], v) for k, v in teacher.state_dict().items())  # the teacher did not move
    assert all(not p.requires_grad for p in teacher.parameters())


def test_fixed_distillation_needs_a_teacher(work, tmp_path, capsys):  # noqa: F811
    space = load_space(work / "space.yaml")
    save_subconfig(space.smallest(), tmp_path / "sub.yaml")
    assert _train(work, tmp_path / "x", "sampling.policy=fixed", f"sampling.subnet={tmp_path / 'sub.yaml'}",
                  "sampling.distill=true") == 2
    assert "init_from" in capsys.readouterr().err
    assert _train(work, tmp_path / "y", "budget_minutes=-1") == 2
