"""SuperTransformer training: loss, schedules, sampling, checkpoints, SIGKILL-resume, DDP."""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from hat.cli import main
from hat.data import ParallelDataset, batch_by_tokens, collate
from hat.errors import CheckpointError
from hat.space import load_space, save_subconfig
from hat.model.checkpoint import load_checkpoint, load_super_checkpoint
from hat.train import LRSchedule, Sampler, distill_loss, label_smoothed_nll_loss
from hat.train.config import load_train_config
from hat.train.trainer import Trainer
from helpers import kill_at_first_checkpoint

ROOT = Path(__file__).resolve().parent.parent

SPACE = {
    "name": "test-micro",
    "super": {"encoder_embed_dim": 32, "decoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
              "decoder_ffn_embed_dim": 64, "encoder_layer_num": 2, "decoder_layer_num": 2,
              "encoder_attention_heads": 2, "decoder_attention_heads": 2, "qkv_dim": 32},
    "choices": {"encoder_embed_dim": [32, 24], "decoder_embed_dim": [32, 24], "encoder_layer_num": [1, 2],
                "decoder_layer_num": [1, 2], "encoder_ffn_embed_dim": [64, 32], "decoder_ffn_embed_dim": [64, 32],
                "encoder_self_attention_heads": [2, 1], "decoder_self_attention_heads": [2, 1],
                "decoder_ende_attention_heads": [2, 1], "decoder_arbitrary_ende_attn": [-1, 1]},
}


