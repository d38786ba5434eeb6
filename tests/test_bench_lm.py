"""benchmarks/bench_lm.py's own logic: which LMs it trains, which uniform design is the baseline of a
front member, how it scores agreement, that a finished run is never retrained, and one tiny `rank`."""
from __future__ import annotations

import importlib.util
import csv
import json
import random
import sys
from pathlib import Path

import pytest
import yaml

from hat.cli import main as hat_main
from hat.space import LMConfig, LMSpace, lm_decoder_params, load_lm_space

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_lm", ROOT / "benchmarks" / "bench_lm.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_lm_front as front  # noqa: E402

MICRO = {"version": 1, "task": "lm", "name": "micro-lm", "vocab_size": 64, "max_positions": 16,
         "choices": {"layer_num": [1, 2], "embed_dim": [16, 32], "ffn_embed_dim": [32, 64], "attention_heads": [2]}}


def test_architectures_are_distinct_spread_and_include_the_extremes_and_uniform_ones():
    space = load_lm_space("lm-tiny")
    picked = bench.pick_architectures(space, 12, seed=1)
    cfgs = [c for _, c in picked]
    assert len(cfgs) == len(set(cfgs)) == 12 and all(space.contains(c) for c in cfgs)
    kinds = [k for k, _ in picked]
    assert kinds[:2] == ["smallest", "largest"] and cfgs[:2] == [space.smallest(), space.largest()]
    assert kinds.count("uniform") >= 2 and "sampled" in kinds
    uni = set(bench.uniform_configs(space))
    assert all((c in uni) == (k != "sampled") for k, c in picked)
    dp = sorted(lm_decoder_params(c) for c in cfgs)
    lo, hi = lm_decoder_params(space.smallest()), lm_decoder_params(space.largest())
    assert dp[0] == lo and dp[-1] == hi and max(b - a for a, b in zip(dp, dp[1:])) < (hi - lo) / 3  # no big gap
    assert bench.pick_architectures(space, 12, seed=1) == picked  # seeded
    assert [c for _, c in bench.pick_architectures(space, 2, seed=1)] == cfgs[:2]


def test_uniform_designs_have_one_ffn_width_and_head_count_per_layer():
    space = load_lm_space("lm-tiny")
    uni = bench.uniform_configs(space)
    assert len(uni) == len(set(uni)) == 5 * 3 * 4 * 2
    assert all(len(set(c.ffn_embed_dim)) == len(set(c.attention_heads)) == 1 and space.contains(c) for c in uni)


def test_the_baseline_is_the_strongest_design_within_both_latency_and_memory():
    lat, mem, params = [5.0, 9.0, 12.0, 9.0, 8.0], [1.0, 3.0, 2.0, 2.0, 9.0], [10, 30, 40, 30, 50]
    assert front.strongest_within(10.0, 3.0, lat, mem, params) == 1  # 30 params; the first of equals
    assert front.strongest_within(10.0, 2.5, lat, mem, params) == 3  # memory rules out the first 30
    assert front.strongest_within(12.0, 2.0, lat, mem, params) == 2  # both bounds are inclusive
    assert front.strongest_within(100.0, 100.0, lat, mem, params) == 4
    assert front.strongest_within(4.9, 100.0, lat, mem, params) is None
    assert front.strongest_within(100.0, 0.5, lat, mem, params) is None


def test_the_design_above_is_the_fastest_matching_every_objective_and_the_line_interpolates():
    lat, mem, params = [5.0, 9.0, 12.0, 9.0, 8.0], [1.0, 3.0, 2.0, 2.0, 9.0], [10, 30, 40, 30, 50]
    assert front.cheapest_matching(6.0, 1.5, 20, lat, mem, params) == 4  # 8 ms; 9 ms (index 1, 3) are slower
    assert front.cheapest_matching(8.5, 1.5, 20, lat, mem, params) == 3  # 9 ms twice: the less memory
    assert front.cheapest_matching(9.0, 2.5, 35, lat, mem, params) is None  # 40 params only at 2 MiB
    assert front.on_the_line(15.0, 10.0, 300.0, 20.0, 200.0) == 250.0
    assert front.on_the_line(10.0, 10.0, 300.0, 10.0, 200.0) == 300.0


