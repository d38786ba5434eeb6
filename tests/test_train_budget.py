"""Wall-clock budgets (time-aware LR decay, resumable clock) and distillation while fine-tuning."""
from __future__ import annotations

import json
import signal
import sys

import pytest
import torch

from hat.errors import ConfigError
from hat.model.checkpoint import load_checkpoint
from hat.space import load_space, save_subconfig
from hat.train import LRSchedule
from hat.train.config import load_train_config
from hat.train.trainer import Trainer
from helpers import kill_at_first_checkpoint
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


def test_warmup_share_warms_up_over_that_share_of_the_budget():
    wsd = LRSchedule("wsd", 2e-3, warmup_updates=0, warmup_init_lr=0.0, min_lr=1e-5, max_updates=100_000,
                     decay_fraction=0.2, warmup_share=0.1)
    # by the clock, whatever the update count: a quarter of the warm-up share is a quarter of the rate
    assert wsd.lr_at(3, progress=0.025) == pytest.approx(5e-4)
    assert wsd.lr_at(3000, progress=0.025) == pytest.approx(5e-4)
    assert [wsd.lr_at(7, progress=p) for p in (0.1, 0.5, 0.79)] == pytest.approx([2e-3] * 3)  # then stable
    assert wsd.lr_at(7, progress=0.9) == pytest.approx((2e-3 + 1e-5) / 2)  # and decays in the last 20 %
    both = LRSchedule("wsd", 2e-3, 100, 0.0, 1e-5, 100_000, warmup_share=0.1)
    assert both.lr_at(50, progress=0.5) == pytest.approx(1e-3)  # the updates still warming up rule
    assert both.lr_at(500, progress=0.05) == pytest.approx(1e-3)  # and so does the clock
    with pytest.raises(ConfigError):
        LRSchedule("wsd", 2e-3, 0, 0.0, 1e-5, 1000, warmup_share=1.0)


def test_warmup_share_needs_a_budget(work, tmp_path, capsys):
    assert _train(work, tmp_path / "x", "warmup_share=0.1") == 2
    err = capsys.readouterr().err
    assert "warmup_share=0.1 is a share of budget_minutes" in err and not (tmp_path / "x").exists()
    assert _train(work, tmp_path / "y", "warmup_share=1.5", "budget_minutes=1") == 2
    assert "warmup_share=1.5: must be a number >= 0 and < 1" in capsys.readouterr().err


def test_budget_stops_anneals_and_survives_a_resume(work, tmp_path, monkeypatch):
    import hat.train.loop as L
    import hat.train.trainer as T

    clock = FakeClock(step=1.0)  # every clock read: +1 s (the loop's and the trainer's, one clock)
    monkeypatch.setattr(L, "time", clock)
    monkeypatch.setattr(T, "time", clock)
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


def test_a_killed_budget_run_resumes_from_its_timed_save_with_its_clock(work, tmp_path, capsys):
    """SIGKILL a budget-bounded run that saves only by the clock; the rerun resumes at the saved
    update and spends only what is left of the budget (its clock starts at the saved elapsed_s)."""
    assert _train(work, tmp_path / "bad", "save_interval_minutes=0") == 2
    assert "save_interval_minutes" in capsys.readouterr().err
    budget_s = 6.0
    over = ["max_updates=100000", f"budget_minutes={budget_s / 60}", "save_interval_minutes=0.02",
            "save_interval=100000", "validate_interval=100000", "log_interval=1"]
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hat", "train", "--config", str(work / "cfg.yaml"), f"save_dir={run}", *over]
    status = kill_at_first_checkpoint(cmd, run)
    assert status == -signal.SIGKILL, "the run must have been killed, not have finished"
    saved = load_checkpoint(run / "checkpoint_last.pt")  # the timed save: no update-interval save came
    assert 0 < saved["update"] and 0 < saved["elapsed_s"] < budget_s
    capsys.readouterr()
    assert _train(work, run, *over) == 0
    assert f"resumed from {run / 'checkpoint_last.pt'} at update {saved['update']} " in capsys.readouterr().err
    final = load_checkpoint(run / "checkpoint_last.pt")
    assert saved["update"] < final["update"] < 100000 and final["elapsed_s"] >= budget_s  # stopped by the budget
    train = [json.loads(line)["train"] for line in (run / "train_log.jsonl").read_text().splitlines()
             if "train" in json.loads(line)]
    assert [r["update"] for r in train] == list(range(1, final["update"] + 1))  # one record per update, no repeats
    resumed = [r for r in train if r["update"] > saved["update"]]
    # the resumed run's clock = the saved elapsed_s + its own time (both rounded to 0.1 s in the log) ...
    assert all(r["elapsed_s"] - r["wall_s"] == pytest.approx(saved["elapsed_s"], abs=0.15) for r in resumed)
    # ... and it stopped at the first update that brought the total to the budget (the log rounds)
    assert all(r["elapsed_s"] <= budget_s for r in resumed[:-1]), [r["elapsed_s"] for r in resumed[-3:]]


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
