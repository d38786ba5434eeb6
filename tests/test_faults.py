"""The fault and bad-input sweep: what a careless or hostile user, a full or read-only disk, a kill
or a second process can do to every subcommand. Each case ends in ONE line on stderr with exit
code 2, or in a clean recovery with nothing lost; no case may run code from a file it opens.

Kills are simulated in-process where the on-disk state is what matters (the temp file a SIGKILL
leaves, an exception at the moment of the kill); tests/test_train.py and tests/test_search.py kill
real processes. Full disks raise ENOSPC from fsync, read-only directories EROFS from creating the
temp file (chmod does not stop root), both inside `hat.files`, which every write goes through.
"""
from __future__ import annotations

import base64
import errno
import json
import os
import pickle
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

import hat
import hat.files
from hat.cli import main
from hat.errors import CheckpointError
from hat.latency.dataset import OUR_COLUMNS, LatencyWriter, meta_path
from hat.latency.predictors import FORMAT as PREDICTOR_FORMAT
from hat.model.checkpoint import load_checkpoint
from hat.space import hat_raw_features, load_space, macs, num_params, save_subconfig
from test_train import SPACE as MICRO

DE = "haus katze hund baum auto buch tisch stuhl fenster tuer rot blau gruen gross klein alt neu und".split()
EN = "house cat dog tree car book table chair window door red blue green big small old new and".split()
LONG_WORDS = 1100  # one pair per split longer than the default max_positions (1024 tokens)
TRAIN = ["max_updates=4", "validate_interval=2", "save_interval=2"]


class Killed(BaseException):
    """What a SIGKILL is to the code that was running: nothing after it runs (no handler catches it)."""


# ---- fixtures ------------------------------------------------------------------------------
def _corpus(d: Path, name: str, n: int, seed: int) -> str:
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        idx = [rng.randrange(len(DE)) for _ in range(rng.randint(3, 10))]
        src.append(" ".join(DE[i] for i in idx))
        tgt.append(" ".join(EN[i] for i in idx))
    idx = [rng.randrange(len(DE)) for _ in range(LONG_WORDS)]
    src.insert(n // 2, " ".join(DE[i] for i in idx))
    tgt.insert(n // 2, " ".join(EN[i] for i in idx))
    (d / f"{name}.de").write_text("\n".join(src) + "\n", encoding="utf-8")
    (d / f"{name}.en").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return str(d / name)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> SimpleNamespace:
    """A prepared corpus with an over-long pair in every split, a trained micro SuperTransformer,
    its standalone export, a latency CSV of the tiny space and a predictor fit on it."""
    d = tmp_path_factory.mktemp("faults")
    prefixes = [_corpus(d, s, n, i) for i, (s, n) in enumerate((("train", 150), ("valid", 24), ("test", 12)))]
    assert main(["prepare", "text", "--src", "de", "--tgt", "en", "--trainpref", prefixes[0], "--validpref",
                 prefixes[1], "--testpref", prefixes[2], "--out", str(d / "data"), "--vocab-size", "80"]) == 0
    (d / "space.yaml").write_text(yaml.safe_dump(MICRO))
    cfg = {"space": str(d / "space.yaml"), "data": str(d / "data"), "max_tokens": 256, "lr": 3e-3,
           "warmup_updates": 1, "log_interval": 1, "num_threads": 1, "tensorboard": False, "progress": False,
           "max_positions": 64, "max_valid_sentences": 30}
    (d / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(d / "cfg.yaml"), f"save_dir={d / 'run'}", *TRAIN]) == 0
    sub = d / "sub.yml"
    save_subconfig(load_space(d / "space.yaml").smallest(), sub)
    assert main(["export", "--checkpoint", str(d / "run" / "checkpoint_last.pt"), "--config", str(sub),
                 "--out", str(d / "std")]) == 0
    tiny = load_space("tiny")
    rng = random.Random(0)
    with LatencyWriter(d / "lat.csv") as w:
        for _ in range(30):
            c = tiny.sample(rng)
            ms = macs(c, tiny) / 1e9 * 100
            lat = {"latency_mean_encoder": ms / 3, "latency_mean_decoder": 2 * ms / 3,
                   "latency_std_encoder": 0.1, "latency_std_decoder": 0.1}
            w.write(c, hat_raw_features(c), lat, num_params(c, tiny), macs(c, tiny), 0)
    meta_path(d / "lat.csv").write_text(json.dumps({"space": "tiny", "device": "cpu-2core"}))
    assert main(["fit-predictor", "--data", str(d / "lat.csv"), "--out", str(d / "pred.pt"), "--model", "analytic"]) == 0
    return SimpleNamespace(d=d, data=d / "data", cfg=d / "cfg.yaml", space=d / "space.yaml", run=d / "run",
                           ckpt=d / "run" / "checkpoint_last.pt", sub=sub, model=d / "std" / "model.pt",
                           lat=d / "lat.csv", pred=d / "pred.pt")


def hat_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def refused(capsys, needle: str, *argv: str) -> str:
    """Exit 2 with one line on stderr that contains `needle`; returns the line."""
    rc, _, err = hat_cli(capsys, *argv)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and needle in lines[0], (rc, err)
    return lines[0]


def failed_midway(capsys, needle: str, *argv: str) -> str:
    """A run that reported progress, then stopped: exit 2, its last stderr line the only error,
    one line with `needle`, no traceback."""
    rc, _, err = hat_cli(capsys, *argv)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ": error: " in ln]
    assert rc == 2 and errors == lines[-1:] and needle in lines[-1] and "Traceback" not in err, (rc, err)
    return lines[-1]


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def no_temps(directory: Path) -> bool:
    return not [p for p in directory.rglob(".*.tmp")]