class _CostByParams:
    """A stand-in lm-cost predictor: latency 1 ms per 1,000 decoder params, memory 1 byte per param."""

    def check_space(self, space) -> None:
        pass

    def predict(self, cfgs):
        return [lm_decoder_params(c) / 1000 for c in cfgs]

    def predict_memory(self, cfgs):
        return [float(lm_decoder_params(c)) for c in cfgs]


def test_front_places_each_member_between_the_uniform_designs_below_and_above(tmp_path, monkeypatch, capsys):
    space = LMSpace.from_dict({**MICRO, "max_positions": 64})
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({**MICRO, "max_positions": 64}))
    mixed = [LMConfig(2, 32, (32, 64), (2, 2)), LMConfig(2, 16, (64, 32), (2, 2)), space.smallest()]
    with open(tmp_path / "front.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["config_json"])
        w.writeheader()
        w.writerows({"config_json": json.dumps(c.to_dict())} for c in mixed)
    trained: list = []
    dp = lm_decoder_params
    monkeypatch.setattr(front, "_lm_predictor", lambda a, s: _CostByParams())
    monkeypatch.setattr(front, "train", lambda a, c, s: trained.append((c, s)) or {"ppl": {"4": 1000 / dp(c) + s}})
    argv = ["front", "--space", str(tmp_path / "space.yaml"), "--predictor", "p.pt", "--front", str(tmp_path / "front.csv"),
            "--k", "3", "--min-gain", "1.01", "--updates", "4", "--seeds", "1,2", "--measure", "2",
            "--json", str(tmp_path / "out.json")]
    bench.main(argv)
    res = json.loads((tmp_path / "out.json").read_text())["front"]
    assert res["summary"]["members"] == 3 and res["summary"]["more_params"] == 2  # the smallest is its own baseline
    rows = {r["front"]["summary"]: r for r in res["rows"]}
    assert set(rows) == {mixed[0].describe(), mixed[1].describe()}  # the gain-1 member is below --min-gain
    want = {mixed[0]: (LMConfig(2, 32, (32, 32), (2, 2)), LMConfig(2, 32, (64, 64), (2, 2))),
            mixed[1]: (LMConfig(2, 16, (32, 32), (2, 2)), LMConfig(1, 32, (32,), (2,)))}  # 6.5 k params < 2x16 ffn 64
    for m, (lo, hi) in want.items():
        r = rows[m.describe()]
        assert (r["below"]["summary"], r["above"]["summary"]) == (lo.describe(), hi.describe())
        assert r["gain"] == pytest.approx(dp(m) / dp(lo))
        ppl = {k: [1000 / dp(c) + s for s in (1, 2)] for k, c in (("front", m), ("below", lo), ("above", hi))}
        assert all(r[k]["ppl"] == ppl[k] for k in ppl)
        x = (dp(m) - dp(lo)) / (dp(hi) - dp(lo))  # latency is proportional to params here
        line = [b + x * (u - b) for b, u in zip(ppl["below"], ppl["above"])]
        assert r["front_minus_line"] == pytest.approx([f - y for f, y in zip(ppl["front"], line)])
        assert all(len(r[k]["measured_ms"]) == 2 and r[k]["measured_mib"] > 0 for k in ("below", "front", "above"))
    assert len(trained) == 2 * 3 * 2  # 2 members x 3 designs x 2 seeds
    assert "front - the uniform line at its latency" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no front member has a gain"):
        bench.main([*argv, "--min-gain", "5"])


def test_rank_agreement_perfect_and_reversed():
    params = [1.0, 2.0, 3.0, 4.0]
    assert bench.rank_agreement(params, [40.0, 30.0, 20.0, 10.0]) == {"kendall": pytest.approx(-1.0),
                                                                      "spearman": pytest.approx(-1.0)}
    assert bench.rank_agreement(params, [1.0, 2.0, 3.0, 4.0])["spearman"] == pytest.approx(1.0)


def _fake_trainer(calls: list):
    def run(argv: list[str], log: Path) -> None:
        calls.append(argv)
        (log.parent / "train_log.jsonl").write_text(
            json.dumps({"train": {"update": 2}}) + "\n" + json.dumps({"valid": {"update": 2, "ppl": 50.0, "elapsed_s": 1.5}})
            + "\n" + json.dumps({"valid": {"update": 4, "ppl": 40.0, "elapsed_s": 3.0}}) + "\n")
        (log.parent / "checkpoint_last.pt").write_bytes(b"w")
    return run


def test_a_finished_run_is_read_back_not_retrained(tmp_path):
    calls: list = []
    fp = {"seed": 1, "updates": 4}
    res = bench.run_once(tmp_path / "run", ["train"], fp, _fake_trainer(calls))
    assert res["ppl"] == {"2": 50.0, "4": 40.0} and res["train_s"] == 3.0 and len(calls) == 1
    assert not (tmp_path / "run" / "checkpoint_last.pt").exists()  # weights dropped unless kept
    assert bench.run_once(tmp_path / "run", ["train"], fp, _fake_trainer(calls)) == res and len(calls) == 1
    with pytest.raises(SystemExit, match="other settings"):
        bench.run_once(tmp_path / "run", ["train"], {**fp, "seed": 2}, _fake_trainer(calls))
    bench.run_once(tmp_path / "kept", ["train"], fp, _fake_trainer(calls), keep_checkpoints=True)
    assert (tmp_path / "kept" / "checkpoint_last.pt").exists()


def test_last_json_finds_the_summary_line():
    assert bench.last_json('front: 3\n{"front": 3}\nwarning\n{not json\n') == {"front": 3}
    with pytest.raises(ValueError):
        bench.last_json("no summary")


def test_tiny_rank_end_to_end_trains_once_and_reports(tmp_path, capsys):
    rng = random.Random(0)
    words = "the house cat dog is very big small red garden tree green and fast old a on sees".split()
    (tmp_path / "text.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 10)))
                                                 for _ in range(200)) + "\n")
    assert hat_main(["prepare", "mono", "--input", str(tmp_path / "text.txt"), "--lang", "en", "--valid-share", "0.1",
                     "--test-share", "0.05", "--vocab-size", "60", "--out", str(tmp_path / "data")]) == 0
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(MICRO))
    argv = ["rank", "--data", str(tmp_path / "data"), "--space", str(tmp_path / "space.yaml"), "--n", "3",
            "--updates", "2,4", "--seeds", "1,2", "--threads", "1", "--work", str(tmp_path / "work"),
            "--json", str(tmp_path / "out.json"),
            *[f"--set={kv}" for kv in ("context=16", "batch_size=4", "warmup_updates=1", "log_interval=2")]]
    runs = lambda: list((tmp_path / "work" / "runs").glob("*/s*-u4-v2/result.json"))  # noqa: E731
    bench.main([*argv, "--shard", "2/2"])  # the second architecture only, both seeds
    assert len(runs()) == 2 and "shard 2/2 trained" in capsys.readouterr().out
    bench.main([*argv, "--shard", "1/2"])  # the first and the third
    assert len(runs()) == 6
    with pytest.raises(SystemExit, match="need 1 <= K <= N"):
        bench.main([*argv, "--shard", "3/2"])
    stamps = {p: p.stat().st_mtime_ns for p in runs()}
    bench.main(argv)  # the table, from the finished runs
    assert {p: p.stat().st_mtime_ns for p in runs()} == stamps
    res = json.loads((tmp_path / "out.json").read_text())["rank"]
    assert len(res["rows"]) == 3 and res["updates"] == [2, 4]
    space = LMSpace.from_dict(MICRO)
    assert {r["summary"] for r in res["rows"]} >= {space.smallest().describe(), space.largest().describe()}
    for r in res["rows"]:
        for s in ("1", "2"):
            assert set(r["runs"][s]["ppl"]) == {"2", "4"} and all(p > 1 for p in r["runs"][s]["ppl"].values())
    assert len(list((tmp_path / "work" / "runs").glob("*/s*-u4-v2/result.json"))) == 6  # one run per (arch, seed)
    out = capsys.readouterr().out
    assert "| 2 |" in out and "| 4 |" in out and "Kendall, decoder params" in out
    logs = sorted((tmp_path / "work" / "runs").glob("*/*/train.out"))
    stamps = [p.stat().st_mtime_ns for p in logs]
    bench.main(argv)  # everything is done: nothing is retrained
    assert [p.stat().st_mtime_ns for p in logs] == stamps
