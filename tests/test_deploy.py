"""Deployment: `hat translate` (streaming, any export), `hat evaluate --src/--ref`, int8 exports
(torch dynamic quantization, onnxruntime's) and `hat measure --quantize int8`; bad input is one
line, exit 2, no output file left behind."""
from __future__ import annotations

import io
import json
import os
import sys

import pytest
import torch

import hat
from hat.cli import main
from hat.data import ParallelDataset, collate
from hat.errors import CheckpointError
from hat.export.stream import line_batches
from test_export import shared_setup


@pytest.fixture(scope="module")
def s(tmp_path_factory):
    return shared_setup(tmp_path_factory)


@pytest.fixture(scope="module")
def int8(s):
    out = s["tmp"] / "int8"
    assert main(["export", "--checkpoint", str(s["model"]), "--quantize", "int8", "--out", str(out)]) == 0
    return out / "model.pt"


def _sources(s, n: int = 16) -> list[str]:
    return (s["tmp"] / "test.de").read_text(encoding="utf-8").splitlines()[:n]


def _translate(argv: list[str], stdin: bytes, monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    rc = main(["translate", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ------------------------------------------------------------------------------------------ int8
def test_int8_file_records_it_and_loads_weights_only(s, int8):
    state = torch.load(int8, weights_only=True)
    assert state["quantization"] == "int8" and state["format"] == "hat-standalone"
    w = state["model"]["decoder.layers.0.ffn.fc1.weight"]
    assert w.dtype == torch.int8 and state["model"]["decoder.layers.0.ffn.fc1.weight_scale"].shape == (w.size(0),)
    assert state["model"]["decoder.output_projection.weight"].dtype == torch.int8  # the tied projection too
    assert int8.stat().st_size < 0.6 * s["model"].stat().st_size


def test_int8_reload_is_bit_exact_and_close_to_float32(s, int8, tmp_path):
    tr = hat.load(int8)
    assert tr.quantization == "int8"
    again = tmp_path / "again.pt"
    tr.save(again)  # int8 -> file -> int8 keeps every weight
    tr2, fp = hat.load(again), hat.load(s["model"])
    b = collate([ParallelDataset(s["data"], "test")[i] for i in range(8)], 1, 2)
    with torch.no_grad():
        ref = fp.model(b["src_tokens"], b["src_lengths"], b["prev_output_tokens"]).log_softmax(-1)
        got = tr.model(b["src_tokens"], b["src_lengths"], b["prev_output_tokens"]).log_softmax(-1)
        got2 = tr2.model(b["src_tokens"], b["src_lengths"], b["prev_output_tokens"]).log_softmax(-1)
    assert torch.equal(got, got2)
    assert (got - ref).abs().mean() < 0.05  # int8 weights: close, not equal
    src = _sources(s)
    same = sum(a == b for a, b in zip(tr.translate(src, beam=4), fp.translate(src, beam=4)))
    assert same >= len(src) * 3 // 4


def test_int8_is_refused_where_it_cannot_go(s, int8, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(int8), "--format", "fairseq", "--out", str(tmp_path / "fs")]) == 2
    assert "float32 only" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(int8), "--quantize", "int8", "--out", str(tmp_path / "q")]) == 2
    assert "already quantized" in capsys.readouterr().err
    assert not (tmp_path / "fs").exists() and not (tmp_path / "q").exists()
    bad = tmp_path / "bad.pt"
    state = torch.load(int8, weights_only=True)
    torch.save({**state, "quantization": "int4"}, bad)
    with pytest.raises(CheckpointError, match="unknown quantization"):
        hat.load(bad)
    del state["model"]["decoder.layers.0.ffn.fc1.weight_scale"]
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="does not match"):
        hat.load(bad)


