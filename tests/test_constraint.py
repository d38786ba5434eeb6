"""The constraint a search keeps: a quantile of the predictor's interval (`--constraint-quantile`)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from hat.cli import main
from hat.latency.estimate import ConstraintBound, Latency
from hat.latency.predictors import load_predictor, predictor_for_device
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
