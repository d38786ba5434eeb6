"""Latency measurement, CSV io, predictors and the device registry (fast: tiny configs, few runs)."""
from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import torch

from hat.cli import main
from hat.errors import CheckpointError, ConfigError, DataError
from hat.latency import read_latency_csv, resolve_device
from hat.latency.dataset import HAT_COLUMNS, LatencyData, LatencyWriter
from hat.latency.predictors import Context, fit, load_predictor, metrics
from hat.space import hat_raw_features, load_space, macs

torch.set_num_threads(1)
FAST = ["--runs", "2", "--warmup", "1", "--src-len", "5", "--tgt-len", "3", "--vocab-size", "64", "--no-progress",
        "--threads", "1"]


def _measure(out, n):
    return main(["measure", "--device", "cpu-2core", "--space", "tiny", "--samples", str(n), "--out", str(out), *FAST])


def test_measure_roundtrip_and_resume(tmp_path):
    out = tmp_path / "lat.csv"
    assert _measure(out, 3) == 0
    with open(out, newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header[:14]) == HAT_COLUMNS and {"config", "params", "macs", "peak_memory_bytes"} <= set(header)
    d = read_latency_csv(out)
    assert len(d) == 3 and d.configs is not None and (d.latency_ms > 0).all()
    meta = json.loads((tmp_path / "lat.meta.json").read_text())
    assert meta["protocol"]["src_len"] == 5 and meta["environment"]["threads"] == 1 and "torch_version" in meta["environment"]
    first = out.read_text().splitlines()
    # a kill mid-row leaves a partial line: the reader refuses it, a resumed run repairs it
    with open(out, "a") as f:
        f.write("192,2,512")
    with pytest.raises(DataError, match="truncated"):
        read_latency_csv(out)
    assert _measure(out, 5) == 0
    lines = out.read_text().splitlines()
    assert lines[:4] == first and len(lines) == 6  # the first 3 rows kept, 2 new ones appended
    keys = [c.key() for c in read_latency_csv(out).configs]
    assert len(set(keys)) == 5
    # another protocol into the same file is refused
    assert main(["measure", "--device", "cpu-2core", "--space", "tiny", "--samples", "6", "--out", str(out),
                 *FAST[:-2], "--threads", "1", "--runs", "3"]) == 2


def _synthetic(n, seed=0, noise=0.02, space_name="tiny-latency"):
    """Latency = a known linear function of MACs and depth, plus 2% noise."""
    space = load_space(space_name)
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    cfgs = [space.sample(rng) for _ in range(n)]
    m = np.array([macs(c, space, 30, 30, 8000, 5) for c in cfgs], float)
    dec = np.array([c.decoder_layer_num for c in cfgs], float)
    y = (2.0 + m / 2e7 + 8.0 * dec) * (1 + noise * nrng.standard_normal(n))
    feats = np.array([list(hat_raw_features(c).values()) for c in cfgs])
    return LatencyData("synthetic", feats, 0.05 * y, 0.95 * y, cfgs), space


def test_default_beats_on_synthetic_and_roundtrip(tmp_path):
    data, space = _synthetic(260)
    train, test = data.subset(range(200)), data.subset(range(200, 260))
    ctx = Context(vocab_size=8000, qkv_dim=space.qkv_dim)
    p = fit(train, "default", space, ctx, 100.0, "cpu-2core", seed=0)
    m = metrics(test.latency_ms, p.predict(test.configs))
    assert m["mape_pct"] < 5 and m["kendall_tau"] > 0.8
    p.save(tmp_path / "p.pt")
    q = load_predictor(tmp_path / "p.pt", load_space("tiny"))  # fit on tiny-latency, used on tiny: allowed
    assert np.allclose(q.predict(test.configs), p.predict(test.configs))
    assert isinstance(q.predict_one(test.configs[0]), float)
    with pytest.raises(ConfigError, match="super dims"):
        load_predictor(tmp_path / "p.pt", load_space("wmt14.en-de"))
    # HAT's MLP, trained long enough to be a real competitor (its recipe is 5000 steps): it must
    # have learned the data (far better than predicting the mean) and still lose on every metric
    h = fit(train, "hat-mlp", space, ctx, 100.0, seed=0, steps=1000)
    assert h.feature_set == "hat10"
    mh = metrics(test.latency_ms, h.predict(test.configs))
    mean = metrics(test.latency_ms, np.full(len(test), train.latency_ms.mean()))
    assert mh["mape_pct"] < mean["mape_pct"] / 2 and mh["kendall_tau"] > 0.75, mh
    assert m["mape_pct"] < mh["mape_pct"] and m["rmse_ms"] < mh["rmse_ms"] and m["kendall_tau"] > mh["kendall_tau"]
    a = fit(train, "analytic", space, ctx, calib_rows=8)
    assert metrics(test.latency_ms, a.predict(test.configs))["mape_pct"] < 30


