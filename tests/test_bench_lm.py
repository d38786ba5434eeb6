"""benchmarks/bench_lm.py's own logic: which LMs it trains, which uniform design it pairs with a
front member, how it scores agreement, that a finished run is never retrained, and one tiny `rank`."""
from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
import yaml

from hat.cli import main as hat_main
from hat.space import LMSpace, lm_decoder_params, load_lm_space

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_lm", ROOT / "benchmarks" / "bench_lm.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

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


def test_matching_picks_the_closest_latency_not_above():
    lat = [5.0, 9.0, 12.0, 9.0, 20.0]
    assert bench.closest_not_above(10.0, lat) == 1  # 9 (the first of equals), not 12 though closer in |diff|
    assert bench.closest_not_above(12.0, lat) == 2  # equal is not above
    assert bench.closest_not_above(100.0, lat) == 4
    assert bench.closest_not_above(4.9, lat) is None


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
    bench.main(argv)
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
