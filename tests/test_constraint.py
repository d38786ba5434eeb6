"""The constraint a search keeps: a quantile of the predictor's interval (`--constraint-quantile`), and
the measured latency on this machine (`--verify`)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import hat.latency.verify
from hat.cli import main
from hat.latency.estimate import ConstraintBound, Latency
from hat.latency.predictors import predictor_for_device
from hat.errors import HatError
from hat.latency.devices import DeviceSpec
from hat.latency.verify import Candidate, verify, verify_search
from hat.space import load_space, load_subconfig

SPACE = load_space("tiny")
SEARCH = ["search", "--scorer", "params", "--space", "tiny", "--device", "cpu-2core", "--latency-constraint", "60",
          "--population", "20", "--parents", "5", "--mutations", "8", "--crossovers", "7", "--iterations", "3",
          "--no-progress"]


def _search(tmp_path: Path, name: str, *extra: str) -> tuple[dict, list[dict], list[dict], str]:
    out = tmp_path / f"{name}.yml"
    assert main([*SEARCH, "--out", str(out), *extra]) == 0
    meta = yaml.safe_load(out.read_text())["metadata"]["latency"]
    front = list(csv.DictReader(open(out.with_suffix(".pareto.csv"))))
    log = list(csv.DictReader(open(out.with_suffix(".log.csv"))))
    return meta, front, log, str(out)


def test_quantile_factor_is_the_interval_bound():
    pred = predictor_for_device("cpu-2core", SPACE)
    lo, hi = pred.bounds(0.9)
    assert pred.quantile_factor(0.95) == pytest.approx(hi)
    assert pred.quantile_factor(0.5) < hi and pred.quantile_factor(0.99) >= hi
    cfgs = [SPACE.smallest(), SPACE.largest()]
    bound = ConstraintBound(pred)
    p, lower, upper = pred.predict_interval(cfgs, 0.9)
    assert np.allclose(bound.predict(cfgs), upper)
    lat = Latency(bound)
    assert lat.interval(cfgs[1]) == pytest.approx((p[1], lower[1], upper[1]))


def test_default_holds_the_upper_bound_to_the_constraint(tmp_path, capsys):
    meta, front, log, out = _search(tmp_path, "upper")
    assert front and all(float(r["upper_ms"]) <= 60 for r in front)
    assert all(float(r["latency_ms"]) == pytest.approx(float(r["upper_ms"])) for r in front)
    assert all(float(r["lower_ms"]) < float(r["predicted_ms"]) < float(r["upper_ms"]) for r in front)
    assert meta["upper_ms"] <= 60 and meta["lower_ms"] < meta["predicted_ms"] < meta["upper_ms"]
    assert "upper bound of the 90% interval" in meta["guarantee"]
    assert all(float(r["best_upper_ms"]) <= 60 and r["best_lower_ms"] for r in log)
    load_subconfig(out)  # the YAML with metadata still loads as a subnet
    assert "90% interval" in capsys.readouterr().out


def test_median_quantile_admits_configs_whose_upper_bound_is_over(tmp_path):
    meta_u, front_u, _, _ = _search(tmp_path, "upper", "--latency-constraint", "57")
    meta_m, front_m, _, _ = _search(tmp_path, "median", "--latency-constraint", "57", "--constraint-quantile", "0.5")
    assert all(float(r["upper_ms"]) <= 57 for r in front_u)
    assert all(float(r["latency_ms"]) <= 57 for r in front_m)
    assert any(float(r["upper_ms"]) > 57 for r in front_m)  # only the median meets it
    assert meta_m["predicted_ms"] > meta_u["predicted_ms"]  # a looser constraint: a bigger subnet
    assert "0.5 quantile" in meta_m["guarantee"]


@pytest.mark.parametrize("extra, needle", [
    (["--constraint-quantile", "1.5"], "--constraint-quantile 1.5: must be between 0 and 1"),
    (["--predictor", "macs", "--constraint-quantile", "0.9"], "has no calibrated interval"),
])
def test_bad_quantile_refused(tmp_path, capsys, extra, needle):
    rc = main([*SEARCH, "--out", str(tmp_path / "s.yml"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_resume_with_another_quantile_is_refused(tmp_path, capsys):
    _search(tmp_path, "s")
    rc = main([*SEARCH, "--out", str(tmp_path / "s.yml"), "--constraint-quantile", "0.5"])
    err = capsys.readouterr().err
    assert rc == 2 and "constraint_quantile" in err


# ---------------------------------------------------------------------------- --verify
def _row(ms: float) -> dict:
    return {"latency_mean_encoder": ms / 2, "latency_mean_decoder": ms / 2}


def test_verify_measures_interleaved_and_returns_the_best_that_meets():
    a, b, c = SPACE.largest(), SPACE.smallest(), SPACE.sample(__import__("random").Random(0))
    truth = {a: [70.0, 72.0, 71.0], b: [50.0, 65.0, 52.0], c: [40.0, 41.0, 42.0]}
    calls = []

    def measure(cfg):
        calls.append(cfg)
        return _row(truth[cfg][sum(x == cfg for x in calls) - 1])

    cands = [Candidate(cfg, score=i, predicted_ms=45.0) for i, cfg in enumerate((a, b, c))]
    chosen = verify(cands, 60.0, measure, rounds=3)
    assert calls == [a, b, c] * 3  # interleaved rounds, the same order each round
    assert chosen is cands[1] and chosen.measured.median == 52.0 and chosen.measured.high == 65.0
    assert not cands[0].meets(60.0) and cands[2].meets(60.0)
    assert verify(cands[:1], 60.0, lambda cfg: _row(80.0), rounds=2) is None


class _Fixed:
    """A predictor of fixed ms per config (no interval)."""

    def __init__(self, ms: dict) -> None:
        self.ms = ms

    def predict(self, cfgs):
        return np.array([self.ms[c] for c in cfgs])


def test_verify_search_takes_batches_best_score_first_and_refuses_when_none_meets(tmp_path, monkeypatch):
    from hat.search.evolution import Evaluated, SearchResult

    cfgs = [SPACE.largest(), SPACE.smallest(), *(SPACE.sample(__import__("random").Random(i)) for i in range(3))]
    cfgs = list(dict.fromkeys(cfgs))[:4]
    assert len(cfgs) == 4
    ms = dict(zip(cfgs, (50.0, 40.0, 30.0, 99.0)))  # the last is predicted over the constraint: never timed
    evaluated = [Evaluated(c, ms[c], float(s)) for s, c in zip((3, 1, 2, 0), cfgs)]
    result = SearchResult("evolution", cfgs[3], 0.0, 99.0, evaluated, [], [], 4, 1.0, 60.0)
    measured = {cfgs[0]: 55.0, cfgs[1]: 70.0, cfgs[2]: 65.0}  # by score: cfgs[1], cfgs[2] over; then cfgs[0] within
    monkeypatch.setattr(hat.latency.verify, "measure_function", lambda spec, space: (
        lambda cfg: _row(measured[cfg]), {"runs": 1}))
    lines: list[str] = []
    kw = dict(device="here", held="the point estimate", count=2, rounds=1, csv_path=tmp_path / "v.csv",
              log=lines.append)
    latency = Latency(_Fixed(ms), "fixed")
    best, meta = verify_search(result, latency, SPACE, DeviceSpec("here"), batches=2, **kw)
    assert best.best == cfgs[0] and best.best_score == 3.0 and best.best_latency == 50.0
    assert meta["measured"]["candidate_rank"] == 3 and meta["measured"]["candidates_measured"] == 3
    assert meta["guarantee"].startswith("measured on this machine: median 55 ms") and meta["device"] == "here"
    assert [r["chosen"] for r in csv.DictReader(open(tmp_path / "v.csv"))] == ["0", "0", "1"]
    assert sum(ln.startswith("--verify: timing") for ln in lines) == 2
    with pytest.raises(HatError, match="none of the 2 best candidates measured within 60 ms"):
        verify_search(result, latency, SPACE, DeviceSpec("here"), batches=1, **kw)
    remote, meta = verify_search(result, latency, SPACE, DeviceSpec("pi", hardware="No Such Board"), batches=1, **kw)
    assert remote is result and "No Such Board" in meta["verify"] and meta["guarantee"].startswith("predicted:")


def _device(tmp_path: Path, hardware: str | None) -> Path:
    pred = predictor_for_device("cpu-2core", SPACE).source
    dev = tmp_path / "dev.yaml"
    dev.write_text(yaml.safe_dump({"name": "dev", "predictor": str(pred), **({"hardware": hardware} if hardware else {}),
                                   "protocol": {"src_len": 6, "tgt_len": 3, "beam": 1, "warmup": 1, "runs": 2,
                                                "threads": 1, "backend": "torch", "vocab_size": 64}}))
    return dev


def test_cli_verify_returns_the_best_candidate_that_measures_within(tmp_path, monkeypatch, capsys):
    seen = []

    def fake_measure_function(spec, space):
        def measure(cfg):  # the best-scored candidate (timed first) is over the constraint on the device
            seen.append(cfg)
            return _row(80.0 if cfg == seen[0] else 40.0)
        return measure, {"runs": 2}

    monkeypatch.setattr(hat.latency.verify, "measure_function", fake_measure_function)
    out = tmp_path / "v.yml"
    assert main([*SEARCH, "--out", str(out), "--verify", "3", "--verify-rounds", "2"]) == 0
    meta = yaml.safe_load(out.read_text())["metadata"]["latency"]
    rows = list(csv.DictReader(open(out.with_suffix(".verify.csv"))))
    assert len(rows) == 3 and len(seen) == 6
    assert [r["meets_constraint"] for r in rows] == ["0", "1", "1"] and [r["chosen"] for r in rows] == ["0", "1", "0"]
    assert float(rows[0]["score"]) <= float(rows[1]["score"])  # best score first
    assert load_subconfig(out).to_dict() == json.loads(rows[1]["config_json"])
    assert meta["measured"]["median_ms"] == 40.0 and meta["measured"]["candidate_rank"] == 2
    assert meta["guarantee"].startswith("measured on this machine")
    assert "measured on this machine" in capsys.readouterr().out


def test_cli_verify_times_a_real_device_here(tmp_path, capsys):
    out = tmp_path / "v.yml"
    assert main([*SEARCH, "--device", str(_device(tmp_path, None)), "--latency-constraint", "1e6", "--out", str(out),
                 "--verify", "1", "--verify-rounds", "2"]) == 0
    m = yaml.safe_load(out.read_text())["metadata"]["latency"]["measured"]
    assert 0 < m["low_ms"] <= m["median_ms"] <= m["high_ms"] < 1e6 and len(m["rounds_ms"]) == 2
    assert m["protocol"]["runs"] == 2  # the device's protocol


def test_cli_verify_on_a_remote_device_keeps_the_interval_guarantee(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hat.latency.verify, "measure_function", None)  # calling it would fail the test
    out = tmp_path / "r.yml"
    assert main([*SEARCH, "--device", str(_device(tmp_path, "No Such CPU 9000")), "--out", str(out),
                 "--verify", "3"]) == 0
    meta = yaml.safe_load(out.read_text())["metadata"]["latency"]
    assert "measured" not in meta and "No Such CPU 9000" in meta["verify"]
    assert meta["guarantee"].startswith("predicted: the upper bound of the 90% interval")
    assert "cannot be timed on this machine" in capsys.readouterr().out
    assert not out.with_suffix(".verify.csv").exists()


def test_cli_verify_needs_a_device(tmp_path, capsys):
    rc = main(["search", "--scorer", "params", "--space", "tiny", "--predictor", "macs", "--latency-constraint", "9",
               "--out", str(tmp_path / "s.yml"), "--verify", "2", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--verify 2: needs the target device" in err and len(err.splitlines()) == 1
