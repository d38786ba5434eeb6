"""ONNX export: encoder + decoder-step graphs with a KV cache; onnxruntime matches hat.model for
several batch sizes, source lengths and decoder steps, and greedy decoding in onnxruntime
reproduces hat's greedy search. Skipped without onnxruntime/onnxscript."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import hat  # noqa: E402
from hat.cli import main  # noqa: E402
from hat.data import ParallelDataset  # noqa: E402
from hat.export.onnx_export import graph_opset, greedy_onnx, verify_onnx  # noqa: E402
from hat.model import greedy_search  # noqa: E402
from hat.model.generate import left_pad  # noqa: E402
from test_export import shared_setup  # noqa: E402


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    s = shared_setup(tmp_path_factory)
    out = s["tmp"] / "onnx"
    assert main(["export", "--checkpoint", str(s["model"]), "--format", "onnx", "--out", str(out), "--json"]) == 0
    return {**s, "onnx": out}


def test_onnx_files_and_recorded_check(onnx_dir):
    """What onnx.json records is what the files are: their opset, and a difference from hat.model
    this test measures itself with plain onnxruntime sessions (not the exporter's own check)."""
    import numpy as np
    import onnxruntime as ort

    out = onnx_dir["onnx"]
    meta = json.loads((out / "onnx.json").read_text())
    assert meta["num_decoder_layers"] == 2 and meta["opset"] == 18
    assert graph_opset(out / "encoder.onnx") == graph_opset(out / "decoder_step.onnx") == meta["opset"]
    enc_s = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec_s = ort.InferenceSession(str(out / "decoder_step.onnx"), providers=["CPUExecutionProvider"])
    model = hat.load(onnx_dir["model"]).model
    src = torch.tensor([[1, 1, 7, 8, 9, 2], [5, 6, 7, 8, 9, 2]])  # one left-padded row
    with torch.no_grad():
        enc = model.encode(src)
        cache: list = []
        ref = model.decode_step(torch.tensor([[2], [2]]), enc, cache)  # first step: after EOS
    enc_out = enc_s.run(None, {"src_tokens": src.numpy()})
    np.testing.assert_array_equal(enc_out[0], src.eq(1).numpy())
    for i, state in enumerate(cache):
        assert np.abs(enc_out[1 + 2 * i] - state.cross_k.numpy()).max() < 1e-4
    L, qkv = meta["num_decoder_layers"], meta["qkv_dim"]
    empty = [np.zeros((2, 0, qkv), dtype=np.float32)] * (2 * L)
    feeds = dict(zip(meta["decoder_inputs"], [np.full((2, 1), 2), np.array([0]), *enc_out, *empty]))
    lprobs = dec_s.run(None, feeds)[0]
    diff = float(np.abs(lprobs - ref.numpy()).max())
    assert diff < 1e-4 and meta["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("shapes", [((1, 3, 0), (4, 11, 2)), ((2, 30, 7), (5, 6, 1))])
def test_onnxruntime_matches_torch(onnx_dir, shapes):
    tr = hat.load(onnx_dir["model"])
    assert verify_onnx(tr.model, onnx_dir["onnx"], shapes) < 1e-4


def test_greedy_in_onnxruntime_equals_torch(onnx_dir):
    tr = hat.load(onnx_dir["model"])
    ds = ParallelDataset(onnx_dir["data"], "test")
    src = left_pad([ds.src[i] for i in range(6)], 1)
    ref = [h.tokens for h in greedy_search(tr.model, src, max_len_a=0, max_len_b=12)]
    got = greedy_onnx(onnx_dir["onnx"], src, max_len=12)
    assert got == ref


def test_verify_fails_on_nan_or_inf_differences(onnx_dir, monkeypatch):
    import numpy as np

    from hat.export.onnx_export import OrtStepper, _max_diff

    assert _max_diff(torch.tensor([0.5, -float("inf")]), np.array([0.5, -np.inf], dtype=np.float32)) == 0.0
    assert _max_diff(torch.tensor([0.5, 1.0]), np.array([0.5, np.inf], dtype=np.float32)) == float("inf")
    real_step = OrtStepper.step

    def nan_step(self, *args):
        lprobs, cache = real_step(self, *args)
        lprobs[0, 5] = np.nan
        return lprobs, cache

    monkeypatch.setattr(OrtStepper, "step", nan_step)
    with pytest.raises(RuntimeError, match="NaN/inf"):
        verify_onnx(hat.load(onnx_dir["model"]).model, onnx_dir["onnx"])