def _enospc(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def disk_full(monkeypatch):
    """Every write through hat.files runs out of space when it is flushed to disk."""
    monkeypatch.setattr(hat.files.os, "fsync", _enospc)


@pytest.fixture
def read_only(monkeypatch):
    """`read_only(dir)`: no file can be created in `dir` (chmod too when not root)."""
    real = hat.files.tempfile.mkstemp
    dirs: list[Path] = []

    def mkstemp(*args, dir=None, **kw):  # noqa: A002 (tempfile's name)
        if dir is not None and any(Path(dir).resolve() == d for d in dirs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(hat.files.tempfile, "mkstemp", mkstemp)

    def make(directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        dirs.append(directory.resolve())
        if os.geteuid() != 0:
            directory.chmod(0o555)
        return directory

    yield make
    for d in dirs:
        d.chmod(0o755)


# ---- 1. malformed, wrongly typed and hostile YAML ---------------------------------------------
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
SUB_KEYS = {"encoder_embed_dim": 256, "decoder_embed_dim": 256, "encoder_layer_num": 1, "decoder_layer_num": 1,
            "encoder_ffn_embed_dim": 512, "encoder_self_attention_heads": 4, "decoder_ffn_embed_dim": 512,
            "decoder_self_attention_heads": 4, "decoder_ende_attention_heads": 4, "decoder_arbitrary_ende_attn": -1}


def _space_with(**changes) -> str:
    d = json.loads(json.dumps(MICRO))
    for k, v in changes.items():
        d["choices"][k] = v
    return yaml.safe_dump(d)


YAML_CASES = [  # (name, file content, command (FILE: that file), needle)
    ("billion-laughs-train", LAUGHS, ["train", "--config", "FILE"], "expands to more than"),
    ("billion-laughs-info", LAUGHS, ["info", "FILE", "--space", "tiny"], "expands to more than"),
    ("deeply-nested", "[" * 5000 + "]" * 5000, ["info", "FILE", "--space", "tiny"], "nested deeper"),
    ("huge-depth", yaml.safe_dump({**SUB_KEYS, "encoder_layer_num": 10**12}), ["info", "FILE", "--space", "tiny"],
     "encoder_layer_num=1000000000000 is outside"),
    ("negative-depth", yaml.safe_dump({**SUB_KEYS, "decoder_layer_num": -3}), ["info", "FILE", "--space", "tiny"],
     "decoder_layer_num=-3"),
    ("depth-as-string", yaml.safe_dump({**SUB_KEYS, "encoder_layer_num": "six"}), ["info", "FILE", "--space", "tiny"],
     "must be an integer"),
    ("config-is-a-list", "- 1\n- 2\n", ["info", "FILE", "--space", "tiny"], "expected a mapping"),
    ("malformed-yaml", "encoder_embed_dim: [256\n", ["info", "FILE", "--space", "tiny"], "malformed YAML"),
    ("not-utf8", b"encoder_embed_dim: \xff\xfe\n", ["info", "FILE", "--space", "tiny"], "malformed YAML"),
    ("empty-choice-list", _space_with(encoder_ffn_embed_dim=[]),
     ["info", "hat/configs/subnets/hat_raspberrypi_3.5s.yml", "--space", "FILE"], "no choices for encoder_ffn"),
    ("choice-not-a-list", _space_with(encoder_layer_num=7), ["info", "SUB", "--space", "FILE"], "not a design-space"),
    ("zero-dim-choice", _space_with(decoder_embed_dim=[32, 0]), ["info", "SUB", "--space", "FILE"], ">= 1"),
    ("space-for-measure", _space_with(decoder_ffn_embed_dim=[]), ["measure", "--device", "cpu-2core", "--space", "FILE",
                                                                   "--samples", "1", "--out", "OUT"], "no choices"),
    ("recipe-is-a-list", "- lr\n", ["train", "--config", "FILE"], "not a training config"),
    ("recipe-unknown-key", "lrr: 0.1\n", ["train", "--config", "FILE"], "lrr"),
    ("recipe-lr-string", "lr: fast\n", ["train", "--config", "FILE"], "lr='fast'"),
    ("recipe-too-big", "# " + "x" * (1 << 20) + "\n", ["train", "--config", "FILE"], "more than a config file"),
    ("search-settings-type", "version: 1\npopulation: many\n", ["search", "--config", "FILE", "--out", "OUT"],
     "population must be int"),
    ("search-settings-version", "population: 8\n", ["search", "--config", "FILE", "--out", "OUT"], "version None"),
    ("latency-settings-unknown", "version: 1\nsampels: 3\n", ["measure", "--config", "FILE", "--out", "OUT"],
     "unknown key(s) sampels"),
    ("device-without-name", "protocol: {runs: 3}\n", ["measure", "--device", "FILE", "--space", "tiny", "--samples",
                                                      "1", "--out", "OUT"], "not a device file"),
    ("device-protocol-list", "name: d\nprotocol: [1, 2]\n", ["measure", "--device", "FILE", "--space", "tiny",
                                                             "--samples", "1", "--out", "OUT"], "must be a mapping"),
]


@pytest.mark.parametrize("content, argv, needle", [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES])
def test_bad_yaml_is_one_line(env, tmp_path, capsys, content, argv, needle):
    f = write(tmp_path / "file.yaml", content)
    root = Path(__file__).resolve().parent.parent
    subs = {"FILE": str(f), "OUT": str(tmp_path / "out.csv"), "SUB": str(env.sub)}
    argv = [subs.get(a, str(root / a) if a.startswith("hat/configs") else a) for a in argv]
    refused(capsys, needle, *argv)


TRAIN_OVERRIDES = [  # the optimizer and config values that used to reach torch unchecked
    ("lr=-1", "lr=-1: must be a number > 0"), ("weight_decay=-1", "weight_decay=-1"),
    ("adam_betas=[0.9]", "adam_betas=[0.9]: must be two numbers"), ("dropout=2", "dropout=2"),
    ("max_sentences=abc", "max_sentences='abc'"), ("num_threads=-2", "num_threads=-2"),
    ("warmup_updates=4", "warmup_updates=4 is not below max_updates=4"), ("stop_time_minutes=0", "stop_time_minutes"),
    ("init_from=[a]", "init_from"), ("sampling.sandwich_k=-1", "sandwich_k"), ("tensorboard=maybe", "tensorboard"),
    ("lr=.nan", "lr=nan"), ("max_positions=0", "max_positions=0"), ("lr_scheduler=cosin", "lr_scheduler"),
    ("label_smoothing=1", "label_smoothing=1"), ("adam_betas=[0.9, 1.5]", "adam_betas"), ("lrr=1", "lrr"),
    ("nokeyvalue", "expected key=value"),
    # training budgets and fixed-policy distillation
    ("budget_minutes=0", "budget_minutes=0: must be a number > 0"), ("budget_minutes=-5", "budget_minutes=-5"),
    ("budget_minutes=.inf", "budget_minutes=inf"), ("budget_minutes=soon", "budget_minutes='soon'"),
    ("decay_fraction=0", "decay_fraction=0: must be a number > 0 and <= 1"),
    ("decay_fraction=1.5", "decay_fraction=1.5"),
    ("sampling.distill_alpha=1.5", "sampling.distill_alpha=1.5"), ("sampling.distill=maybe", "sampling.distill"),
    ("sampling.teacher=t.yml", "sampling.teacher='t.yml' is used only by fixed-policy distillation"),
    ("sampling.subnet=s.yml", "sampling.subnet='s.yml' is the subnet of sampling.policy=fixed (policy is uniform)"),
]


@pytest.mark.parametrize("override, needle", TRAIN_OVERRIDES, ids=[o for o, _ in TRAIN_OVERRIDES])
def test_bad_training_values_are_refused_before_torch(env, tmp_path, capsys, override, needle):
    refused(capsys, needle, "train", "--config", env.cfg, f"save_dir={tmp_path / 'r'}", *TRAIN, override)
    assert not (tmp_path / "r").exists()


# ---- 2. corpora: empty, CRLF, BOM, line breaks inside lines, over-long ------------------------
def _prepare(tmp_path: Path, de: bytes, en: bytes) -> list[str]:
    for split in ("train", "valid"):
        write(tmp_path / f"{split}.de", de)
        write(tmp_path / f"{split}.en", en)
    return ["prepare", "text", "--src", "de", "--tgt", "en", "--trainpref", str(tmp_path / "train"),
            "--validpref", str(tmp_path / "valid"), "--out", str(tmp_path / "out"), "--vocab-size", "40"]


GOOD = "das haus ist rot\nder hund\nein baum\n"
CORPUS_CASES = [  # (name, de bytes, needle)
    ("empty-file", b"", "train.de: file is empty"),
    ("blank-line", b"das haus\n\nder hund\nein baum\n", "train.de:2: empty line"),
    ("vertical-tab", b"das haus\nder\x0bhund\nein baum\n", "train.de:2: contains a vertical tab (U+000B)"),
    ("next-line", "das haus\nder\x85hund\nein baum\n".encode(), "train.de:2: contains a next-line character"),
    ("lone-cr", b"das haus\rder hund\nx\ny\n", "train.de:1: contains a carriage return"),
    ("line-separator", "a\nb\u2028c\nd\n".encode(), "train.de:2: contains a line separator"),
    ("not-utf8", b"das haus\nder \xff hund\nein baum\n", "train.de:2: not valid UTF-8"),
    ("misaligned", b"das haus\nder hund\n", "files are misaligned"),
]


@pytest.mark.parametrize("de, needle", [c[1:] for c in CORPUS_CASES], ids=[c[0] for c in CORPUS_CASES])
def test_bad_corpus_names_file_and_line(tmp_path, capsys, de, needle):
    refused(capsys, needle, *_prepare(tmp_path, de, GOOD.encode()))
    assert not (tmp_path / "out" / "meta.json").exists()


def test_crlf_and_bom_corpora_read_as_plain_lines(tmp_path, capsys):
    words = ["das haus ist rot", "der hund ist klein", "ein baum", "die katze", "rot und blau"]
    de = ("\ufeff" + "\r\n".join(words) + "\r\n").encode()
    rc, _, err = hat_cli(capsys, *_prepare(tmp_path, de, ("\n".join(words) + "\n").encode()))
    assert rc == 0, err
    raw = (tmp_path / "out" / "raw" / "train.de").read_text(encoding="utf-8")
    assert raw.splitlines() == words  # no BOM, no \r


def test_failed_prepare_leaves_no_spm_input(tmp_path, capsys):
    argv = _prepare(tmp_path, b"ab\nbc\ncd\n", b"xy\nyz\nzx\n")
    argv[-1] = "3"  # below the distinct characters: SentencePiece refuses
    refused(capsys, "SentencePiece training failed", *argv)
    assert not list((tmp_path / "out").glob(".spm*")) and no_temps(tmp_path / "out")


def test_overlong_pairs_are_counted_by_prepare(env):
    meta = json.loads((env.data / "meta.json").read_text())
    assert meta["over_max_positions"] == {"max_positions": 1024, "train": 1, "valid": 1, "test": 1}


def test_overlong_pairs_train_validate_and_resume(env, tmp_path, caplog):
    """The over-long pair in train and valid (over max_positions=64) is skipped and counted,
    never crashes validation; the run saved its checkpoints and resumes."""
    run = tmp_path / "run"
    shutil.copytree(env.run, run)
    with caplog.at_level("WARNING"):
        assert main(["train", "--config", str(env.cfg), f"save_dir={run}", *TRAIN, "max_updates=6"]) == 0
    assert "valid: skipped 1 pair(s) longer than max_positions=64" in caplog.text
    assert "train (epoch 1): skipped 1 pair(s) longer than max_positions=64" in caplog.text
    assert load_checkpoint(run / "checkpoint_last.pt")["update"] == 6


def test_overlong_source_is_truncated_in_evaluation(env, tmp_path, capsys, caplog):
    with caplog.at_level("WARNING"):
        rc, out, err = hat_cli(capsys, "evaluate", "--model", env.model, "--data", env.data, "--beam", "1",
                               "--out", tmp_path / "hyp.txt", "--json")
    assert rc == 0, err
    assert json.loads(out)["truncated_sources"] == 1 and "truncated 1 source(s)" in caplog.text
    assert len((tmp_path / "hyp.txt").read_text().splitlines()) == 13


def test_overlong_pair_is_skipped_by_the_loss_scorer(env, tmp_path, capsys, caplog):
    with caplog.at_level("WARNING"):
        rc, _, err = hat_cli(capsys, "search", "--checkpoint", env.ckpt, "--predictor", "macs",
                             "--latency-constraint", "1000", "--data", env.data, "--out", tmp_path / "s.yml",
                             "--population", "4", "--parents", "2", "--mutations", "1", "--crossovers", "1",
                             "--iterations", "1", "--valid-sentences", "0", "--no-progress", "--tensorboard-dir", "none")
    assert rc == 0, err
    assert "loss scorer (valid): skipped 1 pair(s)" in caplog.text


# ---- 3. truncated, foreign and crafted checkpoints and state files -----------------------------
class _Payload:
    """Unpickling this writes `path`: what a tampered file could do if any loader unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _crafted(path: Path, marker: Path, fmt: str) -> Path:
    torch.save({"format": fmt, "version": 1, "model": {}, "payload": _Payload(marker)}, path)
    return path


def test_the_crafted_payload_is_real(tmp_path):
    """The refusals below mean something: an unsafe load of the same file does run the payload."""
    f = _crafted(tmp_path / "x.pt", tmp_path / "marker", "hat-standalone")
    torch.load(f, weights_only=False)
    assert (tmp_path / "marker").exists()


LOADERS = {  # name -> (where the crafted file goes, command); FILE is the crafted file
    "train-resume": ("run/checkpoint_last.pt", ["train", "--config", "CFG", "save_dir=RUN", *TRAIN]),
    "train-init-from": ("init.pt", ["train", "--config", "CFG", "save_dir=RUN", *TRAIN, "init_from=FILE"]),
    "search-checkpoint": ("c.pt", ["search", "--checkpoint", "FILE", "--predictor", "macs", "--latency-constraint",
                                   "100", "--data", "DATA", "--out", "OUT"]),
    "search-predictor": ("p.pt", ["search", "--scorer", "params", "--space", "tiny", "--predictor", "FILE",
                                  "--latency-constraint", "100", "--out", "OUT"]),
    "export": ("m.pt", ["export", "--checkpoint", "FILE", "--out", "EXPORT"]),
    "evaluate-model": ("m.pt", ["evaluate", "--model", "FILE", "--data", "DATA"]),
    "evaluate-checkpoint": ("c.pt", ["evaluate", "--checkpoint", "FILE", "--config", "SUB", "--data", "DATA"]),
    "fit-predictor": ("lat.csv", ["fit-predictor", "--data", "FILE", "--out", "P"]),
}


@pytest.mark.parametrize("fmt", ["hat-supertransformer-checkpoint", "hat-standalone", "hat-latency-predictor/1"])
@pytest.mark.parametrize("loader", list(LOADERS))
def test_crafted_files_are_refused_by_every_loader(env, tmp_path, capsys, loader, fmt):
    where, argv = LOADERS[loader]
    marker = tmp_path / "marker"
    f = _crafted(write(tmp_path / where, b""), marker, fmt)
    subs = {"FILE": f, "CFG": env.cfg, "RUN": tmp_path / "run", "DATA": env.data, "OUT": tmp_path / "s.yml",
            "EXPORT": tmp_path / "exp", "SUB": env.sub, "P": tmp_path / "p.pt"}
    argv = [a.replace("RUN", str(subs["RUN"])).replace("FILE", str(f)) if "=" in a else str(subs.get(a, a))
            for a in argv]
    refused(capsys, str(f), *argv)
    assert not marker.exists()


def test_crafted_files_are_refused_by_the_python_api(env, tmp_path):
    from hat.export.fairseq_export import load_fairseq_model
    from hat.latency.predictors import load_predictor

    marker = tmp_path / "marker"
    f = _crafted(tmp_path / "checkpoint.pt", marker, "hat-standalone")
    for load in (hat.load, load_predictor, load_checkpoint, lambda p: load_fairseq_model(p.parent)):
        with pytest.raises(CheckpointError, match=str(f)):
            load(f)
    assert not marker.exists()


def test_search_state_is_never_unpickled(env, tmp_path, capsys):
    """The NSGA-II state is plain data; an old-style pickle inside it is refused as corrupt."""
    argv = ["search", "--algorithm", "nsga2", "--scorer", "params", "--space", "tiny", "--predictor", "macs",
            "--latency-constraint", "9", "--population", "6", "--parents", "2", "--mutations", "2",
            "--crossovers", "2", "--iterations", "2", "--out", tmp_path / "s.yml", "--no-progress",
            "--tensorboard-dir", "none"]
    rc, _, err = hat_cli(capsys, *argv)
    assert rc == 0, err
    state_path = tmp_path / "s.state.json"
    state = json.loads(state_path.read_text())
    assert set(state["extra"]["pymoo"]) == {"n_iter", "rng", "X", "F", "G", "rank", "crowding"}
    marker = tmp_path / "marker"
    state["generation"] = 1
    state["extra"]["pymoo"] = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    state_path.write_text(json.dumps(state))
    refused(capsys, "corrupt NSGA-II state", *argv)
    assert not marker.exists()


def _checkpoint_with(env, tmp_path: Path, **changes) -> Path:
    ck = load_checkpoint(env.ckpt)
    ck.update(changes)
    run = tmp_path / "run"
    hat.files.save_torch(ck, run / "checkpoint_last.pt")
    return run


CHECKPOINT_CASES = [  # a file with the right tag and wrong insides
    ("update-is-text", {"update": "four"}, "field update is a str"),
    ("rng-garbage", {"rng": {"python": [1, 2]}}, "state does not match this model"),
    ("data-missing-fields", {"data": {}}, "state does not match this model"),
    ("model-is-a-list", {"model": [1, 2]}, "field model is a list"),
    ("space-of-another-run", {"space": dict(MICRO, name="other")}, "design space 'other'"),
]


@pytest.mark.parametrize("changes, needle", [c[1:] for c in CHECKPOINT_CASES], ids=[c[0] for c in CHECKPOINT_CASES])
def test_damaged_checkpoint_fields_are_refused_on_resume(env, tmp_path, capsys, changes, needle):
    run = _checkpoint_with(env, tmp_path, **changes)
    refused(capsys, needle, "train", "--config", env.cfg, f"save_dir={run}", *TRAIN, "max_updates=6")


def test_truncated_and_foreign_files(env, tmp_path, capsys):
    raw = env.ckpt.read_bytes()
    cut = write(tmp_path / "cut.pt", raw[: len(raw) // 3])
    refused(capsys, "corrupt or truncated", "search", "--checkpoint", cut, "--predictor", "macs",
            "--latency-constraint", "100", "--data", env.data, "--out", tmp_path / "s.yml")
    refused(capsys, "not a hat SuperTransformer checkpoint", "train", "--config", env.cfg,
            f"save_dir={tmp_path / 'r'}", *TRAIN, f"init_from={env.pred}")
    refused(capsys, "neither a hat standalone model", "export", "--checkpoint", env.pred, "--out", tmp_path / "e")
    refused(capsys, "not a latency predictor", "search", "--scorer", "params", "--space", "tiny", "--predictor",
            env.model, "--latency-constraint", "50", "--out", tmp_path / "s.yml")
    bad_pred = tmp_path / "bad.pt"
    hat.files.save_torch({"format": PREDICTOR_FORMAT, "model": "analytic", "feature_set": "hat10", "context": "wide",
                          "lat_norm": 1.0, "device": "", "space": None, "state": {}, "interval": {}, "options": {}},
                         bad_pred)
    refused(capsys, "field context is a str", "search", "--scorer", "params", "--space", "tiny", "--predictor",
            bad_pred, "--latency-constraint", "50", "--out", tmp_path / "s.yml")


STATE_CASES = [  # search state files, damaged
    ("not-json", "{\"generation\": 3, ", "unreadable search state"),
    ("a-list", "[1, 2, 3]", "not a search state"),
    ("unknown-field", None, "corrupt search state"),
    ("evaluated-wrong-shape", None, "corrupt search state"),
    ("population-not-configs", None, "corrupt search state"),
]


@pytest.mark.parametrize("name, text, needle", STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_damaged_search_state_is_one_line(tmp_path, capsys, name, text, needle):
    argv = ["search", "--scorer", "params", "--space", "tiny", "--predictor", "macs", "--latency-constraint", "9",
            "--population", "6", "--parents", "2", "--mutations", "2", "--crossovers", "2", "--iterations", "1",
            "--out", tmp_path / "s.yml", "--no-progress", "--tensorboard-dir", "none"]
    assert hat_cli(capsys, *argv)[0] == 0
    state_path = tmp_path / "s.state.json"
    state = json.loads(state_path.read_text())
    state["generation"] = 0
    if name == "unknown-field":
        state["surprise"] = 1
    elif name == "evaluated-wrong-shape":
        state["evaluated"] = [[1, 2]]
    elif name == "population-not-configs":
        state["population"] = [{"encoder_embed_dim": "x"}]
    state_path.write_text(text if text is not None else json.dumps(state))
    refused(capsys, needle, *argv)


def _finetune(env, save_dir: Path, *extra: str) -> list[str]:
    """`hat train` of the smallest subnet from `env`'s SuperTransformer, distilling from it."""
    return ["train", "--config", str(env.cfg), f"save_dir={save_dir}", "sampling.policy=fixed",
            f"sampling.subnet={env.sub}", "sampling.distill=true", *TRAIN, *extra]


TEACHER_CASES = [  # sampling.teacher (a SubConfig YAML) that cannot teach: refused before anything is written
    ("missing", None, "no such file"),
    ("malformed", "encoder_embed_dim: [256\n", "malformed YAML"),
    ("a-list", "- 1\n", "expected a mapping"),
    ("outside-the-space", yaml.safe_dump({**SUB_KEYS, "encoder_embed_dim": 1024}), "encoder_embed_dim=1024"),
]


@pytest.mark.parametrize("content, needle", [c[1:] for c in TEACHER_CASES], ids=[c[0] for c in TEACHER_CASES])
def test_bad_teacher_subnet_is_refused_before_training(env, tmp_path, capsys, content, needle):
    teacher = tmp_path / "teacher.yml"
    if content is not None:
        write(teacher, content)
    line = refused(capsys, needle, *_finetune(env, tmp_path / "ft", f"init_from={env.ckpt}",
                                             f"sampling.teacher={teacher}"))
    assert str(teacher) in line
    assert not (tmp_path / "ft").exists()


def test_resumed_distillation_refuses_a_teacher_replaced_at_the_same_path(env, tmp_path, capsys):
    """The teacher is re-read from init_from on resume: another file at that path would teach the
    rest of the run something else, so the resume is refused until the original is back."""
    init = tmp_path / "super.pt"
    shutil.copyfile(env.ckpt, init)
    ft = tmp_path / "ft"
    assert hat_cli(capsys, *_finetune(env, ft, f"init_from={init}", "max_updates=2"))[0] == 0
    saved = snapshot(ft)
    assert load_checkpoint(ft / "checkpoint_last.pt")["teacher_digest"] == hat.files.file_digest(init)
    shutil.copyfile(env.run / "checkpoint_2.pt", init)  # the SuperTransformer trained on, same path
    line = refused(capsys, "init_from changed since", *_finetune(env, ft, f"init_from={init}"))
    assert str(init) in line and snapshot(ft) == saved
    shutil.copyfile(env.ckpt, init)
    rc, _, err = hat_cli(capsys, *_finetune(env, ft, f"init_from={init}"))
    assert rc == 0 and "resumed from" in err and load_checkpoint(ft / "checkpoint_last.pt")["update"] == 4


def test_search_does_not_reuse_scores_of_a_replaced_checkpoint(env, tmp_path, capsys):
    ckpt = tmp_path / "super.pt"
    shutil.copyfile(env.run / "checkpoint_2.pt", ckpt)
    argv = ["search", "--checkpoint", ckpt, "--predictor", "macs", "--latency-constraint", "1000", "--data", env.data,
            "--out", tmp_path / "s.yml", "--population", "4", "--parents", "2", "--mutations", "1", "--crossovers",
            "1", "--iterations", "1", "--valid-sentences", "8", "--no-progress", "--tensorboard-dir", "none"]
    assert hat_cli(capsys, *argv)[0] == 0
    shutil.copyfile(env.ckpt, ckpt)  # other weights, same path
    refused(capsys, "different settings (checkpoint)", *argv)
    rc, _, err = hat_cli(capsys, *argv, "--no-resume")
    assert rc == 0, err


# ---- 4. latency CSVs and `hat measure`: never lose a file that is not ours -------------------
MEASURE = ["measure", "--device", "cpu-2core", "--space", "tiny", "--runs", "1", "--warmup", "0", "--src-len", "4",
           "--tgt-len", "2", "--vocab-size", "64", "--no-progress"]


@pytest.mark.parametrize("content", [b"my notes about latency\nsecond line without newline",
                                     ",".join(OUR_COLUMNS[:14]).encode() + b"\n1,2,3"],
                         ids=["notes-file", "hat-csv-without-trailing-newline"])
def test_measure_never_truncates_a_file_that_is_not_ours(tmp_path, capsys, content):
    f = write(tmp_path / "lat.csv", content)
    refused(capsys, "is not a latency CSV written by `hat measure`", *MEASURE, "--samples", "1", "--out", f)
    assert f.read_bytes() == content


def test_measure_repairs_its_own_csv_cut_by_a_kill(tmp_path, capsys):
    out = tmp_path / "lat.csv"
    assert hat_cli(capsys, *MEASURE, "--samples", "2", "--out", out)[0] == 0
    whole = out.read_bytes()
    out.write_bytes(whole[:-15])  # the second row cut mid-write
    rc, _, err = hat_cli(capsys, *MEASURE, "--samples", "2", "--out", out)
    assert rc == 0, err
    assert "1 of 2 configs already in" in err and len(out.read_text().splitlines()) == 3


def test_measure_refuses_a_second_concurrent_writer(tmp_path, capsys):
    out = tmp_path / "lat.csv"
    with LatencyWriter(out):  # another `hat measure` is writing to it
        refused(capsys, "another process is writing to it", *MEASURE, "--samples", "1", "--out", out)
    assert hat_cli(capsys, *MEASURE, "--samples", "1", "--out", out)[0] == 0  # the lock went with the writer


@pytest.mark.parametrize("flags, needle", [
    (["--vocab-size", "3"], "vocab_size 3: at least 5"), (["--src-len", "5000"], "src_len 5000"),
    (["--threads", "-1"], "threads -1"), (["--samples", "1000000000"], "--samples 1000000000"),
    (["--samples", "0"], "--samples 0"), (["--drop-frac", "0.7"], "drop fraction"),
], ids=["vocab-3", "src-len-5000", "threads-minus-1", "samples-1e9", "samples-0", "drop-frac"])
def test_measure_protocol_sanity(tmp_path, capsys, flags, needle):
    argv = [a for a in MEASURE if a != "--vocab-size" and a != "64"] if "--vocab-size" in flags else MEASURE
    argv = argv + (["--samples", "1"] if "--samples" not in flags else []) + flags + ["--out", tmp_path / "l.csv"]
    refused(capsys, needle, *argv)
    assert not (tmp_path / "l.csv").exists()


def test_measure_corrupt_metadata_is_one_line(tmp_path, capsys):
    out = tmp_path / "lat.csv"
    assert hat_cli(capsys, *MEASURE, "--samples", "1", "--out", out)[0] == 0
    meta_path(out).write_text('{"device": "cpu-2core", "proto')  # what a non-atomic writer could leave
    refused(capsys, "unreadable latency CSV metadata", *MEASURE, "--samples", "2", "--out", out)


def _wider(cell: str) -> str:
    cfg = json.loads(cell)
    cfg["encoder_ffn_embed_dim"][0] = 4096
    return json.dumps(cfg)


@pytest.mark.parametrize("edit, needle", [
    (lambda rows: rows[1].__setitem__(10, "nan"), "column latency_mean_encoder is NaN"),
    (lambda rows: rows[1].__setitem__(14, "{not json"), "column config is not JSON"),
    (lambda rows: rows[1].__setitem__(14, "[1, 2]"), "expected a mapping of SubConfig keys"),
    (lambda rows: rows[1].__setitem__(14, "[" * 100_000), "column config is not JSON"),
    (lambda rows: rows.insert(2, rows[1][:5]), "truncated row"),
    (lambda rows: rows[1].__setitem__(10, "0") or rows[1].__setitem__(11, "0"), "row 1 (line 2): column latency_mean_encoder is 0 (latencies must be positive)"),
    (lambda rows: rows[2].__setitem__(11, "-3.5"), "row 2 (line 3): column latency_mean_decoder is -3.5"),
    (lambda rows: [r.append(r[11]) for r in rows], "latency_mean_decoder appear more than once"),  # a 2nd column
    (lambda rows: rows[1].__setitem__(14, _wider(rows[1][14])), "row 1: encoder_ffn_embed_dim[0]=4096 is not in "
                                                                "space tiny"),
], ids=["nan-latency", "config-not-json", "config-not-a-mapping", "config-nested-too-deep", "short-row",
        "zero-latency", "negative-latency", "duplicated-header", "config-wider-than-space"])
def test_fit_predictor_bad_rows(env, tmp_path, capsys, edit, needle):
    import csv

    rows = list(csv.reader(env.lat.read_text().splitlines()))
    edit(rows)
    bad = tmp_path / "lat.csv"
    with open(bad, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    shutil.copyfile(meta_path(env.lat), meta_path(bad))  # measured on the tiny space
    refused(capsys, needle, "fit-predictor", "--data", bad, "--out", tmp_path / "p.pt")


def test_fit_predictor_warns_about_configs_measured_twice(env, tmp_path, capsys, caplog):
    lines = env.lat.read_text().splitlines(keepends=True)
    write(tmp_path / "lat.csv", "".join(lines + lines[1:4]))  # what two unlocked writers appended
    with caplog.at_level("WARNING"):
        rc, _, err = hat_cli(capsys, "fit-predictor", "--data", tmp_path / "lat.csv", "--out", tmp_path / "p.pt",
                             "--model", "analytic")
    assert rc == 0, err
    assert "3 row(s) repeat a config measured earlier" in caplog.text


# ---- 5. kills mid-write: what a SIGKILL leaves behind is recovered ---------------------------
def test_atomic_write_interrupted_keeps_the_old_file(tmp_path, monkeypatch):
    f = write(tmp_path / "x.json", "old")

    def killed(*a, **k):
        raise Killed

    monkeypatch.setattr(hat.files.os, "replace", killed)
    with pytest.raises(Killed):
        hat.files.atomic_write_text(f, "new")
    assert f.read_text() == "old" and no_temps(tmp_path)


def test_train_resume_removes_temp_checkpoints_a_kill_left(env, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(env.run, run)
    left = write(run / ".checkpoint_last.pt.x1y2z3.tmp", b"\0" * 4096)  # a save cut by SIGKILL
    rc, _, err = hat_cli(capsys, "train", "--config", env.cfg, f"save_dir={run}", *TRAIN, "max_updates=6")
    assert rc == 0, err
    assert not left.exists() and no_temps(run)


def test_kill_between_validation_and_save_logs_each_update_once(env, tmp_path, monkeypatch, capsys):
    from hat.train.trainer import Trainer

    run = tmp_path / "run"
    real = Trainer.save

    def save(self, *a, **k):
        if self.update == 4:
            raise Killed  # validation at 4 is logged, its checkpoint never written
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "save", save)
    with pytest.raises(Killed):
        main(["train", "--config", str(env.cfg), f"save_dir={run}", *TRAIN])
    monkeypatch.setattr(Trainer, "save", real)
    assert load_checkpoint(run / "checkpoint_last.pt")["update"] == 2
    rc, _, err = hat_cli(capsys, "train", "--config", env.cfg, f"save_dir={run}", *TRAIN)
    assert rc == 0 and f"resumed from {run / 'checkpoint_last.pt'} at update 2 " in err, err
    keys = [(k, r["update"]) for line in (run / "train_log.jsonl").read_text().splitlines()
            for k, r in json.loads(line).items()]
    assert len(keys) == len(set(keys)) and ("valid", 4) in keys
    assert [u for k, u in keys if k == "valid"] == [2, 4]


# ---- 6. full and read-only disks --------------------------------------------------------------
def test_disk_full_during_a_checkpoint_save_loses_nothing(env, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(env.run, run)
    before = snapshot(run)
    real_save = hat.files.save_torch

    def save_on_a_full_disk(state, paths):  # the checkpoint is the write that finds the disk full
        with monkeypatch.context() as m:
            m.setattr(hat.files.os, "fsync", _enospc)
            real_save(state, paths)

    with monkeypatch.context() as m:
        m.setattr("hat.train.trainer.save_torch", save_on_a_full_disk)
        failed_midway(capsys, "checkpoint_last.pt: No space left on device", "train", "--config", env.cfg,
                      f"save_dir={run}", *TRAIN, "max_updates=6")
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k.endswith(".pt")} == {k: v for k, v in before.items() if k.endswith(".pt")}
    assert no_temps(run)
    rc, _, err = hat_cli(capsys, "train", "--config", env.cfg, f"save_dir={run}", *TRAIN, "max_updates=6")
    assert rc == 0 and "at update 4 " in err and load_checkpoint(run / "checkpoint_last.pt")["update"] == 6


@pytest.mark.parametrize("command", ["fit-predictor", "export", "search", "evaluate", "prepare", "measure"])
def test_disk_full_keeps_the_previous_output(env, tmp_path, capsys, disk_full, command):
    out = tmp_path / "out"
    out.mkdir()
    if command == "fit-predictor":
        target = write(out / "p.pt", env.pred.read_bytes())
        argv = ["fit-predictor", "--data", env.lat, "--out", target, "--model", "analytic"]
    elif command == "export":
        target = write(out / "model.pt", env.model.read_bytes())
        argv = ["export", "--checkpoint", env.ckpt, "--config", env.sub, "--out", out]
    elif command == "search":
        target = write(out / "s.yml", "previous result\n")
        argv = ["search", "--scorer", "params", "--space", "tiny", "--predictor", "macs", "--latency-constraint", "9",
                "--population", "4", "--parents", "2", "--mutations", "1", "--crossovers", "1", "--iterations", "1",
                "--out", target, "--no-progress", "--tensorboard-dir", "none"]
    elif command == "evaluate":
        target = write(out / "hyp.txt", "previous hypotheses\n")
        argv = ["evaluate", "--model", env.model, "--data", env.data, "--beam", "1", "--limit", "2", "--out", target]
    elif command == "prepare":
        target = write(out / "meta.json", "{}")
        argv = _prepare(tmp_path, GOOD.encode() * 3, GOOD.encode() * 3)
        argv[argv.index("--out") + 1] = str(out)
    else:
        target = write(out / "lat.csv", ",".join(OUR_COLUMNS) + "\r\n")  # ours, nothing measured yet
        argv = [*MEASURE, "--samples", "1", "--out", target]
    before = target.read_bytes()
    line = refused(capsys, "No space left on device", *argv)
    assert str(out) in line and target.read_bytes() == before and no_temps(out)


@pytest.mark.parametrize("command", ["search", "export", "fit-predictor", "train"])
def test_read_only_directory_is_one_line(env, tmp_path, capsys, read_only, command):
    ro = read_only(tmp_path / "ro")
    argv = {
        "search": ["search", "--scorer", "params", "--space", "tiny", "--predictor", "macs", "--latency-constraint",
                   "9", "--population", "4", "--parents", "2", "--mutations", "1", "--crossovers", "1",
                   "--iterations", "1", "--out", ro / "s.yml", "--no-progress", "--tensorboard-dir", "none"],
        "export": ["export", "--checkpoint", env.model, "--out", ro],
        "fit-predictor": ["fit-predictor", "--data", env.lat, "--out", ro / "p.pt", "--model", "analytic"],
        "train": ["train", "--config", env.cfg, f"save_dir={ro}", *TRAIN],
    }[command]
    refused(capsys, str(ro), *argv)
    assert not [p for p in ro.iterdir() if p.suffix in (".pt", ".yml")]


@pytest.mark.parametrize("argv, needle", [
    (["fit-predictor", "--data", "LAT", "--out", "DIR", "--model", "analytic"], "Is a directory"),
    (["evaluate", "--model", "MODEL", "--data", "DATA", "--beam", "1", "--limit", "1", "--out", "DIR"], "Is a directory"),
    (["prepare", "text", "--src", "de", "--tgt", "en", "--trainpref", "PREF", "--validpref", "PREF", "--out", "FILE"],
     "FILE"),
    (["search", "--scorer", "params", "--space", "tiny", "--predictor", "macs", "--latency-constraint", "9",
      "--population", "4", "--parents", "2", "--mutations", "1", "--crossovers", "1", "--iterations", "1",
      "--out", "DIR", "--no-progress", "--tensorboard-dir", "none"], "DIR"),
], ids=["fit-predictor", "evaluate", "prepare", "search"])
def test_out_is_an_existing_directory_or_file(env, tmp_path, capsys, argv, needle):
    d, f = tmp_path / "adir", write(tmp_path / "afile", "keep me\n")
    d.mkdir()
    prefix = _corpus(tmp_path, "c", 20, 9)
    subs = {"LAT": env.lat, "DIR": d, "MODEL": env.model, "DATA": env.data, "PREF": prefix, "FILE": f}
    refused(capsys, str(subs.get(needle, needle)), *[subs.get(a, a) for a in argv])
    assert f.read_text() == "keep me\n"


# ---- 7. flags: wrong values are named, not mistaken for something else -------------------------
FLAG_CASES = [
    (["evaluate", "--model", "MODEL", "--data", "DATA", "--compute", "bogus"], "--compute bogus: not a device"),
    (["evaluate", "--model", "MODEL", "--data", "DATA", "--compute", "cuda:7"], "--compute cuda:7"),
    (["evaluate", "--model", "MODEL", "--data", "DATA", "--limit", "-1"], "--limit must be >= 1, got -1"),
    (["evaluate", "--model", "MODEL", "--data", "DATA", "--max-tokens", "0"], "--max-tokens must be >= 1"),
    (["evaluate", "--model", "MODEL", "--data", "DATA", "--subset", "nope"], "no subset 'nope'"),
    (["evaluate", "--model", "MODEL", "--data", "DATA", "--limit", "x"], "invalid int value: 'x'"),
    (["search", "--checkpoint", "CKPT", "--predictor", "macs", "--latency-constraint", "9", "--data", "DATA",
      "--out", "OUT", "--compute", "gpu"], "--compute gpu: not a device"),
    (["search", "--scorer", "params", "--space", "tiny", "--predictor", "macs", "--latency-constraint", "-5",
      "--out", "OUT"], "must be positive"),
    (["search", "--scorer", "params", "--space", "tiny", "--predictor", "macs:fast", "--latency-constraint", "5",
      "--out", "OUT"], "macs:MS_PER_GMAC"),
    (["export", "--checkpoint", "MODEL", "--out", "OUT", "--format", "tflite"], "invalid choice: 'tflite'"),
    (["export", "--checkpoint", "MODEL", "--out", "OUT", "--format", "onnx", "--opset", "99"], "--opset 99"),
    (["info", "SUB", "--space", "no-such-space"], "no-such-space"),
    (["nosuchcommand"], "invalid choice"),
    (["train", "--config", "no-such-recipe"], "no-such-recipe: unknown training config"),
    (["prepare", "debian", "--pair", "de-fr", "--out", "OUT"], "invalid choice: 'de-fr'"),
    (["demo", "--quick", "--out", "OUT", "--data", "DATA", "--device", "no-such-device"], "no-such-device"),
    (["demo", "--quick", "--out", "OUT", "--data", "DATA", "--faster-by", "0.7"], "--faster-by 0.7"),
    (["search", "--scorer", "params", "--space", "tiny", "--predictor", "macs", "--latency-constraint", "5",
      "--out", "OUT", "--select", "halving", "--select-candidates", "1", "--checkpoint", "CKPT", "--data", "DATA"],
     "--select-candidates 1"),
    (["search", "--scorer", "params", "--space", "tiny", "--predictor", "macs", "--latency-constraint", "5",
      "--out", "OUT", "--select", "halving", "--select-keep", "SUB", "--checkpoint", "CKPT", "--data",
      "DATA"], "is a file; give the directory"),
]
FLAG_IDS = ["evaluate-compute-bogus", "evaluate-compute-cuda7", "evaluate-limit-negative", "evaluate-max-tokens-0",
            "evaluate-subset", "evaluate-limit-text", "search-compute-gpu", "search-negative-constraint",
            "search-macs-factor", "export-format", "export-opset-99", "info-space", "unknown-command",
            "train-recipe", "prepare-pair", "demo-device", "demo-faster-by", "search-select-candidates",
            "search-select-keep-file"]


@pytest.mark.parametrize("argv, needle", FLAG_CASES, ids=FLAG_IDS)
def test_bad_flags_are_one_line(env, tmp_path, capsys, argv, needle):
    if "--opset" in argv:
        pytest.importorskip("onnx")
    subs = {"MODEL": env.model, "DATA": env.data, "CKPT": env.ckpt, "OUT": tmp_path / "o", "SUB": env.sub}
    refused(capsys, needle, *[subs.get(a, a) for a in argv])


def test_export_opset_the_exporter_cannot_write_is_refused_and_not_recorded(env, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    refused(capsys, "--opset 1: the exporter wrote opset 18", "export", "--checkpoint", env.model, "--format", "onnx",
            "--out", tmp_path / "o", "--opset", "1")
    assert not (tmp_path / "o").exists()  # nothing recorded: a refused export removes the directory it made


# ---- 8. the demo: a damaged ledger is refused, a killed demo resumes -------------------------------
LEDGER_CASES = [  # ledger.json contents -> needle
    ("half-written", b'{"seconds": {"search": 12.5}, "ru', "unreadable demo ledger"),
    ("a-list", b"[]", "not a demo ledger"),
    ("seconds-a-list", b'{"seconds": [], "runs": {}}', "field seconds is a list"),
    ("no-runs", b'{"seconds": {}}', "has no runs"),
    ("seconds-text", b'{"seconds": {"search": "long"}, "runs": {}}', "seconds of search is not a number"),
    ("run-without-fields", b'{"seconds": {}, "runs": {"super": {"updates": 3}}}', "run super has no tokens"),
]


@pytest.mark.parametrize("content, needle", [c[1:] for c in LEDGER_CASES], ids=[c[0] for c in LEDGER_CASES])
def test_damaged_demo_ledger_is_one_line_and_kept(tmp_path, capsys, content, needle):
    """The ledger alone knows the search times (part of the budget per model): refused, never
    replaced, before any stage starts."""
    ledger = write(tmp_path / "demo" / "ledger.json", content)
    line = refused(capsys, needle, "demo", "--quick", "--out", tmp_path / "demo", "--data", tmp_path / "nodata")
    assert str(ledger) in line and "delete it to rebuild it" in line
    assert ledger.read_bytes() == content and snapshot(tmp_path) == {"demo/ledger.json": content}


def test_killed_demo_resumes_and_redoes_only_damaged_results(env, tmp_path, capsys, monkeypatch):
    """A demo killed while fine-tuning reruns no finished stage and loses no recorded time; a
    damaged BLEU result and a latency file missing a model are computed again, not trusted."""
    import hat.commands.demo as demo

    monkeypatch.setattr(demo, "QUICK", demo.Budget(
        super_minutes=0.05, finetune_minutes=0.01, max_tokens=256, super_warmup=1, latency_samples=30,
        latency_runs=1, search_population=4, search_parents=2, search_children=1, search_iterations=1,
        valid_sentences=8, constraints=(0.6, 0.9), test_sentences=4, beam=1, rounds=1, max_updates=25,
        faster_by=0.0))
    real, calls, kill = demo.hat_stage, [], {"at": "sampling.policy=fixed"}

    def hat_then_kill(argv):
        calls.append(argv)
        real(argv)
        if kill["at"] in argv:  # the stage's work is on disk, its DONE marker is not
            kill["at"] = None
            raise Killed

    monkeypatch.setattr(demo, "hat_stage", hat_then_kill)
    device = write(tmp_path / "quick-cpu.yaml", "name: quick-cpu\nprotocol: {src_len: 4, tgt_len: 2, beam: 1, "
                   "threads: 1, lat_norm: 100}\n")  # HAT's protocol, shrunk to milliseconds a model
    out = tmp_path / "demo"
    argv = ["demo", "--quick", "--out", out, "--data", env.data, "--device", device]
    write(out / "latency.DONE", "")  # latencies measured already (`hat measure` resumes: tested above)
    for f in (env.lat, meta_path(env.lat)):
        shutil.copyfile(f, out / f.name.replace(env.lat.stem, "latency"))
    with pytest.raises(Killed):
        hat_cli(capsys, *argv)
    first = [a[0] for a in calls]
    assert first.count("search") == 2 and first[-1] == "train" and not (out / "summary.md").exists()
    led = json.loads((out / "ledger.json").read_text())
    super_ck = load_checkpoint(out / "supertransformer" / "checkpoint_last.pt")
    killed = Path(next(a for a in calls[-1] if a.startswith("save_dir=")).split("=", 1)[1])
    killed_update = load_checkpoint(killed / "checkpoint_last.pt")["update"]

    calls.clear()
    rc, _, err = hat_cli(capsys, *argv)
    assert rc == 0, err
    assert [a[0] for a in calls] == ["train"] * 2 + ["export"] * 2, calls  # the 2 fine-tunes, then on
    assert f"save_dir={killed}" in calls[0] and "resumed from" in err  # the killed one went on, not over
    assert load_checkpoint(killed / "checkpoint_last.pt")["update"] == killed_update  # its budget was spent
    again = json.loads((out / "ledger.json").read_text())
    assert again["seconds"]["search"] == led["seconds"]["search"] and again["runs"]["super"]["updates"] == \
        super_ck["update"]
    summary = json.loads((out / "summary.json").read_text())
    names = [r["name"] for r in summary["rows"]]
    assert len(names) == 2 and all(r["bleu"] >= 0 for r in summary["rows"])

    # damage three results: they are computed again; nothing else is rerun
    bleu, other = (out / "export" / r["model_path"].split("/")[1] / "bleu.json" for r in summary["rows"][:2])
    bleu.write_text('{"bleu": ')
    other.write_text(json.dumps({**json.loads(other.read_text()), "per_origin": {"ding": 3}}))
    lat = json.loads((out / "latency_final.json").read_text())
    del lat[names[-1]]
    (out / "latency_final.json").write_text(json.dumps(lat))
    calls.clear()
    rc, stdout, err = hat_cli(capsys, *argv)
    assert rc == 0 and calls == [], err
    assert f"for {names[-1]!r}: has no entry" in stdout and "per_origin 'ding' is not a result" in stdout
    assert stdout.count("(again: ") == 3 and json.loads(bleu.read_text())["bleu"] >= 0
    assert json.loads(other.read_text()).get("per_origin") != {"ding": 3}
    assert set(json.loads((out / "latency_final.json").read_text())) == set(names) | {"reference: largest", "reference: hand"}


def sweep_size() -> int:
    """Cases pytest collects from this module (each parametrization counts), this count itself excluded:
    counted by pytest's own collection in a child process, not by reading the module."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", __file__],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent).stdout
    items = [line for line in out.splitlines() if "::" in line]
    return len([i for i in items if "::test_the_sweep_is_at_least_sixty_cases" not in i])


def test_the_sweep_is_at_least_sixty_cases():
    n = sweep_size()
    assert len(FLAG_IDS) == len(FLAG_CASES) and n >= 60, n
    results = (Path(__file__).resolve().parent.parent / "benchmarks" / "RESULTS.md").read_text()
    assert f"**{n} cases**" in results  # the count benchmarks/RESULTS.md states is this module's
