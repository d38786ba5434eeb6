"""Shared plumbing: registries, atomic/tagged files, one-line errors, settings files under flags."""
from __future__ import annotations

import argparse
import json
import os

import pytest
import torch

from hat.cli import main
from hat.commands.settings import Option, apply_settings
from hat.errors import CheckpointError, ConfigError, first_line
from hat.export import FORMATS
from hat.files import atomic_write_text, load_tagged, save_torch
from hat.latency.devices import DeviceSpec
from hat.latency.measure import BACKENDS, Protocol, default_vocab_size
from hat.registry import Registry
from hat.search import ALGORITHMS, SCORERS, EvolutionSettings
from hat.shipped import available, load_settings
from hat.space import load_space


def test_registry_refuses_duplicates_and_lists_names():
    reg: Registry = Registry("widget")

    @reg.register("a")
    def a() -> int:
        return 1

    reg.register("b", len)
    assert reg.get("a") is a and reg["b"] is len and reg.names() == ("a", "b") and "a" in reg
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", len)
    with pytest.raises(ConfigError, match="unknown widget 'c' \\(choose a, b\\)"):
        reg.get("c")


def test_shipped_registries():
    assert set(ALGORITHMS) == {"evolution", "random", "nsga2"} and set(SCORERS) == {"loss", "params"}
    assert SCORERS["loss"].needs_model and not SCORERS["params"].needs_model
    assert set(FORMATS) == {"standalone", "fairseq", "onnx", "ctranslate2"} and set(BACKENDS) == {"torch", "cuda", "onnxruntime"}


def test_first_line():
    assert first_line(ValueError("one\ntwo")) == "one"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(RuntimeError("x" * 300), 160) == "x" * 160


def test_atomic_write_leaves_no_temp_files(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    atomic_write_text(p, "a")
    atomic_write_text(p, "b")
    assert p.read_text() == "b" and os.listdir(p.parent) == ["f.txt"]


def test_tagged_files_are_checked_one_way(tmp_path):
    p = tmp_path / "x.pt"
    save_torch({"format": "fmt", "version": 1, "w": torch.ones(2)}, [p, tmp_path / "y.pt"])
    assert torch.equal(load_tagged(tmp_path / "y.pt", "fmt", "thing", version=1)["w"], torch.ones(2))
    for kw, msg in [({"version": 2}, "thing format version 1"), ({"required": ("z",)}, "thing lacks z")]:
        with pytest.raises(CheckpointError, match=msg):
            load_tagged(p, "fmt", "thing", **kw)
    with pytest.raises(CheckpointError, match="not a hat thing"):
        load_tagged(p, "other", "thing")
    with pytest.raises(CheckpointError, match="no such thing"):
        load_tagged(tmp_path / "missing.pt", "fmt", "thing")
    (tmp_path / "bad.pt").write_bytes(p.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="corrupt or truncated thing"):
        load_tagged(tmp_path / "bad.pt", "fmt", "thing")


def test_protocol_from_device_layers_defaults_device_and_overrides():
    space = load_space("tiny")
    dev = DeviceSpec("d", protocol={"runs": 7, "beam": 3, "lat_norm": 100})
    p = Protocol.from_device(dev, space, runs=9, beam=None)
    assert (p.runs, p.beam, p.src_len, p.vocab_size) == (9, 3, Protocol.src_len, default_vocab_size(space))
    with pytest.raises(ConfigError, match="drop fraction"):
        Protocol.from_device(dev, drop_frac=0.7)


def test_settings_file_is_under_the_flags_and_over_the_defaults(tmp_path):
    options = {"population": Option(int, 125), "mutate_prob": Option(float, 0.3), "scorer": Option(str, "loss")}
    f = tmp_path / "s.yaml"
    f.write_text("version: 1\npopulation: 10\nmutate_prob: 1\n")
    args = argparse.Namespace(config=str(f), population=None, mutate_prob=0.5, scorer=None)
    apply_settings(args, options, "search", "search settings")
    assert (args.population, args.mutate_prob, args.scorer) == (10, 0.5, "loss")
    for text, msg in [("version: 1\npopulaton: 3\n", "unknown key"), ("version: 1\npopulation: x\n", "must be int"),
                      ("population: 3\n", "version None")]:
        f.write_text(text)
        with pytest.raises(ConfigError, match=msg):
            apply_settings(argparse.Namespace(config=str(f), population=None), options, "search", "search settings")


def test_shipped_settings_load():
    assert {"tiny@cpu-2core", "wmt14.en-de@raspberrypi"} <= set(available("search"))
    for name in available("search"):
        _, values = load_settings(name, "search", "search settings")
        assert EvolutionSettings(**{k: v for k, v in values.items() if k in EvolutionSettings.__dataclass_fields__})
    _, values = load_settings("cpu-2core.tiny-latency", "latency", "latency settings")
    assert values["device"] == "cpu-2core" and values["space"] == "tiny-latency"


def test_search_config_file_with_flag_overrides(tmp_path, capsys):
    f = tmp_path / "search.yaml"
    f.write_text("version: 1\nspace: tiny\npredictor: macs\nlatency_constraint: 12\nscorer: params\n"
                 "population: 8\nparents: 2\nmutations: 3\ncrossovers: 3\niterations: 3\n")
    out = tmp_path / "s.yml"
    assert main(["search", "--config", str(f), "--iterations", "1", "--out", str(out), "--no-progress"]) == 0
    state = json.loads(out.with_name("s.state.json").read_text())
    assert state["fingerprint"]["population"] == 8 and state["fingerprint"]["iterations"] == 1
    assert state["fingerprint"]["scorer"] == "params" and state["generation"] == 1
    assert "best (evolution, params scorer)" in capsys.readouterr().out


def test_measure_config_file_with_flag_overrides(tmp_path):
    out = tmp_path / "lat.csv"
    rc = main(["measure", "--config", "cpu-2core.tiny-latency", "--space", "tiny", "--samples", "2", "--out", str(out),
               "--runs", "2", "--warmup", "1", "--src-len", "5", "--tgt-len", "3", "--vocab-size", "64",
               "--no-progress"])
    assert rc == 0
    meta = json.loads(out.with_name("lat.meta.json").read_text())
    assert meta["space"] == "tiny" and meta["device"] == "cpu-2core" and meta["seed"] == 0
    proto = meta["protocol"]
    assert (proto["timer"], proto["threads"], proto["runs"], proto["src_len"], proto["beam"]) == ("wall", 1, 2, 5, 5)


def test_training_key_device_is_read_as_compute(tmp_path):
    from hat.train.config import load_train_config

    assert load_train_config("tiny-cpu", ["device=cpu"]).compute == "cpu"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("device: cpu\nmax_updates: 3\nwarmup_updates: 1\n")
    cfg = load_train_config(str(recipe))
    assert cfg.compute == "cpu" and cfg.max_updates == 3 and "device" not in cfg
