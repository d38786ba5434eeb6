"""Latency predictors: accuracy against HAT's MLP, intervals, transfer, the registry and refusals.

Synthetic devices time a config as a known function of its exact MACs and depth (hat.space.macs,
not the predictors' own cost terms) with multiplicative noise, so every assertion can fail.
"""
from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import torch

from hat.cli import main
from hat.errors import CheckpointError, ConfigError, DataError
from hat.latency.dataset import HAT_COLUMNS, LatencyData, read_latency_csv
from hat.latency.predictors import (FORMAT, PREDICTORS, Context, Predictor, conformal_bounds, fit, load_predictor, metrics,
                                    register, transfer)
from hat.space import hat_raw_features, load_space, macs

torch.set_num_threads(1)
SPACE = load_space("tiny-latency")
CTX = Context(vocab_size=8000, qkv_dim=SPACE.qkv_dim)


def device(n, seed, ms_per_gmac=50.0, per_layer_step=0.25, fixed=2.0, noise=0.05):
    """`n` configs timed by a synthetic device: GMACs x price + decoder layer-steps x overhead + fixed,
    times lognormal noise."""
    rng = random.Random(seed)
    cfgs = [SPACE.sample(rng) for _ in range(n)]
    m = np.array([macs(c, SPACE, 30, 30, 8000, 5) for c in cfgs], float) / 1e9
    steps = np.array([30 * c.decoder_layer_num for c in cfgs], float)
    y = (fixed + ms_per_gmac * m + per_layer_step * steps) * np.exp(noise * np.random.default_rng(seed).standard_normal(n))
    feats = np.array([list(hat_raw_features(c).values()) for c in cfgs])
    return LatencyData(f"device-{seed}", feats, 0.05 * y, 0.95 * y, cfgs)