# ---- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """~300 synthetic de-en pairs (a word-by-word 'translation') prepared with `hat prepare text`."""
    d = tmp_path_factory.mktemp("train")
    rng = random.Random(0)
    de = "haus katze hund baum auto buch tisch stuhl fenster tuer rot blau gruen gross klein alt neu und oder nicht".split()
    en = "house cat dog tree car book table chair window door red blue green big small old new and or not".split()
    for split, n in (("train", 300), ("valid", 40)):
        src, tgt = [], []
        for _ in range(n):
            idx = [rng.randrange(len(de)) for _ in range(rng.randint(3, 12))]
            src.append(" ".join(de[i] for i in idx))
            tgt.append(" ".join(en[i] for i in idx))
        (d / f"{split}.de").write_text("\n".join(src) + "\n")
        (d / f"{split}.en").write_text("\n".join(tgt) + "\n")
    rc = main(["prepare", "text", "--src", "de", "--tgt", "en", "--trainpref", str(d / "train"),
               "--validpref", str(d / "valid"), "--out", str(d / "data"), "--vocab-size", "100"])
    assert rc == 0
    (d / "space.yaml").write_text(yaml.safe_dump(SPACE))
    cfg = {"space": str(d / "space.yaml"), "data": str(d / "data"), "max_tokens": 256, "max_updates": 30,
           "lr": 3e-3, "warmup_updates": 5, "validate_interval": 10, "save_interval": 10, "log_interval": 5,
           "dropout": 0.1, "num_threads": 1, "tensorboard": False, "progress": False, "max_positions": 64}
    (d / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return d


def _train(work: Path, save_dir: Path, *overrides: str) -> int:
    return main(["train", "--config", str(work / "cfg.yaml"), f"save_dir={save_dir}", *overrides])


def _model_state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _log(run: Path) -> list[list[tuple[str, int]]]:
    return [[(kind, rec["update"]) for kind, rec in json.loads(line).items()]
            for line in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(work) -> Path:
    out = work / "run_uniform"
    assert _train(work, out) == 0
    return out


# ---- units -----------------------------------------------------------------------------------
def test_label_smoothing_follows_fairseq_and_ignores_pad():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    target = torch.randint(3, 11, (2, 5))
    target[0, 3:] = 1  # pad
    loss, nll = label_smoothed_nll_loss(logits, target, 0.0, ignore_index=1)
    ref = F.cross_entropy(logits.view(-1, 11), target.view(-1), ignore_index=1, reduction="sum")
    assert torch.allclose(loss, ref) and torch.allclose(nll, ref)
    eps = 0.1
    loss, nll = label_smoothed_nll_loss(logits, target, eps, ignore_index=1)
    lp = F.log_softmax(logits, -1)
    keep = target.ne(1)
    smooth = -lp.sum(-1)[keep].sum()
    expected = (1 - eps - eps / 10) * ref + eps / 10 * smooth
    assert torch.allclose(loss, expected) and torch.allclose(nll, ref)


def test_lr_schedules():
    cos = LRSchedule("cosine", 1e-3, warmup_updates=100, warmup_init_lr=1e-7, min_lr=1e-7, max_updates=1100)
    assert cos.lr_at(0) == pytest.approx(1e-7)
    assert cos.lr_at(50) == pytest.approx((1e-7 + 1e-3) / 2)
    assert cos.lr_at(100) == pytest.approx(1e-3)
    assert cos.lr_at(600) == pytest.approx((1e-3 + 1e-7) / 2)
    assert cos.lr_at(1100) == pytest.approx(1e-7)
    inv = LRSchedule("inverse_sqrt", 5e-4, warmup_updates=4000, warmup_init_lr=1e-7, min_lr=0, max_updates=50000)
    assert inv.lr_at(4000) == pytest.approx(5e-4)
    assert inv.lr_at(16000) == pytest.approx(2.5e-4)


def test_sampling_depends_only_on_update_number():
    space = load_space("tiny")
    a, b = Sampler(space, "uniform", seed=3), Sampler(space, "uniform", seed=3)
    assert [a.configs(u) for u in range(1, 20)] == [b.configs(u) for u in range(1, 20)]
    assert a.configs(1) == [space.sample(random.Random(3 + 1))]
    assert len({a.configs(u)[0] for u in range(1, 20)}) > 5
    sw = Sampler(space, "sandwich", seed=3, sandwich_k=2).configs(7)
    assert sw[:2] == [space.largest(), space.smallest()] and len(sw) == 4
    fixed = Sampler(space, "fixed", seed=3, subnet=space.smallest())
    assert fixed.configs(1) == fixed.configs(99) == [space.smallest()]


# ---- end to end ------------------------------------------------------------------------------
def test_training_writes_checkpoints_and_loss_falls(trained):
    names = sorted(p.name for p in trained.glob("checkpoint*.pt"))
    assert names == ["checkpoint_10.pt", "checkpoint_20.pt", "checkpoint_30.pt", "checkpoint_best.pt", "checkpoint_last.pt"]
    ck = load_checkpoint(trained / "checkpoint_last.pt")
    assert ck["update"] == 30 and ck["config"]["max_updates"] == 30
    assert ck["space"]["name"] == "test-micro" and set(ck["rng"]) >= {"python", "numpy", "torch"}
    losses = [v["largest"]["loss"] for v in ck["valid"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert ck["best_valid_loss"] == pytest.approx(min(losses))
    assert not list(trained.glob("*.tmp"))


def test_load_super_checkpoint_rebuilds_the_model(trained, work):
    """The rebuilt model reproduces the validation losses the trainer recorded at that update:
    a number computed during training from the live model, not read back from the same file."""
    model, ck = load_super_checkpoint(trained / "checkpoint_last.pt")
    assert not model.training
    recorded = ck["valid"][-1]
    assert recorded["update"] == ck["update"] == 30
    ds = ParallelDataset(work / "data", "valid")
    batches = batch_by_tokens(ds.src_sizes, ds.tgt_sizes, 256, seed=1, epoch=1, shuffle=False, max_positions=64)
    for name, sub in (("largest", model.space.largest()), ("smallest", model.space.smallest())):
        loss = ntok = 0.0
        with torch.no_grad():
            for ids in batches:
                b = collate([ds[i] for i in ids], ds.tgt_dict.pad, ds.tgt_dict.eos)
                logits = model(b["src_tokens"], b["src_lengths"], b["prev_output_tokens"], sub)
                loss += label_smoothed_nll_loss(logits, b["target"], 0.1, ds.tgt_dict.pad)[0].item()
                ntok += b["ntokens"]
        assert loss / ntok == pytest.approx(recorded[name]["loss"], rel=1e-5), name


def test_bad_checkpoints_are_refused(trained, work, tmp_path, capsys):
    good = (trained / "checkpoint_last.pt").read_bytes()
    bad = tmp_path / "run" / "checkpoint_last.pt"
    bad.parent.mkdir()
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="checkpoint_last.pt"):
        load_checkpoint(bad)
    assert _train(work, bad.parent) == 2  # the CLI refuses to resume from it, one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupt or truncated" in err[0] and str(bad) in err[0]
    # a checkpoint of another design space in save_dir
    other = dict(SPACE, name="other")
    other["choices"] = dict(SPACE["choices"], encoder_ffn_embed_dim=[64, 48])
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    bad.write_bytes(good)
    assert _train(work, bad.parent, f"space={tmp_path / 'other.yaml'}") == 2
    err = capsys.readouterr().err
    assert "design space 'test-micro'" in err and str(bad) in err


def test_sigkill_then_resume_is_bitwise_identical(work, tmp_path, capsys):
    over = ["max_updates=150", "save_interval=10", "validate_interval=50", "log_interval=50"]
    ref = tmp_path / "ref"
    assert _train(work, ref, *over) == 0
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hat", "train", "--config", str(work / "cfg.yaml"), f"save_dir={killed}", *over]
    kill_at_first_checkpoint(cmd, killed)
    at = load_checkpoint(killed / "checkpoint_last.pt")["update"]
    assert 10 <= at < 150, "the run must have been killed mid-way"
    capsys.readouterr()
    assert _train(work, killed, *over) == 0
    # it resumed (from the kill's last checkpoint) rather than started over: both would end equal
    err = capsys.readouterr().err
    assert f"resumed from {killed / 'checkpoint_last.pt'} at update {at} " in err, err
    log = [json.loads(line) for line in (killed / "train_log.jsonl").read_text().splitlines()]
    keys = [(kind, rec["update"]) for r in log for kind, rec in r.items()]
    assert len(keys) == len(set(keys)) and keys == [k for r in _log(ref) for k in r]
    assert not list(killed.glob(".*.tmp"))
    a, b = _model_state(ref / "checkpoint_last.pt"), _model_state(killed / "checkpoint_last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    oa = load_checkpoint(ref / "checkpoint_last.pt")["optimizer"]["state"]
    ob = load_checkpoint(killed / "checkpoint_last.pt")["optimizer"]["state"]
    assert all(torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"]) for i in oa)


def test_sandwich_with_distillation_trains(work, tmp_path):
    out = tmp_path / "sw"
    assert _train(work, out, "sampling.policy=sandwich", "sampling.sandwich_k=1", "sampling.distill=true",
                  "sampling.distill_alpha=0.5", "max_updates=10") == 0
    ck = load_checkpoint(out / "checkpoint_last.pt")
    assert ck["update"] == 10 and math.isfinite(ck["valid"][-1]["smallest"]["loss"])


def test_distill_loss_is_cross_entropy_to_the_teacher():
    torch.manual_seed(0)
    logits, teacher_logits = torch.randn(2, 4, 9, requires_grad=True), torch.randn(2, 4, 9)
    target = torch.randint(3, 9, (2, 4))
    target[1, 2:] = 1  # pad
    teacher = torch.softmax(teacher_logits, -1)
    got = distill_loss(logits, teacher, target, ignore_index=1)
    keep = target.ne(1)
    want = -(teacher * F.log_softmax(logits, -1)).sum(-1)[keep].sum()
    assert torch.allclose(got, want)
    got.backward()  # d/dlogits of CE(teacher, softmax(logits)) = softmax(logits) - teacher, pads 0
    grad = (torch.softmax(logits, -1) - teacher) * keep.unsqueeze(-1)
    assert torch.allclose(logits.grad, grad, atol=1e-6)


def _one_update(work: Path, tmp: Path, *over: str) -> Trainer:
    cfg = load_train_config(str(work / "cfg.yaml"), [f"save_dir={tmp}", "sampling.policy=sandwich",
                                                     "sampling.sandwich_k=0", "dropout=0", "attention_dropout=0",
                                                     "label_smoothing=0", *over])
    trainer = Trainer(cfg)
    trainer.train_step()
    return trainer


def test_distillation_changes_the_subnets_loss_and_gradients(work, tmp_path):
    """Sandwich with distillation: the smallest subnet learns from the largest's outputs (detached),
    so its gradients change with distill_alpha; alpha 0 is plain sandwich."""
    def grads(*over: str) -> dict[str, torch.Tensor]:
        t = _one_update(work, tmp_path / "_".join(over), *over)
        return {n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None}

    largest = tmp_path / "largest.yml"
    save_subconfig(load_space(work / "space.yaml").largest(), largest)
    teacher = grads("sampling.policy=fixed", f"sampling.subnet={largest}")  # the largest subnet alone
    plain = grads("sampling.distill=false")
    zero = grads("sampling.distill=true", "sampling.distill_alpha=0.0")
    half = grads("sampling.distill=true", "sampling.distill_alpha=0.5")
    full = grads("sampling.distill=true", "sampling.distill_alpha=1.0")
    assert plain.keys() == zero.keys() == half.keys() == full.keys() == teacher.keys()
    assert all(torch.allclose(plain[n], zero[n], atol=1e-7) for n in plain)
    w = "decoder.layers.0.ffn.fc1.weight"  # trained by both the teacher and the smallest subnet
    # the distillation term has gradients of its own: alpha 1 is not just the teacher's
    assert not torch.allclose(full[w], teacher[w], atol=1e-6)
    assert not torch.allclose(plain[w], half[w]) and not torch.allclose(half[w], full[w])
    # gradients are linear in alpha: half = (plain + full) / 2 for every parameter
    assert all(torch.allclose(half[n], (plain[n] + full[n]) / 2, atol=1e-6) for n in plain)


def test_fixed_subnet_retraining_from_inherited_weights(trained, work, tmp_path):
    space = load_space(work / "space.yaml")
    sub = space.smallest()  # 1+1 layers, d 24, ffn 32
    save_subconfig(sub, tmp_path / "sub.yaml")
    out = tmp_path / "fixed"
    assert _train(work, out, "sampling.policy=fixed", f"sampling.subnet={tmp_path / 'sub.yaml'}",
                  f"init_from={trained / 'checkpoint_last.pt'}", "max_updates=5", "warmup_updates=2", "dropout=0") == 0
    before, after = _model_state(trained / "checkpoint_last.pt"), _model_state(out / "checkpoint_last.pt")
    ck = load_checkpoint(out / "checkpoint_last.pt")
    assert list(ck["valid"][-1]) == ["update", "epoch", "wall_s", "subnet"]
    w = "encoder.layers.0.ffn.fc1.weight"
    assert not torch.equal(before[w][:32, :24], after[w][:32, :24])  # the subnet trained
    assert torch.equal(before[w][32:], after[w][32:])  # inherited weights outside it untouched
    skipped = "encoder.layers.1.ffn.fc1.weight"
    assert torch.equal(before[skipped], after[skipped])


def test_unknown_override_is_refused(work, tmp_path, capsys):
    assert _train(work, tmp_path / "x", "sampling.polcy=uniform") == 2
    assert "sampling.polcy" in capsys.readouterr().err


def test_ddp_two_processes_match_one_process(work, tmp_path):
    over = ["max_updates=8", "dropout=0", "attention_dropout=0", "validate_interval=8", "save_interval=8",
            "lr_scheduler=fixed", "lr=1e-3", "adam_eps=1e-4"]
    # adam_eps: some gradients are exactly zero in exact arithmetic (a key-projection bias shifts
    # every score equally) and only rounding noise in practice; Adam with a tiny eps would blow
    # that noise up to full-size steps that differ between 1 and 2 processes.
    single = tmp_path / "single"
    assert _train(work, single, "max_tokens=512", *over) == 0
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "hat",
           "train", "--config", str(work / "cfg.yaml"), f"save_dir={ddp}", "max_tokens=256", *over]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = load_checkpoint(single / "checkpoint_last.pt"), load_checkpoint(ddp / "checkpoint_last.pt")
    assert b["world_size"] == 2 and a["subnet_digest"] == b["subnet_digest"]
    for k, v in a["model"].items():
        assert torch.allclose(v, b["model"][k], atol=1e-5), k
    assert a["valid"][-1]["largest"]["loss"] == pytest.approx(b["valid"][-1]["largest"]["loss"], rel=1e-4)


# ------------------------------------------------------------------------------------------ averaging
def _fake_checkpoints(tmp_path, n: int = 3):
    """`n` checkpoints of one small SuperTransformer with different weights, in `hat train`'s format."""
    from hat.files import save_torch
    from hat.model import ModelArgs, SuperTransformer
    from hat.model.checkpoint import FORMAT, FORMAT_VERSION
    from hat.space import load_space

    space = load_space("tiny")
    args = ModelArgs(40, 40)
    paths = []
    for i in range(n):
        torch.manual_seed(i)
        model = SuperTransformer(space, args)
        state = {"format": FORMAT, "version": FORMAT_VERSION, "model": model.state_dict(), "space": space.to_dict(),
                 "model_args": args.to_dict(), "update": 100 * (i + 1), "config": {"data": "d"},
                 "optimizer": {"state": {}}}
        paths.append(tmp_path / "run" / f"checkpoint_{100 * (i + 1)}.pt")
        save_torch(state, paths[-1])
    return paths


def test_average_checkpoints_is_the_mean(tmp_path, capsys):
    from hat.model import load_super_checkpoint
    from hat.model.checkpoint import load_checkpoint

    paths = _fake_checkpoints(tmp_path, 3)
    assert main(["average-checkpoints", "--inputs", str(tmp_path / "run"), "--last", "2",
                 "--out", str(tmp_path / "avg.pt")]) == 0
    avg = load_checkpoint(tmp_path / "avg.pt")
    two = [load_checkpoint(p)["model"] for p in paths[1:]]
    for k, v in avg["model"].items():
        torch.testing.assert_close(v, (two[0][k] + two[1][k]) / 2, rtol=0, atol=1e-7)
    assert avg["averaged_from"] == [str(p) for p in paths[1:]] and avg["update"] == 300
    assert "optimizer" not in avg
    load_super_checkpoint(tmp_path / "avg.pt")  # exports, evaluates and searches like any checkpoint
    assert main(["average-checkpoints", "--inputs", *map(str, paths), "--out", str(tmp_path / "all.pt")]) == 0
    three = [load_checkpoint(p)["model"] for p in paths]
    k = next(iter(three[0]))
    torch.testing.assert_close(load_checkpoint(tmp_path / "all.pt")["model"][k],
                               (three[0][k] + three[1][k] + three[2][k]) / 3, rtol=0, atol=1e-7)


def test_average_checkpoints_refuses_mismatched_ones(tmp_path, capsys):
    from hat.files import save_torch
    from hat.model.checkpoint import load_checkpoint

    paths = _fake_checkpoints(tmp_path, 2)
    other = load_checkpoint(paths[1])
    other["model_args"] = dict(other["model_args"], src_vocab_size=41)
    save_torch(other, tmp_path / "other.pt")
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint")
    for inputs, needle in (([paths[0], tmp_path / "other.pt"], "model_args differs"),
                           ([paths[0], bad], "garbage.pt"),
                           ([tmp_path / "nope"], "no such"),
                           ([paths[0], paths[0]], "twice")):
        assert main(["average-checkpoints", "--inputs", *map(str, inputs), "--out", str(tmp_path / "x.pt")]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.pt").exists()


def test_retraining_recipe_warms_up_then_decays():
    from hat.train.config import load_train_config

    cfg = load_train_config("wmt14.en-de.retrain", ["sampling.subnet=s.yml"])
    assert cfg.sampling.policy == "fixed" and cfg.warmup_updates == 4000 < cfg.max_updates
    assert cfg.lr_scheduler == "cosine" and cfg.keep_interval_checkpoints >= 10
    assert load_train_config("wmt14.en-de").space == cfg.space
