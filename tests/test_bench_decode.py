"""benchmarks/bench_decode.py: interleaved rounds summarised as median and spread, BLEU and
agreement with hat's hypotheses, and one real (tiny) run end to end."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_export import shared_setup

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_decode", ROOT / "benchmarks" / "bench_decode.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(seconds: float, hyps: list[str], rss: float = 100.0) -> dict:
    return {"seconds": seconds, "cpu_seconds": seconds / 2, "tokens": 20, "hyps": hyps, "rss_mb": rss}


def test_summary_is_median_and_spread_of_the_rounds(bench, tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"x" * 2**20)
    refs = ["the red house .", "a dog ."]
    good, bad = ["the red house .", "a dog ."], ["the red house .", "cat"]
    runs = {("hat", 1): [_run(2.0, good), _run(1.0, good), _run(4.0, good, 150)],
            ("hat", 8): [_run(0.5, good), _run(0.25, good), _run(1.0, good)],
            ("ct2", 1): [_run(1.0, bad), _run(1.0, good)], ("ct2", 8): [_run(0.1, bad), _run(0.1, bad)]}
    rows = bench.summarize(runs, ["hat", "ct2"], {"hat": model, "ct2": model}, refs, 8, n=2)
    hat = rows["hat"]
    assert hat["b1"]["ms_per_sentence"] == {"median": 1000.0, "min": 500.0, "max": 2000.0}
    assert hat["b1"]["tokens_per_s"] == {"median": 10.0, "min": 5.0, "max": 20.0}
    assert hat["b1"]["cpu_ms_per_sentence"] == {"median": 500.0, "min": 250.0, "max": 1000.0}
    assert hat["b8"]["tokens_per_s"]["median"] == 40.0 and hat["b1"]["rss_mb"] == 150
    assert hat["bleu"] == 100.0 and hat["same_as_hat_b1"] == 1.0 and hat["same_hyps_every_round"]
    assert rows["ct2"]["same_as_hat_b1"] == 0.5 and not rows["ct2"]["same_hyps_every_round"]  # first round's hyps
    assert rows["ct2"]["bleu"] < 100 and hat["size_mb"] == 1.0
    res = {"n": 2, "beam": 4, "lenpen": 0.6, "threads": 1, "repeats": 3, "batch": 8, "engines": rows,
           "skipped": {"fairseq": "fairseq is not installed"}}
    text = bench.table(res)
    assert "| hat | 500.0 (250.0-1000.0) | 20 (10-40) | 80 (40-160) | 1000.0 (500.0-2000.0) | 40 (20-80) |" in text
    assert "| fairseq | skipped: fairseq is not installed |" in text and "3 interleaved round(s)" in text


def test_a_tiny_run_end_to_end(bench, tmp_path_factory, tmp_path):
    s = shared_setup(tmp_path_factory)
    out = tmp_path / "res.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_decode.py"), "--model", str(s["model"]),
                        "--data", str(s["data"]), "--n", "4", "--batch", "2", "--repeats", "2", "--engines", "hat",
                        "--work", str(tmp_path / "work"), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    row = res["engines"]["hat"]
    assert res["n"] == 4 and res["repeats"] == 2 and row["b1"]["rounds"] == row["b2"]["rounds"] == 2
    assert row["same_as_hat_b1"] == 1.0 and row["same_hyps_every_round"] and row["b1"]["tokens"] > 4
    assert 0 < row["b1"]["cpu_ms_per_sentence"]["median"] < 10 * row["b1"]["ms_per_sentence"]["median"]
    assert p.stderr.count("hat batch 1 ...") == 2
