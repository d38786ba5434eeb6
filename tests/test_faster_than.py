"""A constraint relative to a model the user has (`hat search --faster-than REF.yml`), and --verify
that goes on to the next candidates when the best ones measure over the limit."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import yaml

import hat.latency.verify
from hat.cli import main
from hat.latency.predictors import predictor_for_device
from hat.latency.compare import Spread
from hat.latency.verify import Candidate, prediction_bias, verify
from hat.space import load_space, load_subconfig, save_subconfig

SPACE = load_space("tiny")
SEARCH = ["search", "--scorer", "params", "--space", "tiny", "--device", "cpu-2core",
          "--population", "20", "--parents", "5", "--mutations", "8", "--crossovers", "7", "--iterations", "3",
          "--no-progress"]


def _row(ms: float) -> dict:
    return {"latency_mean_encoder": ms / 2, "latency_mean_decoder": ms / 2}


def _mid_reference(tmp_path: Path) -> tuple[Path, float]:
    """A reference subnet with room below it (predicted well above the smallest subnet)."""
    pred = predictor_for_device("cpu-2core", SPACE)
    rng = random.Random(3)
    lo = float(pred.predict([SPACE.smallest()])[0])
    cfg = next(c for c in (SPACE.sample(rng) for _ in range(500)) if float(pred.predict([c])[0]) > 1.4 * lo)
    path = tmp_path / "ref.yml"
    save_subconfig(cfg, path)
    return path, float(pred.predict([cfg])[0])


def test_verify_against_a_reference_needs_the_margin_and_the_spread():
    a, b, ref = SPACE.largest(), SPACE.smallest(), SPACE.sample(random.Random(0))
    truth = {a: [48.0, 49.0, 55.0], b: [45.0, 46.0, 47.0], ref: [50.0, 51.0, 50.5]}
    calls = []

    def measure(cfg):
        calls.append(cfg)
        return _row(truth[cfg][sum(x == cfg for x in calls) - 1])

    cands = [Candidate(a, score=0, predicted_ms=40.0), Candidate(b, score=1, predicted_ms=40.0)]
    chosen = verify(cands, 1e9, measure, rounds=3, reference=ref, faster_by=0.05)
    assert calls == [a, b, ref] * 3  # the reference is timed in the same rounds
    # a: median 49 > 0.95 x 50.5 (and its 55 ms round overlaps the reference); b: 46 <= 47.975, beyond the spread
    assert chosen is cands[1] and cands[1].limit_ms == pytest.approx(0.95 * 50.5)
    assert not cands[0].meets() and cands[0].reference.median == 50.5
    # within the margin but not beyond the spread: refused
    truth2 = {b: [40.0, 40.0, 51.0], ref: [50.0, 50.0, 50.0]}
    calls.clear()
    c = Candidate(b, score=0, predicted_ms=40.0)
    assert verify([c], 1e9, lambda cfg: (calls.append(cfg), _row(truth2[cfg][sum(x == cfg for x in calls) - 1]))[1],
                  rounds=3, reference=ref, faster_by=0.05) is None
    assert c.measured.median == 40.0 and not c.meets()


def test_faster_than_sets_the_constraint_from_the_reference_prediction(tmp_path, capsys):
    ref, ref_ms = _mid_reference(tmp_path)
    out = tmp_path / "s.yml"
    assert main([*SEARCH, "--faster-than", str(ref), "--faster-by", "0.1", "--out", str(out)]) == 0
    meta = yaml.safe_load(out.read_text())["metadata"]["latency"]
    assert meta["constraint_ms"] == pytest.approx(0.9 * ref_ms, rel=1e-4)
    assert meta["bound_ms"] <= meta["constraint_ms"]
    assert f"constraint 0.9 x that = {meta['constraint_ms']:g} ms" in capsys.readouterr().out


def test_faster_than_with_verify_times_the_reference_and_records_it(tmp_path, monkeypatch):
    ref, _ = _mid_reference(tmp_path)
    ref_cfg = load_subconfig(ref)
    seen = []

    def fake_measure_function(spec, space):
        def measure(cfg):  # the reference 50 ms; the first candidate 49 ms (not 5 % faster), the rest 40
            seen.append(cfg)
            if cfg == ref_cfg:
                return _row(50.0)
            return _row(49.0 if cfg == seen[0] else 40.0)
        return measure, {"runs": 2}

    monkeypatch.setattr(hat.latency.verify, "measure_function", fake_measure_function)
    out = tmp_path / "v.yml"
    assert main([*SEARCH, "--faster-than", str(ref), "--out", str(out), "--verify", "2", "--verify-rounds", "2"]) == 0
    meta = yaml.safe_load(out.read_text())["metadata"]["latency"]
    m = meta["measured"]
    assert m["median_ms"] == 40.0 and m["candidate_rank"] == 2
    assert m["reference"]["median_ms"] == 50.0 and m["reference"]["ratio"] == 0.8
    assert "faster beyond the spread" in meta["guarantee"]
    rows = list(csv.DictReader(open(out.with_suffix(".verify.csv"))))
    assert [r["meets_constraint"] for r in rows] == ["0", "1"]
    assert float(rows[0]["limit_ms"]) == pytest.approx(47.5) and float(rows[0]["reference_median_ms"]) == 50.0


def test_verify_goes_on_to_the_next_batch(tmp_path, monkeypatch):
    first: list = []

    def fake_measure_function(spec, space):
        def measure(cfg):  # the first batch of two is over the constraint on the device, the next is within
            if len(first) < 2 and cfg not in first:
                first.append(cfg)
            return _row(80.0 if cfg in first else 40.0)
        return measure, {"runs": 2}

    monkeypatch.setattr(hat.latency.verify, "measure_function", fake_measure_function)
    out = tmp_path / "b.yml"
    assert main([*SEARCH, "--latency-constraint", "60", "--out", str(out), "--verify", "2", "--verify-rounds", "1"]) == 0
    rows = list(csv.DictReader(open(out.with_suffix(".verify.csv"))))
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]  # two batches of two, best score first
    assert [r["chosen"] for r in rows] == ["0", "0", "1", "0"]
    meta = yaml.safe_load(out.read_text())["metadata"]["latency"]
    assert meta["measured"]["median_ms"] == 40.0 and meta["measured"]["candidate_rank"] == 3
    assert meta["measured"]["candidates_measured"] == 4
    assert load_subconfig(out).to_dict() == json.loads(rows[2]["config_json"])
    # one batch only: the same search fails with one line naming the batches
    out2 = tmp_path / "c.yml"
    first.clear()
    rc = main([*SEARCH, "--latency-constraint", "60", "--out", str(out2), "--verify", "2", "--verify-rounds", "1",
               "--verify-batches", "1"])
    assert rc == 2


def test_verify_says_when_the_machine_runs_far_slower_than_the_predictor(tmp_path, monkeypatch, capsys):
    def fake_measure_function(spec, space):
        return (lambda cfg: _row(500.0)), {"runs": 2}  # a loaded machine: every subnet ~10x its prediction

    monkeypatch.setattr(hat.latency.verify, "measure_function", fake_measure_function)
    rc = main([*SEARCH, "--latency-constraint", "60", "--out", str(tmp_path / "s.yml"), "--verify", "2",
               "--verify-rounds", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "none of the 6 best candidates measured within 60 ms" in err[0]
    assert "x their predictions, so this machine differs from the predictor's rows" in err[0]


def test_prediction_bias_is_the_worst_measured_over_predicted_ratio():
    a = Candidate(SPACE.smallest(), 1.0, 40.0, measured=Spread.of([42.0, 44.0, 43.0]))
    b = Candidate(SPACE.largest(), 2.0, 80.0, measured=Spread.of([80.0]))
    assert prediction_bias([a, b]) == pytest.approx(43.0 / 40.0)
    assert prediction_bias([Candidate(SPACE.smallest(), 1.0, 40.0)]) == 1.0  # nothing timed: no correction
    # against a reference: measured share (43 / 50) over predicted share (40 / 48)
    a.reference = Spread.of([50.0])
    assert prediction_bias([a], reference_ms=48.0) == pytest.approx((43.0 / 50.0) / (40.0 / 48.0))


def test_verify_corrects_for_the_bias_the_first_batch_measured(tmp_path, monkeypatch):
    """A device where every candidate runs 8 % slower, relative to the reference, than predicted:
    the best-scoring candidates sit at the limit and all miss; the next batch is drawn from those the
    8 % still keeps within it, and one of them passes."""
    ref, ref_pred = _mid_reference(tmp_path)
    ref_cfg = load_subconfig(ref)
    pred = predictor_for_device("cpu-2core", SPACE)

    def fake_measure_function(spec, space):
        def measure(cfg):
            ms = float(pred.predict([cfg])[0])
            return _row(ms if cfg == ref_cfg else 1.08 * ms)
        return measure, {"runs": 2}

    monkeypatch.setattr(hat.latency.verify, "measure_function", fake_measure_function)
    out = tmp_path / "r.yml"
    assert main([*SEARCH, "--faster-than", str(ref), "--constraint-quantile", "0.5", "--out", str(out),
                 "--verify", "2", "--verify-rounds", "1", "--verify-batches", "2"]) == 0
    rows = list(csv.DictReader(open(out.with_suffix(".verify.csv"))))
    assert [r["meets_constraint"] for r in rows[:2]] == ["0", "0"]  # the first batch: at the limit, 8 % over
    limit = 0.95 * ref_pred
    assert all(float(r["predicted_ms"]) * 1.08 <= limit + 1e-6 for r in rows[2:])  # the second: corrected
    meta = yaml.safe_load(out.read_text())["metadata"]["latency"]
    assert meta["measured"]["candidate_rank"] == 3 and meta["measured"]["prediction_bias"] == pytest.approx(1.08)
    assert meta["measured"]["reference"]["ratio"] <= 0.95


@pytest.mark.parametrize("extra, needle", [
    (["--latency-constraint", "60", "--faster-than", "REF"], "not both"),
    (["--faster-than", "REF", "--faster-by", "1.5"], "--faster-by 1.5: must be a fraction"),
    (["--faster-than", "BAD"], "is not in space tiny"),
    (["--faster-than", "MISSING"], "missing.yml"),
    (["--latency-constraint", "60", "--verify", "1", "--verify-batches", "0"], "--verify-batches 0"),
])
def test_bad_relative_constraints_refused(tmp_path, capsys, extra, needle):
    ref, _ = _mid_reference(tmp_path)
    bad = tmp_path / "bad.yml"
    d = load_subconfig(ref).to_dict()
    d["encoder_embed_dim"] = 999
    bad.write_text(yaml.safe_dump(d))
    paths = {"REF": str(ref), "BAD": str(bad), "MISSING": str(tmp_path / "missing.yml")}
    rc = main([*SEARCH, "--out", str(tmp_path / "s.yml"), *[paths.get(x, x) for x in extra]])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_subconfig_metadata_round_trips_and_bad_metadata_is_refused(tmp_path):
    from hat.errors import ConfigError
    from hat.space import load_subconfig_metadata

    cfg = SPACE.smallest()
    with_meta, plain, bad = tmp_path / "m.yml", tmp_path / "p.yml", tmp_path / "b.yml"
    save_subconfig(cfg, with_meta, metadata={"latency": {"constraint_ms": 36.1}})
    save_subconfig(cfg, plain)
    assert load_subconfig_metadata(with_meta) == {"latency": {"constraint_ms": 36.1}}
    assert load_subconfig_metadata(plain) == {} and load_subconfig(with_meta) == cfg
    bad.write_text(yaml.safe_dump({"subconfig": cfg.to_dict(), "metadata": [1, 2]}))
    with pytest.raises(ConfigError, match="b.yml: metadata must be a mapping"):
        load_subconfig_metadata(bad)
