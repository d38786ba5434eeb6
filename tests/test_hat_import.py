"""HAT's trained latency predictors and search settings, used as they are.

The tests write their own files in HAT's layout (random weights): the published ones are not
part of the project. A hand-written forward of HAT's `LatencyPredictor` is the reference.
"""
from __future__ import annotations

import json
from pathlib import Path

import random

import numpy as np
import pytest
import torch
import yaml

from hat.cli import main
from hat.latency.predictors import load_predictor
from hat.latency.predictors.hat_import import import_hat
from hat.space import HAT_FEATURE_NORM, SubConfig, load_space

NORM = [640, 6, 2048, 6, 640, 6, 2048, 6, 6, 2]


def hat_state_dict(seed: int = 0, hidden: int = 400, layers: int = 3, n_in: int = 10) -> dict[str, torch.Tensor]:
    """A state dict as HAT's `LatencyPredictor` saves it (first_layer, layers.i, predict)."""
    g = torch.Generator().manual_seed(seed)

    def lin(o: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(o, i, generator=g) / i ** 0.5, torch.randn(o, generator=g) * 0.1

    sd = {}
    sd["first_layer.weight"], sd["first_layer.bias"] = lin(hidden, n_in)
    for k in range(layers):
        sd[f"layers.{k}.weight"], sd[f"layers.{k}.bias"] = lin(hidden, hidden)
    sd["predict.weight"], sd["predict.bias"] = lin(1, hidden)
    sd["predict.bias"] += 1.0  # a positive output for most inputs
    return sd


def hat_forward(sd: dict[str, torch.Tensor], raw10: np.ndarray, feature_norm, lat_norm: float) -> np.ndarray:
    """HAT's LatencyPredictor.forward and predict_lat, written out."""
    x = torch.tensor(np.asarray(raw10) / np.asarray(feature_norm, dtype=np.float64), dtype=torch.float32)
    x = torch.relu(x @ sd["first_layer.weight"].T + sd["first_layer.bias"])
    k = 0
    while f"layers.{k}.weight" in sd:
        x = torch.relu(x @ sd[f"layers.{k}.weight"].T + sd[f"layers.{k}.bias"])
        k += 1
    return ((x @ sd["predict.weight"].T + sd["predict.bias"]).view(-1) * lat_norm).double().numpy()


@pytest.fixture(scope="module")
def space():
    return load_space("wmt-latency")


@pytest.fixture(scope="module")
def cfgs(space):
    rng = random.Random(0)
    return [space.sample(rng) for _ in range(64)]


def _raw10(cfgs) -> np.ndarray:
    from hat.latency.predictors.base import raw10_of
    return raw10_of(cfgs)


@pytest.mark.parametrize("hidden,layers,norm", [(400, 3, NORM), (32, 1, [600, 5, 2000, 5, 600, 5, 2000, 5, 5, 3])])
def test_import_predicts_hats_forward_and_round_trips(tmp_path, space, cfgs, hidden, layers, norm):
    sd = hat_state_dict(1, hidden, layers)
    src = tmp_path / "hat.pt"
    torch.save(sd, src)
    out = tmp_path / "ours.pt"
    assert main(["import-predictor", str(src), "--lat-norm", "300", "--feature-norm", *map(str, norm),
                 "--space", "wmt-latency", "--out", str(out)]) == 0
    want = hat_forward(sd, _raw10(cfgs), norm, 300.0)
    pred = load_predictor(out, load_space("wmt14.en-fr"))  # a sub-space of the imported one
    np.testing.assert_allclose(pred.predict(cfgs), want, rtol=1e-6, atol=1e-5)
    assert pred.state["imported"] == {"from": "HAT", "file": "hat.pt", "feature_norm": [float(x) for x in norm],
                                      "lat_norm": 300.0}
    assert not pred.has_interval
    # a plain dict of tensors and numbers: weights-only, and the same file after a re-save
    raw = torch.load(out, weights_only=True)
    assert raw["model"] == "hat-mlp" and raw["interval"] == {}
    pred.save(tmp_path / "again.pt")
    np.testing.assert_array_equal(load_predictor(tmp_path / "again.pt").predict(cfgs), pred.predict(cfgs))


def test_calibrate_on_gives_a_split_conformal_interval(tmp_path, space, cfgs):
    sd = hat_state_dict(2)
    torch.save(sd, tmp_path / "hat.pt")
    pred = import_hat(tmp_path / "hat.pt", 200.0, HAT_FEATURE_NORM, space)
    ms = pred.predict(cfgs)
    # a CSV in HAT's 14 columns whose latencies are 1.1 x the prediction, +-5 %
    rng = np.random.default_rng(3)
    measured = ms * 1.1 * rng.uniform(0.95, 1.05, len(ms))
    csv = tmp_path / "calib.csv"
    cols = ["encoder_embed_dim", "encoder_layer_num", "encoder_ffn_embed_dim_avg", "encoder_self_attention_heads_avg",
            "decoder_embed_dim", "decoder_layer_num", "decoder_ffn_embed_dim_avg", "decoder_self_attention_heads_avg",
            "decoder_ende_attention_heads_avg", "decoder_arbitrary_ende_attn_avg", "latency_mean_encoder",
            "latency_mean_decoder", "latency_std_encoder", "latency_std_decoder"]
    lines = [",".join(cols)] + [",".join(repr(float(v)) for v in [*r, m / 2, m / 2, 0.0, 0.0]) for r, m in zip(_raw10(cfgs), measured)]
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "cal.pt"
    assert main(["import-predictor", str(tmp_path / "hat.pt"), "--device", "titanxp", "--space", "wmt-latency",
                 "--calibrate-on", str(csv), "--out", str(out)]) == 0
    cal = load_predictor(out)
    assert cal.lat_norm == 200.0 and cal.device == "titanxp"  # lat-norm from the device
    lo, hi = cal.bounds(0.9)
    assert 1.1 * 0.95 - 1e-6 <= lo < 1.1 < hi <= 1.1 * 1.05 + 1e-6
    assert json.loads((tmp_path / "cal.metrics.json").read_text())["n"] == len(cfgs)


def _hat_file(tmp_path: Path, sd: dict) -> Path:
    p = tmp_path / "hat.pt"
    torch.save(sd, p)
    return p


def _bad_layouts() -> list:
    sd = hat_state_dict(0, 16, 2)
    missing = {k: v for k, v in sd.items() if k != "layers.1.bias"}
    extra = {**sd, "norm.weight": torch.zeros(16)}
    shape = {**sd, "layers.0.weight": torch.zeros(16, 8)}
    inputs = hat_state_dict(0, 16, 2, n_in=12)
    nan = {**sd, "predict.weight": sd["predict.weight"].clone().fill_(float("nan"))}
    return [pytest.param(missing, "missing layers.1.bias", id="missing"),
            pytest.param(extra, "unexpected", id="extra"),
            pytest.param(shape, "layers.0 has weight", id="shape"),
            pytest.param(inputs, "first_layer has weight", id="inputs"),
            pytest.param(nan, "non-finite", id="nan"),
            pytest.param({"net": torch.zeros(3)}, "not HAT's latency-MLP layout", id="other")]


@pytest.mark.parametrize("sd,message", _bad_layouts())
def test_a_wrong_layout_or_weight_is_one_line_and_writes_nothing(tmp_path, capsys, sd, message):
    src = _hat_file(tmp_path, sd)
    out = tmp_path / "out.pt"
    assert main(["import-predictor", str(src), "--lat-norm", "300", "--space", "wmt-latency", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(src) in err
    assert not out.exists()


@pytest.mark.parametrize("flags,message", [
    (["--feature-norm", "640", "6", "2048"], "feature-norm has 3 values"),
    (["--feature-norm", *map(str, NORM[:-1]), "0"], "must be a positive number"),
    (["--lat-norm", "0"], "lat-norm 0 must be a positive"),
    ([], "--lat-norm N is required"),
])
def test_bad_norms_are_one_line_and_write_nothing(tmp_path, capsys, flags, message):
    src = _hat_file(tmp_path, hat_state_dict(0, 16, 1))
    out = tmp_path / "out.pt"
    lat = [] if "--lat-norm" in flags or not flags else ["--lat-norm", "300"]
    assert main(["import-predictor", str(src), *lat, *flags, "--space", "wmt-latency", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_a_hat_state_dict_given_as_predictor_says_how_to_import_it(tmp_path, capsys):
    src = _hat_file(tmp_path, hat_state_dict(0, 16, 1))
    assert main(["search", "--predictor", str(src), "--space", "wmt14.en-fr", "--scorer", "params",
                 "--latency-constraint", "100", "--out", str(tmp_path / "s.yml")]) == 2
    assert "import it first: hat import-predictor" in capsys.readouterr().err


def _evo_yaml(tmp_path: Path, constraint: float, **extra) -> Path:
    """HAT's evo_search file, as HAT ships it (restore-file included), small enough for a test."""
    d = {"evo-iter": 4, "population-size": 30, "parent-size": 6, "mutation-size": 12, "crossover-size": 12,
         "mutation-prob": 0.3, "ckpt-path": "./latency_dataset/predictors/wmt14enfr_test.pt", "feature-norm": NORM,
         "lat-norm": 300, "restore-file": "./downloaded_models/HAT_wmt14enfr_super_space0.pt",
         "write-config-path": "configs/wmt14.en-fr/subtransformer/test@x.yml", "latency-constraint": constraint, **extra}
    p = tmp_path / "evo.yml"
    p.write_text(yaml.safe_dump(d))
    return p


@pytest.fixture
def hat_tree(tmp_path, monkeypatch, cfgs):
    """A working directory laid out like HAT's repository, with a predictor at ckpt-path."""
    sd = hat_state_dict(4)
    (tmp_path / "latency_dataset/predictors").mkdir(parents=True)
    torch.save(sd, tmp_path / "latency_dataset/predictors/wmt14enfr_test.pt")
    monkeypatch.chdir(tmp_path)
    ms = hat_forward(sd, _raw10(cfgs), NORM, 300.0)
    return tmp_path, sd, float(np.median(ms))


def test_hat_evo_search_file_runs_with_params_scorer_and_meets_the_constraint(hat_tree, capsys):
    tmp_path, sd, constraint = hat_tree
    cfg = _evo_yaml(tmp_path, constraint)
    assert main(["search", "--config", str(cfg), "--scorer", "params", "--space", "wmt14.en-fr", "--no-progress"]) == 0
    out = tmp_path / "configs/wmt14.en-fr/subtransformer/test@x.yml"  # write-config-path
    assert out.is_file() and out.with_name("test@x.hat.yml").is_file()
    doc = yaml.safe_load(out.read_text())
    best = SubConfig(**doc["subconfig"])
    ms = hat_forward(sd, _raw10([best]), NORM, 300.0)[0]
    assert ms <= constraint + 1e-6 and doc["metadata"]["latency"]["predicted_ms"] == pytest.approx(ms, rel=1e-5)
    assert "as HAT holds it" in doc["metadata"]["latency"]["held_against_constraint"]
    log = (tmp_path / "configs/wmt14.en-fr/subtransformer/test@x.log.csv").read_text().splitlines()
    assert len(log) == 1 + 4 + 1  # header, the first generation and evo-iter 4


def test_hat_evo_search_flags_win_and_bad_keys_are_refused(hat_tree, capsys):
    tmp_path, _, constraint = hat_tree
    cfg = _evo_yaml(tmp_path, constraint)
    # restore-file (HAT's fairseq SuperTransformer) cannot score: refused unless replaced
    assert main(["search", "--config", str(cfg), "--space", "wmt14.en-fr"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "restore-file" in err and "--scorer params" in err
    assert main(["search", "--config", str(_evo_yaml(tmp_path, constraint, **{"beam-size": 4})), "--scorer", "params",
                 "--space", "wmt14.en-fr"]) == 2
    assert "beam-size" in capsys.readouterr().err
    assert main(["search", "--config", str(_evo_yaml(tmp_path, constraint, **{"hidden-dim": 128})), "--scorer",
                 "params", "--space", "wmt14.en-fr"]) == 2
    assert "hidden-dim 128 does not match" in capsys.readouterr().err
    cfg = _evo_yaml(tmp_path, constraint, **{"ckpt-path": "nowhere.pt"})
    assert main(["search", "--config", str(cfg), "--scorer", "params", "--space", "wmt14.en-fr"]) == 2
    assert "ckpt-path nowhere.pt: no such file" in capsys.readouterr().err
    # flags override the file: --out and --iterations
    cfg = _evo_yaml(tmp_path, constraint)
    out = tmp_path / "mine.yml"
    assert main(["search", "--config", str(cfg), "--scorer", "params", "--space", "wmt14.en-fr", "--iterations", "1",
                 "--out", str(out), "--no-progress"]) == 0
    assert len(out.with_name("mine.log.csv").read_text().splitlines()) == 1 + 1 + 1
    assert not (tmp_path / "configs").exists()


def test_shipped_hat_devices_find_an_imported_predictor_by_name(hat_tree, capsys):
    tmp_path, sd, _ = hat_tree
    assert main(["info", "--device", "xeon"]) == 0
    text = capsys.readouterr().out
    assert "xeon.pt not found" in text and "hat import-predictor wmt14enfr_cpu_xeon.pt --device xeon" in text
    assert main(["import-predictor", "latency_dataset/predictors/wmt14enfr_test.pt", "--device", "xeon", "--space",
                 "wmt-latency", "--out", "xeon.pt"]) == 0
    capsys.readouterr()
    assert main(["info", "--device", "xeon", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["predictor"]["lat_norm"] == 300.0 and d["predictor"]["origin"].startswith("imported from HAT's wmt14enfr_test")
    assert d["predictor"]["interval_90"] == [None, None]