def _write_hat_csv(path, data):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HAT_COLUMNS)
        for i in range(len(data)):
            w.writerow([*data.hat_features[i], data.latency_encoder[i], data.latency_decoder[i], 0.1, 0.2])


def test_hat_csv_import_and_cli_outputs(tmp_path):
    data, _ = _synthetic(120, seed=1)
    _write_hat_csv(tmp_path / "train.csv", data.subset(range(100)))
    _write_hat_csv(tmp_path / "test.csv", data.subset(range(100, 120)))
    d = read_latency_csv(tmp_path / "train.csv")
    assert d.configs is None and len(d) == 100
    out = tmp_path / "p.pt"
    rc = main(["fit-predictor", "--data", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv"),
               "--out", str(out), "--predictions-out", str(tmp_path / "pred.csv"), "--space", "tiny-latency"])
    assert rc == 0
    m = json.loads((tmp_path / "p.metrics.json").read_text())
    assert {"rmse_ms", "mape_pct", "kendall_tau"} <= set(m) and m["feature_set"] == "hat10"
    assert (tmp_path / "p.scatter.png").stat().st_size > 0
    with open(tmp_path / "pred.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["measured_ms"]) for r in rows] == pytest.approx(list(data.subset(range(100, 120)).latency_ms), rel=1e-4)
    assert load_predictor(out).predict_one(data.configs[0]) > 0


@pytest.mark.parametrize(
    "text,match",
    [
        ("", "empty"),
        ("a,b,c\n1,2,3\n", "missing column"),
        (",".join(HAT_COLUMNS) + "\n" + ",".join(["1"] * 14) + "\n" + ",".join(["1"] * 9) + "\n", "truncated"),
        (",".join(HAT_COLUMNS) + "\n" + ",".join(["x"] * 14) + "\n", "not a number"),
        (",".join(HAT_COLUMNS) + "\n", "no data rows"),
    ],
)
def test_bad_csv_refused(tmp_path, capsys, text, match):
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    with pytest.raises(DataError, match=match):
        read_latency_csv(bad)
    assert main(["fit-predictor", "--data", str(bad), "--out", str(tmp_path / "p.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.csv" in err


def test_predictor_file_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_predictor(junk)


def test_device_resolver(tmp_path):
    dev = resolve_device("cpu-2core")
    assert dev.protocol["threads"] == 1 and dev.lat_norm > 0
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("no-such-device")
    with pytest.raises(ConfigError, match="measure_latency.py --device raspberrypi"):
        resolve_device("raspberrypi").predictor_path()
    y = tmp_path / "mine.yaml"
    y.write_text("name: mine\nprotocol: {lat_norm: 50}\npredictor: nowhere.pt\n")
    d = resolve_device(str(y))
    assert d.name == "mine" and d.lat_norm == 50
    with pytest.raises(ConfigError, match="not found"):
        d.predictor_path()
    y.write_text("- a list\n")
    with pytest.raises(ConfigError, match="not a device file"):
        resolve_device(str(y))


def test_onnxruntime_backend_times_the_cached_decoder(tmp_path):
    """The ORT backend runs the exported encoder + decoder-step graphs (KV cache), HAT's protocol."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from hat.latency.measure import Measurer, Protocol

    space = load_space("tiny")
    proto = Protocol(src_len=5, tgt_len=3, beam=2, warmup=1, runs=2, vocab_size=64, threads=1, backend="onnxruntime")
    row = Measurer(space, proto).measure(space.smallest())
    assert row["latency_mean_encoder"] > 0 and row["latency_mean_decoder"] > 0