def write_csv(path, data, space_name=None, cfg=True):
    """Our CSV layout (with configs) or HAT's 14 columns (cfg=False)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HAT_COLUMNS + (("config",) if cfg else ()))
        for i in range(len(data)):
            row = [*data.hat_features[i], data.latency_encoder[i], data.latency_decoder[i], 0.1, 0.2]
            w.writerow(row + ([json.dumps(data.configs[i].to_dict())] if cfg else []))
    if space_name:
        path.with_name(path.stem + ".meta.json").write_text(json.dumps({"space": space_name}))
    return path


@pytest.fixture(scope="module")
def split():
    d = device(500, seed=1)
    return d.subset(range(400)), d.subset(range(400, 500))


@pytest.fixture(scope="module")
def hat_mlp(split):
    # HAT's recipe (architecture, Adam 1e-5, batch 128), 800 instead of 5000 steps to keep the suite fast
    return fit(split[0], "hat-mlp", SPACE, CTX, 100.0, seed=0, steps=800, transfer_steps=300)


def mape(data, pred):
    return metrics(data.latency_ms, pred.predict(data.configs))["mape_pct"]


def test_hat_mlp_learns_the_function(split, hat_mlp):
    train, test = split
    constant = float(np.mean(np.abs(np.median(train.latency_ms) - test.latency_ms) / test.latency_ms) * 100)
    assert hat_mlp.feature_set == "hat10" and hat_mlp.state["hidden"] == [400, 400, 400, 400]
    assert mape(test, hat_mlp) < 0.5 * constant
    assert metrics(test.latency_ms, hat_mlp.predict(test.configs))["kendall_tau"] > 0.6


def test_default_beats_hat_mlp_on_the_same_split(split, hat_mlp):
    train, test = split
    default = fit(train, "default", SPACE, CTX, 100.0, seed=0)
    d = metrics(test.latency_ms, default.predict(test.configs))
    h = metrics(test.latency_ms, hat_mlp.predict(test.configs))
    assert default.name == "cost"
    assert d["mape_pct"] <= 0.9 * h["mape_pct"] and d["kendall_tau"] >= h["kendall_tau"]


def test_default_is_monotone_in_widths_and_depth(split):
    pred = fit(split[0], "default", SPACE, CTX)
    rng = random.Random(7)
    for _ in range(30):
        c = SPACE.sample(rng)
        d = c.to_dict()
        d["decoder_ffn_embed_dim"] = [max(SPACE.choices["decoder_ffn_embed_dim"])] * c.decoder_layer_num
        d["encoder_embed_dim"] = max(SPACE.choices["encoder_embed_dim"])
        bigger = type(c).from_dict(d)
        assert pred.predict_one(bigger) >= pred.predict_one(c) - 1e-9
        if c.decoder_layer_num < SPACE.max_decoder_layers:
            d = c.to_dict()
            d["decoder_layer_num"] += 1
            for k in ("decoder_ffn_embed_dim", "decoder_self_attention_heads", "decoder_ende_attention_heads",
                      "decoder_arbitrary_ende_attn"):
                d[k] = list(d[k]) + [d[k][-1]]
            assert pred.predict_one(type(c).from_dict(d)) >= pred.predict_one(c)


def test_conformal_bounds_ranks():
    r = np.arange(1, 100) / 50  # 99 ratios 0.02 .. 1.98
    lo, hi = conformal_bounds(r, 0.9)  # ranks floor(100 * 0.05) = 5 and ceil(100 * 0.95) = 95
    assert (lo, hi) == (r[4], r[94])
    assert conformal_bounds(r[:5], 0.9) == (r[0], r[4])  # too few ratios: the extremes
    with pytest.raises(ConfigError, match="between 0 and 1"):
        conformal_bounds(r, 1.5)


@pytest.mark.parametrize("model", ["default", "analytic"])
def test_interval_coverage_on_synthetic_data(model):
    d = device(2600, seed=4, noise=0.08)
    train, test = d.subset(range(600)), d.subset(range(600, 2600))
    pred = fit(train, model, SPACE, CTX, seed=1)
    p, lo, hi = pred.predict_interval(test.configs, 0.9)
    m = metrics(test.latency_ms, p, lo, hi)
    assert 85 <= m["coverage_pct"] <= 95, m
    assert (lo < p).all() and (p < hi).all()
    p80, lo80, hi80 = pred.predict_interval(test.configs, 0.8)
    assert (hi80 - lo80 < hi - lo).all()  # a lower level gives a narrower interval


def test_transfer_beats_scratch_with_few_rows():
    """Target device: the same kind of machine 1.8x slower with a different fixed cost; 10 rows."""
    target = {"ms_per_gmac": 90.0, "per_layer_step": 0.45, "fixed": 5.0, "noise": 0.02}
    src = fit(device(400, seed=10, noise=0.02), "default", SPACE, CTX)
    test = device(300, seed=11, **target)
    tr_err, sc_err = [], []
    for rep in range(5):
        few = device(10, seed=100 + rep, **target)
        tr_err.append(mape(test, transfer(src, few, CTX, seed=rep)))
        sc_err.append(mape(test, fit(few, "default", SPACE, CTX, seed=rep)))
    # the cost model from scratch is already good with 10 rows; the source's prices still help on average
    # and never hurt by much (cross-validation may fall back to the target rows alone)
    assert np.mean(tr_err) < 0.92 * np.mean(sc_err), (tr_err, sc_err)
    assert all(t <= s + 0.1 for t, s in zip(tr_err, sc_err)), (tr_err, sc_err)
    assert mape(test, src) > 2 * np.mean(tr_err)  # the adaptation did something: the source alone is far off


def test_hat_mlp_transfer_rescales_and_finetunes(split, hat_mlp):
    test = device(200, seed=21, ms_per_gmac=90.0, per_layer_step=0.45, fixed=5.0)
    few = device(30, seed=22, ms_per_gmac=90.0, per_layer_step=0.45, fixed=5.0)
    adapted = transfer(hat_mlp, few, CTX, seed=0)
    assert adapted.name == "hat-mlp" and adapted.lat_norm > 1.5 * hat_mlp.lat_norm
    assert mape(test, adapted) < 0.5 * mape(test, hat_mlp)


def test_saved_predictor_carries_the_interval(tmp_path, split):
    pred = fit(split[0], "default", SPACE, CTX, 100.0, "cpu-2core")
    pred.save(tmp_path / "p.pt")
    raw = torch.load(tmp_path / "p.pt", weights_only=True)
    assert raw["format"] == FORMAT and len(raw["interval"]["ratios"]) == len(split[0])
    q = load_predictor(tmp_path / "p.pt", load_space("tiny"))
    a, b = pred.predict_interval(split[1].configs), q.predict_interval(split[1].configs)
    for x, y in zip(a, b):
        assert np.allclose(x, y)
    old = dict(raw, format="hat-latency-predictor/1")
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="refit"):
        load_predictor(tmp_path / "old.pt")


def test_registry_refuses_duplicate_names():
    assert {"cost", "hat-mlp", "analytic", "cost-mlp"} <= set(PREDICTORS)
    with pytest.raises(ValueError, match="already registered"):
        register("cost")(type("Other", (Predictor,), {}))
    with pytest.raises(ValueError, match="reserved"):
        register("default")(type("Other", (Predictor,), {}))
    with pytest.raises(ConfigError, match="unknown predictor model"):
        fit(device(20, seed=0), "no-such-model")
    with pytest.raises(ConfigError, match="unknown option"):
        fit(device(20, seed=0), "default", steps=3)


# ---- the command line ------------------------------------------------------------------------
def test_cli_intervals_and_transfer(tmp_path, capsys):
    src = write_csv(tmp_path / "src.csv", device(200, seed=30), "tiny-latency")
    few = write_csv(tmp_path / "few.csv", device(20, seed=31, ms_per_gmac=90.0), "tiny-latency")
    test_data = device(60, seed=32, ms_per_gmac=90.0)
    test = write_csv(tmp_path / "test.csv", test_data, "tiny-latency")
    assert main(["fit-predictor", "--data", str(src), "--out", str(tmp_path / "src.pt")]) == 0
    out = capsys.readouterr().out
    assert "90% interval" in out and "coverage" in out
    rc = main(["fit-predictor", "--data", str(few), "--test", str(test), "--transfer-from", str(tmp_path / "src.pt"),
               "--out", str(tmp_path / "few.pt"), "--predictions-out", str(tmp_path / "pred.csv")])
    assert rc == 0 and "adapted from" in capsys.readouterr().out
    with open(tmp_path / "pred.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["row", "measured_ms", "predicted_ms", "lower_ms", "upper_ms"]
    assert [float(r["measured_ms"]) for r in rows] == pytest.approx(list(test_data.latency_ms), rel=1e-4)
    assert all(float(r["lower_ms"]) <= float(r["predicted_ms"]) <= float(r["upper_ms"]) for r in rows)
    m = json.loads((tmp_path / "few.metrics.json").read_text())
    assert 0 <= m["coverage_pct"] <= 100 and m["transfer_from"] == str(tmp_path / "src.pt")
    assert load_predictor(tmp_path / "few.pt").state["transferred_from"]["model"] == "cost"


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for s in needles:
        assert s in err, err
    return err


def test_transfer_refusals(tmp_path, capsys):
    ours = write_csv(tmp_path / "ours.csv", device(120, seed=40), "tiny-latency")
    hat_csv = write_csv(tmp_path / "hat.csv", device(30, seed=41), cfg=False)
    src = fit(read_latency_csv(ours), "cost-mlp", SPACE, CTX, ensemble=0)
    assert src.feature_set == "full"
    src.save(tmp_path / "full.pt")
    _one_line_error(capsys, ["fit-predictor", "--data", str(hat_csv), "--transfer-from", str(tmp_path / "full.pt"),
                             "--out", str(tmp_path / "x.pt")], "full.pt", "per-layer features", "hat.csv")
    fit(read_latency_csv(ours), "default", SPACE, CTX).save(tmp_path / "cost.pt")
    _one_line_error(capsys, ["fit-predictor", "--data", str(ours), "--transfer-from", str(tmp_path / "cost.pt"),
                             "--model", "hat-mlp", "--out", str(tmp_path / "x.pt")], "--transfer-from keeps")
    # configs of another space against a source with per-layer features of tiny-latency
    wmt = load_space("wmt14.en-de")
    cfgs = [wmt.sample(random.Random(i)) for i in range(30)]
    feats = np.array([list(hat_raw_features(c).values()) for c in cfgs])
    write_csv(tmp_path / "wmt.csv", LatencyData("wmt", feats, np.ones(30), np.full(30, 50.0), cfgs))
    _one_line_error(capsys, ["fit-predictor", "--data", str(tmp_path / "wmt.csv"), "--transfer-from",
                             str(tmp_path / "full.pt"), "--out", str(tmp_path / "x.pt")], "wmt.csv: row 1", "tiny-latency")


GOOD = ",".join(["512", "6", "1024", "4", "512", "2", "1024", "4", "4", "1"])


@pytest.mark.parametrize(
    "body,needle",
    [
        (f"{GOOD},1.5,nan,0.1,0.1\n", "row 2 (line 3): column latency_mean_decoder is NaN"),
        (f"{GOOD},-1.5,30,0.1,0.1\n", "row 2 (line 3): column latency_mean_encoder is -1.5"),
        (f"{GOOD},0,0,0.1,0.1\n", "row 2 (line 3): column latency_mean_encoder is 0"),
        (f"{GOOD},1.5,30,-0.1,0.1\n", "row 2 (line 3): column latency_std_encoder is -0.1"),
        (",".join(HAT_COLUMNS) + "\n", "row 2 (line 3): repeated header line"),
    ],
)
def test_bad_latency_rows_refused(tmp_path, capsys, body, needle):
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(HAT_COLUMNS) + f"\n{GOOD},1.5,30,0.1,0.1\n" + body + f"{GOOD},1.5,30,0.1,0.1\n")
    with pytest.raises(DataError, match="bad.csv"):
        read_latency_csv(bad)
    _one_line_error(capsys, ["fit-predictor", "--data", str(bad), "--out", str(tmp_path / "p.pt")], "bad.csv", needle)
    # the same file as a --test set is refused the same way
    good = write_csv(tmp_path / "good.csv", device(30, seed=5), cfg=False)
    _one_line_error(capsys, ["fit-predictor", "--data", str(good), "--test", str(bad), "--out", str(tmp_path / "p.pt")],
                    "bad.csv", needle)


def test_rows_of_another_space_refused(tmp_path, capsys):
    # HAT's averages of WMT configs (embed 512/640) fit with --space tiny-latency
    wmt = load_space("wmt14.en-de")
    cfgs = [wmt.sample(random.Random(i)) for i in range(20)]
    feats = np.array([list(hat_raw_features(c).values()) for c in cfgs])
    wmt_rows = LatencyData("wmt", feats, np.ones(20), np.full(20, 50.0), cfgs)
    hat_csv = write_csv(tmp_path / "hat.csv", wmt_rows, cfg=False)
    _one_line_error(capsys, ["fit-predictor", "--data", str(hat_csv), "--space", "tiny-latency", "--out",
                             str(tmp_path / "p.pt")], "hat.csv: row 1", "encoder_embed_dim", "another space")
    # our CSV whose meta.json says tiny-latency, with one appended row of another space
    d = device(30, seed=6)
    mixed = LatencyData("mixed", np.concatenate([d.hat_features, feats[:1]]), np.append(d.latency_encoder, 1.0),
                        np.append(d.latency_decoder, 50.0), d.configs + cfgs[:1])
    ours = write_csv(tmp_path / "ours.csv", mixed, "tiny-latency")
    _one_line_error(capsys, ["fit-predictor", "--data", str(ours), "--out", str(tmp_path / "p.pt")],
                    "ours.csv: row 31", "not in space tiny-latency")
    _one_line_error(capsys, ["fit-predictor", "--data", str(ours), "--level", "90", "--out", str(tmp_path / "p.pt")],
                    "--level 90")
