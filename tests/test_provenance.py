"""A predictor file records how its training latencies were timed (timer, lengths, beam, ...), and
the tools that measure (`hat search --verify`, `hat measure`, `hat info --device`) warn when they
time something else."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from hat.cli import main
from hat.latency.dataset import LatencyWriter, meta_path
from hat.latency.measure import Protocol
from hat.latency.predictors import load_predictor, predictor_for_device
from hat.latency.provenance import mismatch_warning
from hat.space import hat_raw_features, load_space, macs, num_params

TINY = load_space("tiny")
# the device the tests time on: tiny, so a real measurement takes milliseconds
DEVICE_PROTOCOL = {"src_len": 6, "tgt_len": 3, "beam": 1, "warmup": 1, "runs": 2, "threads": 1, "backend": "torch",
                   "vocab_size": 64}


def _csv(path: Path, protocol: dict | None, n: int = 40, seed: int = 0) -> Path:
    """`n` rows of a synthetic device (ms ~ MACs); the meta records `protocol` (None: no meta at all)."""
    rng = random.Random(seed)
    with LatencyWriter(path) as w:
        for _ in range(n):
            c = TINY.sample(rng)
            ms = macs(c, TINY) / 1e9 * 100 + 5.0 * (1 + 0.02 * rng.random())
            lat = {"latency_mean_encoder": ms / 3, "latency_mean_decoder": 2 * ms / 3, "latency_std_encoder": 0.1,
                   "latency_std_decoder": 0.1, "latency_std_ms": 0.2}
            w.write(c, hat_raw_features(c), lat, num_params(c, TINY), macs(c, TINY), 0)
    if protocol is not None:
        meta_path(path).write_text(json.dumps({"space": "tiny", "device": "dev", "protocol": protocol}))
    return path


def _protocol(**changes) -> dict:
    return Protocol(**{**DEVICE_PROTOCOL, **changes}).check().to_dict()


def _fit(tmp_path: Path, name: str, protocol: dict | None, *extra: str) -> Path:
    out = tmp_path / f"{name}.pt"
    assert main(["fit-predictor", "--data", str(_csv(tmp_path / f"{name}.csv", protocol)), "--space", "tiny",
                 "--out", str(out), *extra]) == 0
    return out


def _device(tmp_path: Path, predictor: Path) -> Path:
    dev = tmp_path / "dev.yaml"
    dev.write_text(yaml.safe_dump({"name": "dev", "predictor": str(predictor), "protocol": DEVICE_PROTOCOL}))
    return dev


def test_protocol_round_trips_fit_file_load(tmp_path, capsys):
    proto = _protocol(timer="cpu", src_len=12, tgt_len=7, beam=2)
    out = _fit(tmp_path, "p", proto)
    printed = capsys.readouterr().out
    assert "timed with: timer cpu (CPU time" in printed and "src_len 12 / tgt_len 7" in printed
    pred = load_predictor(out)
    assert pred.protocol == proto  # every field of the CSV's meta, as recorded
    assert json.loads(out.with_suffix(".metrics.json").read_text())["protocol"]["timer"] == "cpu"
    # an adapted predictor records the protocol of the rows it was adapted to, not the source's
    wall = _csv(tmp_path / "few.csv", _protocol(), n=30, seed=3)
    assert main(["fit-predictor", "--data", str(wall), "--transfer-from", str(out), "--out", str(tmp_path / "t.pt")]) == 0
    assert load_predictor(tmp_path / "t.pt").protocol["timer"] == "wall"
    assert main(["info", str(out)]) == 0
    assert "timed with  timer cpu" in capsys.readouterr().out


def test_csv_without_protocol_records_unknown(tmp_path, capsys):
    out = _fit(tmp_path, "hatlike", None)
    assert "timed with: unknown" in capsys.readouterr().out
    assert load_predictor(out).protocol == {}


def test_old_file_without_protocol_loads_as_unknown(tmp_path, capsys):
    new = _fit(tmp_path, "p", _protocol(timer="cpu"))
    d = torch.load(new, weights_only=True)
    del d["protocol"]  # as written before the protocol was recorded
    old = tmp_path / "old.pt"
    torch.save(d, old)
    a, b = load_predictor(new), load_predictor(old)
    assert b.protocol == {} and (a.predict([TINY.largest()]) == b.predict([TINY.largest()])).all()
    capsys.readouterr()
    assert main(["info", str(old)]) == 0
    assert "timed with  unknown" in capsys.readouterr().out
    d["protocol"] = "cpu"
    torch.save(d, tmp_path / "bad.pt")
    assert main(["info", str(tmp_path / "bad.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.pt" in err and "protocol is not a mapping" in err


def test_shipped_cpu2core_predictor_records_the_protocol_of_its_dataset(capsys):
    """HAT's protocol on the wall clock: the device's own protocol, so `--verify` compares like with like."""
    pred = predictor_for_device("cpu-2core", TINY)
    meta = json.loads(Path("latency_predictors/cpu-2core.tiny.meta.json").read_text())
    assert pred.protocol["timer"] == "wall" == meta["protocol"]["timer"]
    assert {k: pred.protocol[k] for k in ("runs", "warmup", "src_len")} == {"runs": 20, "warmup": 5, "src_len": 30}
    assert main(["info", "--device", "cpu-2core"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_mismatch_warning_names_both_sides():
    wall, cpu = _protocol(), _protocol(timer="cpu")
    line = mismatch_warning(cpu, wall, "/x/latency.pt", "--verify", "cpu-2core")
    assert line == ("warning: predictor latency.pt was fit on cpu-timed latencies; --verify times wall clock "
                    "(device cpu-2core): predicted and measured ms are not the same clock")
    assert mismatch_warning(wall, wall, "p.pt", "--verify", "d") is None
    assert mismatch_warning({}, wall, "p.pt", "--verify", "d") is None  # unknown: nothing to compare
    assert mismatch_warning({**wall, "runs": 99, "warmup": 0}, wall, "p.pt", "--verify", "d") is None  # noise only
    line = mismatch_warning(_protocol(src_len=30, beam=5), wall, "p.pt", "hat measure", "d")
    assert "src_len 30, beam 5" in line and "src_len 6, beam 1" in line and "not comparable" in line
    line = mismatch_warning(_protocol(quantize="int8"), wall, "p.pt", "hat measure", "d")
    assert "quantize int8" in line and "quantize None" in line


@pytest.mark.parametrize("timer", ["cpu", "wall"])
def test_verify_warns_when_the_predictor_was_timed_otherwise(tmp_path, capsys, timer):
    pred = _fit(tmp_path, "p", _protocol(timer=timer))
    out = tmp_path / "s.yml"
    assert main(["search", "--scorer", "params", "--space", "tiny", "--predictor", str(pred), "--device",
                 str(_device(tmp_path, pred)), "--latency-constraint", "1e6", "--population", "6", "--parents", "2",
                 "--mutations", "2", "--crossovers", "2", "--iterations", "1", "--no-progress", "--out", str(out),
                 "--verify", "1", "--verify-rounds", "1"]) == 0
    warnings = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("warning: predictor")]
    measured = yaml.safe_load(out.read_text())["metadata"]["latency"]["measured"]
    if timer == "cpu":
        assert warnings == ["warning: predictor p.pt was fit on cpu-timed latencies; --verify times wall clock "
                            "(device dev): predicted and measured ms are not the same clock"]
        assert measured["warning"] == warnings[0]
    else:
        assert warnings == [] and "warning" not in measured


@pytest.mark.parametrize("timer", ["cpu", "wall"])
def test_measure_and_info_warn_when_the_device_predictor_was_timed_otherwise(tmp_path, capsys, timer):
    dev = _device(tmp_path, _fit(tmp_path, "p", _protocol(timer="cpu")))
    capsys.readouterr()
    assert main(["measure", "--device", str(dev), "--space", "tiny", "--samples", "1", "--timer", timer,
                 "--reference-every", "0", "--no-progress", "--out", str(tmp_path / "m.csv")]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning: predictor")]
    assert err == ([] if timer == "cpu" else ["warning: predictor p.pt was fit on cpu-timed latencies; hat measure "
                                              "times wall clock (device dev): predicted and measured ms are not the "
                                              "same clock"])
    assert main(["info", "--device", str(dev)]) == 0
    out = capsys.readouterr().out
    assert "timed with  timer cpu" in out and "protocol    timer wall" in out
    assert "warning: predictor p.pt was fit on cpu-timed latencies; the device's protocol times wall clock" in out
