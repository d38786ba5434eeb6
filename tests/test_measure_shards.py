"""`hat measure --shard K/N`, its ETA line and `hat merge-latency` (tiny space, a fast protocol)."""
from __future__ import annotations

import json

import pytest
import torch

from hat.cli import main
from hat.commands.measure import config_sequence
from hat.latency import read_latency_csv
from hat.latency.shards import duration, parse_shard, shard_of
from hat.space import load_space

torch.set_num_threads(1)
FAST = ["--runs", "1", "--warmup", "0", "--src-len", "4", "--tgt-len", "2", "--vocab-size", "32", "--no-progress",
        "--threads", "1", "--reference-every", "2"]


def _measure(out, n, *extra, space="tiny"):
    return main(["measure", "--device", "cpu-2core", "--space", space, "--samples", str(n), "--out", str(out),
                 *FAST, *extra])


def test_shards_merged_are_the_unsharded_configs_and_fit(tmp_path, capsys):
    assert _measure(tmp_path / "all.csv", 5) == 0
    err = capsys.readouterr().err
    assert "hat measure: 5 configs to go" in err and "s per config (estimated from one timed config)" in err
    assert _measure(tmp_path / "s1.csv", 5, "--shard", "1/2") == 0
    assert _measure(tmp_path / "s2.csv", 5, "--shard", "2/2") == 0
    assert json.loads((tmp_path / "s2.meta.json").read_text())["shard"] == "2/2"
    keys = {k: {c.key() for c in read_latency_csv(tmp_path / f"{k}.csv").configs} for k in ("all", "s1", "s2")}
    assert len(keys["s1"]) == 3 and len(keys["s2"]) == 2 and not keys["s1"] & keys["s2"]
    capsys.readouterr()
    # resuming a finished shard measures nothing and prints no ETA; another shard into it is refused
    assert _measure(tmp_path / "s1.csv", 5, "--shard", "1/2") == 0
    assert "configs to go" not in capsys.readouterr().err
    assert _measure(tmp_path / "s1.csv", 5, "--shard", "2/2") == 2
    assert "holds shard 1/2" in capsys.readouterr().err
    assert _measure(tmp_path / "s1.csv", 5) == 2
    merged = tmp_path / "merged.csv"
    assert main(["merge-latency", str(tmp_path / "s1.csv"), str(tmp_path / "s2.csv"), "--out", str(merged)]) == 0
    data = read_latency_csv(merged)
    assert {c.key() for c in data.configs} == keys["all"] and len(data) == 5
    assert [s["shard"] for s in data.meta["merged_from"]] == ["1/2", "2/2"] and "shard" not in data.meta
    assert main(["fit-predictor", "--data", str(merged), "--test", str(merged), "--out", str(tmp_path / "p.pt")]) == 0
    # a config in two files, and an existing --out, are refused naming the file
    capsys.readouterr()
    assert main(["merge-latency", str(tmp_path / "s1.csv"), str(tmp_path / "all.csv"), "--out",
                 str(tmp_path / "m2.csv")]) == 2
    assert "all.csv: row" in capsys.readouterr().err and not (tmp_path / "m2.csv").exists()
    assert main(["merge-latency", str(tmp_path / "s1.csv"), str(tmp_path / "s2.csv"), "--out", str(merged)]) == 2


def test_merge_refuses_another_space(tmp_path, capsys):
    assert _measure(tmp_path / "a.csv", 1) == 0
    assert _measure(tmp_path / "b.csv", 1, space="tiny-latency") == 0
    capsys.readouterr()
    assert main(["merge-latency", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--out",
                 str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "b.csv" in err and "space" in err and not (tmp_path / "m.csv").exists()


def test_merge_refuses_shards_of_another_seed(tmp_path, capsys):
    assert _measure(tmp_path / "s1.csv", 4, "--shard", "1/2") == 0
    assert _measure(tmp_path / "s2.csv", 4, "--shard", "2/2", "--seed", "7") == 0
    capsys.readouterr()
    assert main(["merge-latency", str(tmp_path / "s1.csv"), str(tmp_path / "s2.csv"), "--out",
                 str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "s2.csv: seed" in err and not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize("bad", ["0/3", "4/3", "x", "1/0", "3", "-1/2"])
def test_bad_shard_refused(tmp_path, capsys, bad):
    assert _measure(tmp_path / "x.csv", 3, "--shard", bad) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--shard" in err and not (tmp_path / "x.csv").exists()


def test_shards_partition_the_seeded_list():
    seq = config_sequence(load_space("tiny"), 10, 3)
    parts = [shard_of(seq, parse_shard(f"{k}/3")) for k in (1, 2, 3)]
    assert sorted(c.key() for p in parts for c in p) == sorted(c.key() for c in seq)
    assert [len(p) for p in parts] == [4, 3, 3] and duration(3.1 * 3600) == "3.1 h"
