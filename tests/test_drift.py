"""Measurement drift: `hat measure` re-times a reference config, `fit-predictor --drift-correct` divides it out."""
from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest

from hat.cli import main
from hat.latency.dataset import LatencyWriter, correct_drift, meta_path, read_latency_csv
from hat.space import hat_raw_features, load_space, macs, num_params

TINY = load_space("tiny")
FAST = ["--runs", "3", "--warmup", "0", "--src-len", "4", "--tgt-len", "2", "--vocab-size", "64", "--no-progress"]


def _true_ms(cfg) -> float:
    return macs(cfg, TINY) / 1e9 * 100 + 5.0


def _drifting_csv(path, n: int = 240, reference: bool = True, seed: int = 0) -> None:
    """Rows whose latency is a fixed function of the config times a machine factor that drifts
    -17..+11 % in blocks of 20 rows (the shipped dataset's range); the reference sees the same factor."""
    rng = random.Random(seed)
    ref_true = _true_ms(TINY.smallest())
    with LatencyWriter(path) as w:
        for i in range(n):
            factor = 1 + [-0.17, 0.0, 0.11, -0.08, 0.05, 0.09][(i // 20) % 6]
            c = TINY.sample(rng)
            ms = _true_ms(c) * factor
            lat = {"latency_mean_encoder": ms / 3, "latency_mean_decoder": 2 * ms / 3, "latency_std_encoder": 0.1,
                   "latency_std_decoder": 0.1, "latency_std_ms": 0.2}
            w.write(c, hat_raw_features(c), lat, num_params(c, TINY), macs(c, TINY), 0,
                    ref_true * factor if reference else None)
    meta_path(path).write_text(json.dumps({"space": "tiny", "device": "cpu-2core"}))


def test_correct_drift_recovers_the_drift_free_latency(tmp_path):
    _drifting_csv(tmp_path / "lat.csv")
    data = read_latency_csv(tmp_path / "lat.csv")
    truth = np.array([_true_ms(c) for c in data.configs])
    raw = data.latency_ms / truth
    fixed = correct_drift(data).latency_ms / truth
    assert raw.std() / raw.mean() > 0.08  # the drift is there ...
    assert fixed.std() / fixed.mean() < 1e-3  # ... and gone: one common factor is left
    assert fixed.mean() == pytest.approx(1.025, abs=1e-3)  # the median speed (factors 1.00 and 1.05 straddle it)


def test_fit_predictor_drift_correct_beats_drift(tmp_path, capsys):
    _drifting_csv(tmp_path / "lat.csv")
    mape = {}
    for name, extra in (("raw", []), ("fixed", ["--drift-correct"])):
        assert main(["fit-predictor", "--data", str(tmp_path / "lat.csv"), "--out", str(tmp_path / f"{name}.pt"),
                     "--space", "tiny", *extra]) == 0
        m = json.loads((tmp_path / f"{name}.metrics.json").read_text())
        mape[name] = m["mape_pct"]
        assert m["drift_corrected"] is bool(extra)
    assert mape["fixed"] < 1.0 < 5.0 < mape["raw"]


def test_drift_correct_needs_references(tmp_path, capsys):
    _drifting_csv(tmp_path / "lat.csv", n=20, reference=False)
    rc = main(["fit-predictor", "--data", str(tmp_path / "lat.csv"), "--out", str(tmp_path / "p.pt"), "--drift-correct"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "no drift reference" in err and "lat.csv" in err


def test_measure_retimes_the_reference_every_k_rows(tmp_path):
    out = tmp_path / "lat.csv"
    assert main(["measure", "--device", "cpu-2core", "--space", "tiny", "--samples", "5", "--reference-every", "2",
                 "--out", str(out), *FAST]) == 0
    rows = list(csv.DictReader(open(out)))
    refs = [float(r["reference_ms"]) for r in rows]
    assert len(rows) == 5 and all(v > 0 for v in refs)
    assert refs[0] == refs[1] and refs[2] == refs[3] and len({refs[0], refs[2], refs[4]}) == 3  # re-timed at 0, 2, 4
    assert all(float(r["latency_std_ms"]) >= 0 for r in rows) and any(float(r["latency_std_ms"]) > 0 for r in rows)
    meta = json.loads(meta_path(out).read_text())
    assert meta["reference"] == {"config": TINY.smallest().to_dict(), "every_rows": 2}
    data = read_latency_csv(out)
    assert np.allclose(correct_drift(data).latency_ms * np.array(refs) / np.median(refs), data.latency_ms)


def test_measure_without_references_and_old_files(tmp_path, capsys):
    out = tmp_path / "lat.csv"
    assert main(["measure", "--device", "cpu-2core", "--space", "tiny", "--samples", "2", "--reference-every", "0",
                 "--out", str(out), *FAST]) == 0
    assert [r["reference_ms"] for r in csv.DictReader(open(out))] == ["", ""]
    assert np.isnan(read_latency_csv(out).reference_ms).all()
    old = tmp_path / "old.csv"
    old.write_text(",".join(list(csv.reader(open(out)))[0][:-2]) + "\n")
    rc = main(["measure", "--device", "cpu-2core", "--space", "tiny", "--samples", "1", "--out", str(old), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "older `hat measure`" in err