# ------------------------------------------------------------------------------------------ translate
def test_translate_streams_in_input_order_with_empty_lines(s, monkeypatch, capsys):
    src = _sources(s, 9)
    lines = src[:3] + ["", "   "] + src[3:]
    stdin = ("\n".join(lines) + "\n").encode()
    rc, out, _ = _translate(["--model", str(s["model"]), "--buffer-size", "4", "--max-sentences", "3"],
                            stdin, monkeypatch, capsys)
    assert rc == 0
    got = out.split("\n")
    assert got[-1] == "" and len(got) - 1 == len(lines)
    tr = hat.load(s["model"])
    want = tr.translate(src, beam=4, lenpen=0.6)
    assert got[:3] + got[5:-1] == want and got[3] == got[4] == ""
    # CRLF and a missing final newline read the same
    rc, out2, _ = _translate(["--model", str(s["model"])], "\r\n".join(lines).encode(), monkeypatch, capsys)
    assert rc == 0 and out2 == out


def test_translate_output_file_appears_whole_and_bad_input_leaves_none(s, tmp_path, capsys):
    good, bad, empty = tmp_path / "in.de", tmp_path / "bad.de", tmp_path / "empty.de"
    good.write_text("\n".join(_sources(s, 5)) + "\n", encoding="utf-8")
    bad.write_bytes("Das haus.\nDer hund.\n".encode() + b"\xff\xfe kaputt\n")
    empty.write_bytes(b"")
    out = tmp_path / "out.en"
    assert main(["translate", "--model", str(s["model"]), "--input", str(good), "--output", str(out)]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 5
    assert "5 lines" in capsys.readouterr().err
    for src, msg in ((bad, f"{bad}:3: not valid UTF-8"), (empty, f"{empty}: empty input")):
        target = tmp_path / f"{src.stem}.en"
        assert main(["translate", "--model", str(s["model"]), "--input", str(src), "--output", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1
        assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("damage", ["missing", "truncated", "not-an-export", "onnx-without-decoder"])
def test_translate_bad_model_is_one_line(s, tmp_path, damage, monkeypatch, capsys):
    model = tmp_path / "m.pt"
    if damage == "truncated":
        model.write_bytes(s["model"].read_bytes()[:1000])
    elif damage == "not-an-export":
        model = tmp_path / "dir"
        model.mkdir()
    elif damage == "onnx-without-decoder":
        model = tmp_path / "onnx"
        model.mkdir()
        (model / "onnx.json").write_text("{}")
        (model / "encoder.onnx").write_bytes(b"")
    rc, out, err = _translate(["--model", str(model)], b"Das haus.\n", monkeypatch, capsys)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and str(model) in err


def test_translate_cuts_overlong_lines_with_a_warning(s, monkeypatch, capsys):
    tr = hat.load(s["model"])
    limit = tr.model.args.max_positions
    long = " ".join(["haus"] * (limit + 50))
    rc, out, err = _translate(["--model", str(s["model"]), "--beam", "1", "--max-len-b", "3", "--max-len-a", "0"],
                              f"Der hund.\n{long}\n".encode(), monkeypatch, capsys)
    assert rc == 0 and len(out.splitlines()) == 2
    assert f"<stdin>:2: " in err and f"cut to the model's {limit}" in err


def test_line_batches_hand_out_what_has_arrived():
    r, w = os.pipe()
    with os.fdopen(r, "rb", buffering=0) as reader:
        batches = line_batches(reader, buffer_size=8)
        os.write(w, b"eins\nzwei\ndr")
        assert next(batches) == [b"eins", b"zwei"]  # no waiting for a full buffer or for EOF
        os.write(w, b"ei\nvier")
        os.close(w)
        assert list(batches) == [[b"drei", b"vier"]]
    assert list(line_batches(io.BytesIO(b"a\nb\nc\n"), 2)) == [[b"a", b"b"], [b"c"]]


# ------------------------------------------------------------------------------------------ evaluate
def test_evaluate_raw_text_equals_prepared_directory(s, tmp_path, capsys):
    tmp = s["tmp"]
    assert main(["evaluate", "--model", str(s["model"]), "--data", str(s["data"]), "--out", str(tmp_path / "a"),
                 "--json"]) == 0
    prepared = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--model", str(s["model"]), "--src", str(tmp / "test.de"), "--ref", str(tmp / "test.en"),
                 "--origin", str(tmp / "test.origin"), "--out", str(tmp_path / "b"), "--json"]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert (tmp_path / "a").read_text() == (tmp_path / "b").read_text()
    for key in ("bleu", "chrf", "bleu_signature", "n", "per_origin"):
        assert raw[key] == prepared[key], key
    assert raw["subset"] == "text" and raw["src_file"] == str(tmp / "test.de")


def test_evaluate_raw_text_bad_input(s, tmp_path, capsys):
    tmp = s["tmp"]
    short = tmp_path / "short.en"
    short.write_text("One.\nTwo.\n", encoding="utf-8")
    empty = tmp_path / "empty.de"
    empty.write_text("", encoding="utf-8")
    cases = [
        (["--src", str(tmp / "test.de"), "--ref", str(short)], f"{short}: 2 lines but {tmp / 'test.de'} has 40"),
        (["--src", str(tmp / "test.de"), "--ref", str(tmp / "test.en"), "--origin", str(short)], f"{short}: 2 lines"),
        (["--src", str(empty), "--ref", str(short)], f"{empty}: file is empty"),
        (["--src", str(tmp / "test.de")], "--src and --ref go together"),
        ([], "give --data"),
    ]
    for extra, msg in cases:
        out = tmp_path / "hyps"
        assert main(["evaluate", "--model", str(s["model"]), *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, (extra, err)
        assert not out.exists()


# ------------------------------------------------------------------------------------------ ONNX
@pytest.fixture(scope="module")
def onnx_int8(s):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = s["tmp"] / "onnx-int8"
    assert main(["export", "--checkpoint", str(s["model"]), "--format", "onnx", "--quantize", "int8",
                 "--out", str(out)]) == 0
    return out


def test_onnx_int8_records_it_and_translates(s, onnx_int8):
    import onnx

    meta = json.loads((onnx_int8 / "onnx.json").read_text())
    assert meta["quantization"] == "int8" and meta["max_abs_diff"] < 1e-4  # checked before quantizing
    ops = {n.op_type for n in onnx.load(str(onnx_int8 / "decoder_step.onnx")).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    tr = hat.load(onnx_int8)
    assert tr.quantization == "int8"
    src = _sources(s)
    same = sum(a == b for a, b in zip(tr.translate(src), hat.load(s["model"]).translate(src)))
    assert same >= len(src) * 3 // 4


def test_onnx_float32_translates_as_torch(s, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = s["tmp"] / "onnx-fp32"
    if not out.is_dir():
        assert main(["export", "--checkpoint", str(s["model"]), "--format", "onnx", "--out", str(out)]) == 0
        capsys.readouterr()
    src = _sources(s)
    rc, got, _ = _translate(["--model", str(out)], ("\n".join(src) + "\n").encode(), monkeypatch, capsys)
    assert rc == 0 and got.splitlines() == hat.load(s["model"]).translate(src)


def test_onnx_from_int8_standalone_is_refused(s, int8, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    assert main(["export", "--checkpoint", str(int8), "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    assert "from the float32 model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ measure
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_measure_int8_records_the_quantization(tmp_path, backend, monkeypatch):
    from hat.latency.measure import Protocol

    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
        import hat.export.onnx_export as ox

        target, name = ox, "quantize_graphs"
    else:
        import hat.export.quantize as qz

        target, name = qz, "quantize_int8"
    calls = []
    real = getattr(target, name)
    monkeypatch.setattr(target, name, lambda *a, **k: calls.append(1) or real(*a, **k))  # the int8 model is timed
    out = tmp_path / "lat8.csv"
    assert main(["measure", "--device", "cpu-2core", "--space", "tiny-latency", "--samples", "1", "--runs", "1",
                 "--warmup", "0", "--src-len", "4", "--tgt-len", "2", "--beam", "1", "--threads", "1",
                 "--backend", backend, "--quantize", "int8", "--out", str(out), "--no-progress"]) == 0
    meta = json.loads((tmp_path / "lat8.meta.json").read_text())
    assert meta["protocol"]["quantize"] == "int8" and len(out.read_text().splitlines()) == 2
    assert calls
    assert "quantize" not in Protocol().to_dict()  # float32 datasets keep the protocol they recorded
    assert main(["measure", "--device", "cpu-2core", "--space", "tiny-latency", "--samples", "1",
                 "--backend", "cuda", "--quantize", "int8", "--out", str(tmp_path / "c.csv")]) == 2


# ------------------------------------------------------------------------------------------ exports on the CLI
def test_translate_and_evaluate_take_the_int8_export(s, int8, tmp_path, monkeypatch, capsys):
    """`hat translate` / `hat evaluate --src --ref` on the int8 model.pt: the int8 model's own
    hypotheses (not the float32 ones), empty lines kept, scored like the Python API's."""
    from hat.evaluate import score

    src = _sources(s, 6)
    rc, out, _ = _translate(["--model", str(int8), "--threads", "1"], ("\n".join(src[:3] + [""] + src[3:]) + "\n").encode(),
                            monkeypatch, capsys)
    want = hat.load(int8).translate(src)
    assert rc == 0 and out.split("\n")[:-1] == want[:3] + [""] + want[3:]
    src_file, ref_file = tmp_path / "t.de", tmp_path / "t.en"
    src_file.write_text("\n".join(src) + "\n", encoding="utf-8")
    refs = (s["tmp"] / "test.en").read_text(encoding="utf-8").splitlines()[:6]
    ref_file.write_text("\n".join(refs) + "\n", encoding="utf-8")
    assert main(["evaluate", "--model", str(int8), "--src", str(src_file), "--ref", str(ref_file), "--json",
                 "--out", str(tmp_path / "hyp")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (tmp_path / "hyp").read_text(encoding="utf-8").splitlines() == want
    assert res["bleu"] == pytest.approx(score(want, refs)["bleu"])


def test_translate_takes_the_onnx_int8_directory(s, onnx_int8, monkeypatch, capsys):
    src = _sources(s, 5)
    stdin = ("\n".join([src[0], "", *src[1:]]) + "\n").encode()
    rc, out, _ = _translate(["--model", str(onnx_int8), "--threads", "1", "--beam", "2"], stdin, monkeypatch, capsys)
    want = hat.load(onnx_int8).translate(src, beam=2)
    assert rc == 0 and out.split("\n")[:-1] == [want[0], "", *want[1:]]


def test_non_utf8_on_stdin_names_the_line_in_a_later_batch(s, monkeypatch, capsys):
    """The line number counts across batches; the lines before it are already out (streaming)."""
    lines = [x.encode() for x in _sources(s, 4)] + [b"kaputt \xc3\x28", b"Der hund."]
    rc, out, err = _translate(["--model", str(s["model"]), "--buffer-size", "2", "--beam", "1"],
                              b"\n".join(lines) + b"\n", monkeypatch, capsys)
    assert rc == 2 and len(out.splitlines()) == 4
    assert err.strip().splitlines() == [err.strip()] and "<stdin>:5: not valid UTF-8 (byte 8 of the line)" in err


def _evaluate_fails(s, model, tmp_path, capsys) -> str:
    """`hat evaluate --src --ref` on a bad model: exit 2, one line naming it, no hypotheses file."""
    out = tmp_path / "hyps"
    assert main(["evaluate", "--model", str(model), "--src", str(s["tmp"] / "test.de"), "--ref",
                 str(s["tmp"] / "test.en"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(model) in err, err
    assert not out.exists()
    return err


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_evaluate_raw_text_bad_model_leaves_no_output(s, tmp_path, damage, capsys):
    model = tmp_path / "m.pt"
    if damage == "truncated":
        model.write_bytes(s["model"].read_bytes()[:1000])
    _evaluate_fails(s, model, tmp_path, capsys)


@pytest.mark.parametrize("graph", ["decoder_step.onnx", "encoder.onnx"])
def test_onnx_directory_missing_a_graph_is_one_line(s, onnx_int8, graph, tmp_path, monkeypatch, capsys):
    import shutil

    broken = tmp_path / "onnx"
    shutil.copytree(onnx_int8, broken)
    (broken / graph).unlink()
    assert f"{broken / graph}: missing" in _evaluate_fails(s, broken, tmp_path, capsys)
    rc, out, err = _translate(["--model", str(broken)], b"Das haus.\n", monkeypatch, capsys)
    assert rc == 2 and out == "" and f"{broken / graph}: missing" in err and len(err.strip().splitlines()) == 1
