"""benchmarks/bench_predictor_noise.py on a synthetic device in HAT's CSV layout with known noise:
the comparison, hat-mlp's cache and the noise-floor estimates."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_predictors import device, write_csv

ROOT = Path(__file__).resolve().parent.parent


def test_noise_floor_and_comparison_on_known_noise(tmp_path):
    csvs = tmp_path / "csvs"
    csvs.mkdir()
    write_csv(csvs / "wmt14enfr_cpu_synthetic_all.csv", device(600, seed=3, noise=0.05), cfg=False)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_predictor_noise.py"), "--hat-csvs", str(csvs), "--splits", "0-1",
           "--inits", "7", "--hat-steps", "40", "--cache", str(tmp_path / "cache"), "--floor", "--json", str(tmp_path / "o.json")]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    out = json.loads((tmp_path / "o.json").read_text())
    comp, floor = out["comparison"][0], out["floor"][0]
    assert [r["split"] for r in comp["splits"]] == [0, 1]
    assert set(comp["splits"][0]["hat_mlp_mape_by_init"]) == {"0", "7"}  # split 0 refit with init 7
    assert "hat_mlp_mape_by_init" not in comp["splits"][1]
    lo, hi = comp["splits"][0]["ratio_boot90"]
    assert lo <= comp["splits"][0]["ratio"] <= hi
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3
    # lognormal noise sd 0.05: the best predictor's MAPE is 0.05 sqrt(2/pi) = 4.0 %
    assert 3.5 < floor["oof_mape"]["cost LP (the default)"] < 4.8
    nn = floor["nn_pairs"]
    assert nn["lower_bound_pct"] < 4.0 < nn["gaussian_pct"] * 1.3
    assert abs(floor["autocorr_file_order"][0]) < 0.15  # independent noise: no drift in file order
    # the cache is reused: a second run gives the same hat-mlp numbers without refitting
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.npy")}
    subprocess.run(cmd[:-3] + ["--json", str(tmp_path / "o2.json")], check=True, capture_output=True, timeout=600)
    again = json.loads((tmp_path / "o2.json").read_text())["comparison"][0]
    assert again["splits"][0]["hat_mlp_mape"] == comp["splits"][0]["hat_mlp_mape"]
    assert mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.npy")}
