"""Decoder-only LMs on the device: measured latency and memory (CSV, resume), the lm-cost
predictor, LiteTransformerSearch's NSGA-II front (`hat search --task lm`) and the refusals."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from hat.cli import main
from hat.latency.dataset import OUR_COLUMNS
from hat.latency.lm_dataset import LMLatencyData, LMLatencyWriter, read_lm_latency_csv
from hat.latency.lm_measure import LMMeasurer, LMProtocol, model_bytes
from hat.latency.predictors import LMCost, fit_lm, load_predictor
from hat.latency.predictors.lm import memory_basis
from hat.search.lm_nsga2 import LMObjectives, LMSearchSettings, lm_nsga2_search
from hat.space import (LMConfig, LMSpace, lm_decoder_params, lm_macs, load_lm_config, load_lm_space,
                       save_lm_space)

ROOT = Path(__file__).resolve().parents[1]
MICRO = {"version": 1, "task": "lm", "name": "micro-lm", "vocab_size": 64, "max_positions": 16,
         "choices": {"layer_num": [1, 2, 3], "embed_dim": [16, 32], "ffn_embed_dim": [16, 64],
                     "attention_heads": [1, 2]}}
FAST = ["--prompt-len", "2", "--gen-len", "2", "--runs", "1", "--warmup", "0", "--no-progress"]


@pytest.fixture
def micro(tmp_path) -> tuple[LMSpace, Path]:
    space = LMSpace.from_dict(MICRO)
    save_lm_space(space, tmp_path / "micro.yaml")
    return space, tmp_path / "micro.yaml"


def _synthetic(space: LMSpace, n: int, seed: int, noise: float = 0.02) -> LMLatencyData:
    """latency = 2e-6 ms/MAC * MACs + 0.5 ms, memory = 1.5 x weights + kv + 1 MiB, with noise."""
    cfgs = space.spread(n, random.Random(seed))
    rng = np.random.default_rng(seed)
    lat = np.array([2e-6 * lm_macs(c, space, 8, 8) + 0.5 for c in cfgs]) * rng.normal(1, noise, n)
    b = memory_basis(cfgs, space, 8, 8)
    mem = (b @ np.array([1.5, 1.0, 0.0, 2**20])) * rng.normal(1, noise / 4, n)
    return LMLatencyData(f"synthetic{seed}.csv", cfgs, lat, mem, 8, 8, {"protocol": {"batch": 1}})


def _analytic(space: LMSpace) -> LMObjectives:
    return LMObjectives(lambda cfgs: ([1e-6 * lm_macs(c, space, 8, 8) + 0.1 for c in cfgs],
                                      [4.0 * lm_decoder_params(c) + 1e5 * c.layer_num + 1e6 for c in cfgs]), "analytic")


def test_gene_encoding_round_trips_every_sample():
    space, rng = load_lm_space("lm-tiny"), random.Random(0)
    for _ in range(200):
        c = space.sample(rng)
        x = space.encode(c)
        assert len(x) == len(space.gene_slots()) and all(0 <= g <= u for g, u in zip(x, space.gene_upper()))
        assert space.decode(x) == c and space.decode(np.array(x, dtype=float) + 0.3) == c
    assert space.spread(2, rng) == [space.smallest(), space.largest()]


def test_measured_rows_round_trip_and_a_resume_retimes_nothing(micro, tmp_path, monkeypatch, capsys):
    space, path = micro
    out = tmp_path / "lm.csv"
    assert main(["measure", "--device", "cpu-2core", "--space", str(path), "--samples", "4", "--out", str(out),
                 *FAST]) == 0
    data = read_lm_latency_csv(out)
    assert len(data) == 4 and (data.prompt_len, data.gen_len) == (2, 2)
    assert data.configs[:2] == [space.smallest(), space.largest()] and len(set(data.configs)) == 4
    assert all(space.contains(c) for c in data.configs)
    assert (data.latency_ms > 0).all() and (data.memory_bytes > 0).all()
    meta = json.loads((tmp_path / "lm.meta.json").read_text())
    assert meta["task"] == "lm" and meta["protocol"]["prompt_len"] == 2 and "KV cache" in meta["peak_memory_bytes"]
    before = out.read_bytes()

    def no_timing(*a, **k):
        raise AssertionError("a resumed measure re-timed a config already in the file")

    monkeypatch.setattr(LMMeasurer, "measure", no_timing)
    assert main(["measure", "--device", "cpu-2core", "--space", str(path), "--samples", "4", "--out", str(out),
                 *FAST]) == 0
    assert out.read_bytes() == before
    assert "4 of 4 LM configs already" in capsys.readouterr().err


def test_peak_memory_grows_with_the_model():
    space = load_lm_space("lm-tiny")
    m = LMMeasurer(space, LMProtocol(prompt_len=2, gen_len=2, warmup=0, runs=1, threads=1))
    small, large = m.measure(space.smallest()), m.measure(space.largest())
    assert small["peak_memory_bytes"] > model_bytes(m.build(space.smallest()))
    assert large["peak_memory_bytes"] > 2 * small["peak_memory_bytes"]
    longer = LMMeasurer(space, LMProtocol(prompt_len=2, gen_len=12, warmup=0, runs=1, threads=1))
    assert longer.measure(space.largest())["peak_memory_bytes"] > large["peak_memory_bytes"]  # a longer KV cache


def test_predictor_recovers_synthetic_latency_and_memory(tmp_path):
    space = load_lm_space("lm-tiny")
    pred = fit_lm(_synthetic(space, 60, seed=1), space, "synthetic")
    test = _synthetic(space, 30, seed=2, noise=0.0)
    lat, lo, hi = pred.predict_interval(test.configs, 0.9)
    assert np.max(np.abs(lat / test.latency_ms - 1)) < 0.05
    assert np.mean((test.latency_ms >= lo) & (test.latency_ms <= hi)) >= 0.8
    assert np.max(np.abs(pred.predict_memory(test.configs) / test.memory_bytes - 1)) < 0.02
    pred.save(tmp_path / "p.pt")
    again = load_predictor(tmp_path / "p.pt", space)
    assert isinstance(again, LMCost) and np.allclose(again.predict(test.configs), lat)
    with pytest.raises(Exception, match="translation"):
        load_predictor(tmp_path / "p.pt", __import__("hat.space", fromlist=["load_space"]).load_space("tiny"))


def _dominated(p, q) -> bool:
    return all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p))


def test_nsga2_front_is_non_dominated_and_holds_the_extremes(tmp_path):
    space = load_lm_space("lm-tiny")
    s = LMSearchSettings(population=16, offspring=16, generations=6, seed=3)
    res = lm_nsga2_search(space, _analytic(space), s, state_path=tmp_path / "st.json")
    pts = [(-c.decoder_params, c.latency_ms, c.memory_bytes) for c in res.evaluated]
    assert res.front and all(not any(_dominated(pts[i], q) for q in pts) for i in res.front)
    on_front = {res.evaluated[i].cfg for i in res.front}
    assert {space.smallest(), space.largest()} <= on_front
    assert len(res.evaluated) > s.population and 0 < res.objective_seconds <= res.elapsed
    # a rerun resumes from the finished state: the same front, nothing evaluated again
    obj = _analytic(space)
    again = lm_nsga2_search(space, obj, s, state_path=tmp_path / "st.json")
    assert [again.evaluated[i].cfg for i in again.front] == [res.evaluated[i].cfg for i in res.front]
    assert obj.seconds == 0.0


def test_a_space_smaller_than_the_population_is_searched_whole():
    """Four configs and a population of 125: NSGA-II runs out of new candidates; the search ends
    with the front of the whole space instead of failing."""
    space = LMSpace.from_dict({**MICRO, "choices": {**MICRO["choices"], "layer_num": [1], "attention_heads": [1]}})
    res = lm_nsga2_search(space, _analytic(space), LMSearchSettings(population=125, offspring=100, generations=5,
                                                                    seed=1))
    assert len({c.cfg for c in res.evaluated}) == len(res.evaluated) == space.size() == 4
    assert {res.evaluated[i].cfg for i in res.front} >= {space.smallest(), space.largest()}


def test_constraints_hold_on_every_front_member():
    space = load_lm_space("lm-tiny")
    obj = _analytic(space)
    (lat_hi, mem_hi), = obj.many([space.largest()])
    lat_cap, mem_cap = 0.5 * lat_hi, 0.6 * mem_hi
    res = lm_nsga2_search(space, obj, LMSearchSettings(16, 16, 5, seed=0), lat_cap, mem_cap)
    front = [res.evaluated[i] for i in res.front]
    assert front and all(c.latency_ms <= lat_cap and c.memory_bytes <= mem_cap for c in front)
    assert space.largest() not in {c.cfg for c in front}


def _write_rows(path: Path, space: LMSpace, data: LMLatencyData) -> None:
    with LMLatencyWriter(path) as w:
        for c, lat, mem in zip(data.configs, data.latency_ms, data.memory_bytes):
            w.write_lm(c, space, 8, 8, {"latency_ms": lat, "latency_iqr_ms": 0.0, "prefill_ms": lat / 4,
                                        "decode_ms": 3 * lat / 4, "peak_memory_bytes": mem})
    meta = {"task": "lm", "device": "cpu-2core", "space": space.name, "space_def": space.to_dict(),
            "protocol": LMProtocol(8, 8).to_dict()}
    path.with_name(path.stem + ".meta.json").write_text(json.dumps(meta))


def test_cli_fit_and_search_end_to_end(tmp_path, capsys):
    space = load_lm_space("lm-tiny")
    _write_rows(tmp_path / "lm.csv", space, _synthetic(space, 40, seed=5))
    assert main(["fit-predictor", "--data", str(tmp_path / "lm.csv"), "--out", str(tmp_path / "lm.pt")]) == 0
    assert "lm-cost" in capsys.readouterr().out
    front = tmp_path / "out" / "front.csv"
    argv = ["search", "--task", "lm", "--space", "lm-tiny", "--predictor", str(tmp_path / "lm.pt"), "--out", str(front),
            "--population", "12", "--mutations", "6", "--crossovers", "6", "--iterations", "4", "--no-progress",
            "--latency-constraint", "200", "--memory-constraint", "30"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "of it predicting" in out and (tmp_path / "out" / "front.png").stat().st_size > 0
    rows = list(__import__("csv").DictReader(front.open()))
    assert rows and all(float(r["latency_ms"]) <= 200 and float(r["memory_bytes"]) <= 30 * 2**20 for r in rows)
    cfgs = [LMConfig.from_dict(json.loads(r["config_json"])) for r in rows]
    assert all(space.contains(c) for c in cfgs)
    # OUT.best.yml: the member with the most decoder parameters, a config `hat train --task lm` reads
    best = load_lm_config(tmp_path / "out" / "front.best.yml")
    assert lm_decoder_params(best) == max(int(r["decoder_params"]) for r in rows) and best in cfgs
    meta = yaml.safe_load((tmp_path / "out" / "front.best.yml").read_text())["metadata"]
    assert meta["latency_constraint"] == 200 and meta["memory_constraint_mib"] == 30 and meta["space"] == "lm-tiny"
    assert main(argv) == 0  # resumes the finished search
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["evaluated"] == json.loads(
        out.strip().splitlines()[-1])["evaluated"]
    # any other row as a config: `hat info FRONT.csv --row N --save`
    k = len(rows)
    assert main(["info", str(front), "--row", str(k), "--space", "lm-tiny", "--save", str(tmp_path / "row.yml")]) == 0
    assert load_lm_config(tmp_path / "row.yml") == cfgs[k - 1]
    assert f"summary     {cfgs[k - 1].describe()}" in capsys.readouterr().out
    assert main(["info", str(front), "--row", "1", "--space", "lm-tiny", "--json"]) == 0
    assert LMConfig.from_dict(json.loads(capsys.readouterr().out)["config"]) == cfgs[0]


@pytest.mark.parametrize("case", ["long-prompt", "lm-space-translation-search", "translation-space-lm-search",
                                  "translation-predictor-lm-search", "lm-predictor-translation-search",
                                  "encoder-keys", "lm-into-translation-csv", "translation-model-on-lm-rows",
                                  "front-row-out-of-range", "front-row-not-a-front", "front-row-translation-space",
                                  "front-row-without-row"])
def test_refusals_are_one_line_exit_2_and_write_nothing(case, tmp_path, capsys):
    space = load_lm_space("lm-tiny")
    _write_rows(tmp_path / "lm.csv", space, _synthetic(space, 20, seed=7))
    pred = fit_lm(_synthetic(space, 20, seed=7), space)
    pred.save(tmp_path / "lm.pt")
    tiny_pt = ROOT / "hat" / "configs" / "device" / "cpu-2core.tiny.pt"
    out = tmp_path / "new"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**MICRO, "choices": {**MICRO["choices"], "encoder_embed_dim": [16]}}))
    (tmp_path / "trans.csv").write_text(",".join(OUR_COLUMNS) + "\n")
    front = tmp_path / "front.csv"
    front.write_text("decoder_params,config_json\n1," + json.dumps(json.dumps(space.smallest().to_dict())) + "\n")
    argv = {
        "long-prompt": ["measure", "--device", "cpu-2core", "--space", "lm-tiny", "--samples", "2", "--prompt-len", "100",
                        "--gen-len", "40", "--out", str(out / "m.csv")],
        "lm-space-translation-search": ["search", "--scorer", "params", "--space", "lm-tiny", "--predictor", "macs",
                                        "--latency-constraint", "60", "--out", str(out / "s.yml")],
        "translation-space-lm-search": ["search", "--task", "lm", "--space", "tiny", "--predictor",
                                        str(tmp_path / "lm.pt"), "--out", str(out / "f.csv")],
        "translation-predictor-lm-search": ["search", "--task", "lm", "--space", "lm-tiny", "--predictor", str(tiny_pt),
                                            "--out", str(out / "f.csv")],
        "lm-predictor-translation-search": ["search", "--scorer", "params", "--space", "tiny", "--predictor",
                                            str(tmp_path / "lm.pt"), "--latency-constraint", "60", "--out",
                                            str(out / "s.yml")],
        "encoder-keys": ["measure", "--device", "cpu-2core", "--space", str(bad), "--samples", "2", "--out",
                         str(out / "m.csv")],
        "lm-into-translation-csv": ["measure", "--device", "cpu-2core", "--space", "lm-tiny", "--samples", "2",
                                    "--out", str(tmp_path / "trans.csv"), *FAST],
        "translation-model-on-lm-rows": ["fit-predictor", "--data", str(tmp_path / "lm.csv"), "--model", "cost",
                                         "--out", str(out / "p.pt")],
        "front-row-out-of-range": ["info", str(front), "--row", "2", "--space", "lm-tiny", "--save", str(out / "r.yml")],
        "front-row-not-a-front": ["info", str(tmp_path / "trans.csv"), "--row", "1", "--space", "lm-tiny", "--save",
                                  str(out / "r.yml")],
        "front-row-translation-space": ["info", str(front), "--row", "1", "--space", "tiny", "--save", str(out / "r.yml")],
        "front-row-without-row": ["info", str(front), "--space", "lm-tiny", "--save", str(out / "r.yml")],
    }[case]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert not out.exists()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_search_can_measure_each_candidate_here(micro, tmp_path, capsys):
    _space, path = micro
    front = tmp_path / "front.csv"
    assert main(["search", "--task", "lm", "--space", str(path), "--predictor", "measure", "--device", "cpu-2core",
                 "--prompt-len", "2", "--gen-len", "2", "--population", "4", "--mutations", "2", "--crossovers", "2",
                 "--iterations", "1", "--out", str(front), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["front"] >= 1 and 0 < summary["objective_share"] <= 1
    assert len(front.read_text().splitlines()) == summary["front"] + 1
