"""Decoder-only LMs end to end: `hat prepare mono`, `hat train --task lm` (loss, checkpoints,
SIGKILL-resume), `hat evaluate --ppl`, ONNX export with a KV cache, and the one-line refusals."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hat.cli import main
from hat.data import LMBlocks, ParallelDataset, Tokenizer, load_data, token_stream
from hat.data.dictionary import Dictionary
from hat.errors import DataError, HatError
from hat.files import load_torch, save_torch
from hat.model import perplexity
from hat.model.lm_checkpoint import is_lm_checkpoint, load_lm, load_lm_checkpoint
from hat.train.lm import LMTrainer
from hat.train.lm_config import load_lm_train_config
from helpers import kill_at_first_checkpoint

WORDS = "the house cat dog is very big small red garden tree green and fast old a on sees".split()
SPACE = {"version": 1, "task": "lm", "name": "micro-lm", "vocab_size": 64, "max_positions": 16,
         "choices": {"layer_num": [1, 2], "embed_dim": [16, 32], "ffn_embed_dim": [32, 64], "attention_heads": [2]}}
ARCH = {"task": "lm", "layer_num": 2, "embed_dim": 32, "ffn_embed_dim": [64, 32], "attention_heads": 2}
TRAIN = ["context=16", "batch_size=8", "lr=3e-3", "warmup_updates=5", "log_interval=5", "validate_interval=20",
         "save_interval=20", "progress=false", "num_threads=1"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A generated text file (a blank line in it), prepared with `hat prepare mono`, and a micro space."""
    d = tmp_path_factory.mktemp("lmtrain")
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(300)]
    text = "\n".join(lines[:150]) + "\n\n" + "\n".join(lines[150:]) + "\n"
    (d / "text.txt").write_text(text, encoding="utf-8")
    assert main(["prepare", "mono", "--input", str(d / "text.txt"), "--lang", "en", "--valid-share", "0.1",
                 "--test-share", "0.05", "--vocab-size", "60", "--out", str(d / "data")]) == 0
    (d / "space.yaml").write_text(yaml.safe_dump(SPACE))
    (d / "arch.yml").write_text(yaml.safe_dump(ARCH))
    return d


def _train(work: Path, save_dir: Path, *extra: str) -> int:
    return main(["train", "--task", "lm", f"space={work / 'space.yaml'}", f"subnet={work / 'arch.yml'}",
                 f"data={work / 'data'}", f"save_dir={save_dir}", *TRAIN, *extra])


@pytest.fixture(scope="module")
def trained(work) -> Path:
    run = work / "run"
    assert _train(work, run, "max_updates=60") == 0
    return run


# ---------------------------------------------------------------------------------------- prepare
def test_prepare_mono_round_trips_the_text(work):
    data = work / "data"
    meta = json.loads((data / "meta.json").read_text())
    assert (meta["task"], meta["lang"], meta["splits"]) == ("lm", "en", {"train": 255, "valid": 30, "test": 15})
    lines = [x for x in (work / "text.txt").read_text().splitlines() if x]  # the blank line is dropped
    tok = Tokenizer(data / "spm.model", Dictionary.load(data / "dict.en.txt"))
    start = 0
    for split in ("train", "valid", "test"):
        part = lines[start:start + meta["splits"][split]]  # contiguous: held-out text is the file's end
        start += len(part)
        stream, d = token_stream(data, split)
        assert stream.tolist() == [i for line in part for i in tok.encode(line)]
        assert d == tok.dictionary and meta["tokens"][split] == len(stream)
        assert tok.decode(stream[: len(tok.encode(part[0]))]) == part[0]
    blocks = LMBlocks.from_data(data, "valid", context=16, vocab_size=64)
    assert blocks.dictionary == tok.dictionary and len(blocks) == (len(token_stream(data, "valid")[0]) - 1) // 16
    with pytest.raises(DataError, match="no language 'de'"):
        token_stream(data, "valid", lang="de")


def test_translation_loaders_refuse_an_lm_directory(work):
    for load in (load_data, lambda d: ParallelDataset(d, "train")):
        with pytest.raises(DataError, match="a decoder-only LM data directory .* not a parallel one"):
            load(work / "data")


@pytest.mark.parametrize("argv, needle", [
    (["--valid-share", "1.5"], "need 0 < valid"),
    (["--lang", "e/n"], "a file suffix"),
    (["--input", "EMPTY"], "file is empty"),
    (["--input", "MISSING"], "file not found"),
    (["--spm-model", "MISSING"], "no such LM checkpoint, data directory"),
    (["--spm-model", "NOTLM"], "not a decoder-only LM checkpoint"),
    (["--spm-model", "EMPTY"], "EMPTY"),
])
def test_prepare_mono_refuses_bad_input_writing_nothing(work, tmp_path, capsys, argv, needle):
    (tmp_path / "EMPTY").write_text("")
    save_torch({"format": "something-else"}, tmp_path / "NOTLM")
    argv = [str(tmp_path / a) if a in ("EMPTY", "MISSING", "NOTLM") else a for a in argv]
    base = {"--input": str(work / "text.txt")}
    base.update(dict(zip(argv[::2], argv[1::2])))
    out = tmp_path / "out"
    assert main(["prepare", "mono", *[x for kv in base.items() for x in kv], "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and not out.exists()


# ---------------------------------------------------------------------------------------- training
def _logged(run: Path, kind: str) -> list[dict]:
    return [r[kind] for line in (run / "train_log.jsonl").read_text().splitlines() if kind in (r := json.loads(line))]


def test_training_lowers_the_loss_and_writes_checkpoints(trained):
    train = _logged(trained, "train")
    assert train[0]["update"] == 5 and train[-1]["update"] == 60
    assert train[-1]["loss"] < train[0]["loss"] - 1.0
    valid = _logged(trained, "valid")
    assert [v["update"] for v in valid] == [20, 40, 60] and valid[-1]["ppl"] < valid[0]["ppl"] < 64
    assert train[-1]["tokens_seen"] == 60 * 8 * 16  # the token budget: updates x batch x context
    ckpt = load_lm_checkpoint(trained / "checkpoint_last.pt")
    assert ckpt["update"] == 60 and ckpt["context"] == 16 and ckpt["lm_config"]["ffn_embed_dim"] == [64, 32]
    assert ckpt["vocabulary"]["symbols"] == Dictionary.load(trained.parent / "data" / "dict.en.txt").symbols
    assert is_lm_checkpoint(trained / "checkpoint_best.pt") and not list(trained.glob(".*.tmp"))


def test_checkpoint_loads_weights_only_and_reproduces_the_logits(work, tmp_path):
    cfg = load_lm_train_config("lm-tiny", [f"space={work / 'space.yaml'}", f"subnet={work / 'arch.yml'}",
                                           f"data={work / 'data'}", f"save_dir={tmp_path / 'r'}", *TRAIN,
                                           "max_updates=10"])
    trainer = LMTrainer(cfg)
    trainer.train()
    state = load_torch(tmp_path / "r" / "checkpoint_last.pt", "checkpoint")  # torch.load(weights_only=True)
    assert state["format"] == "hat-lm-checkpoint"
    model, _ = load_lm(tmp_path / "r" / "checkpoint_last.pt")
    x = torch.randint(4, 60, (3, 16), generator=torch.Generator().manual_seed(0))
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), trainer.model(x))


def test_sigkill_then_resume_equals_the_uninterrupted_run(work, tmp_path, capsys):
    over = ["max_updates=200", "save_interval=10", "validate_interval=50", "log_interval=50"]
    ref = tmp_path / "ref"
    assert _train(work, ref, *over) == 0
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hat", "train", "--task", "lm", f"space={work / 'space.yaml'}",
           f"subnet={work / 'arch.yml'}", f"data={work / 'data'}", f"save_dir={killed}", *TRAIN, *over]
    kill_at_first_checkpoint(cmd, killed)
    at = load_lm_checkpoint(killed / "checkpoint_last.pt")["update"]
    assert 10 <= at < 200, "the run must have been killed mid-way"
    capsys.readouterr()
    assert _train(work, killed, *over) == 0
    assert f"resumed from {killed / 'checkpoint_last.pt'} at update {at} " in capsys.readouterr().err
    keys = lambda run: [(k, r["update"]) for line in (run / "train_log.jsonl").read_text().splitlines()  # noqa: E731
                        for k, r in json.loads(line).items()]
    assert keys(killed) == keys(ref)  # continued, and logged nothing twice
    a, b = (load_lm_checkpoint(r / "checkpoint_last.pt") for r in (ref, killed))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    oa, ob = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"]) for i in oa)
    assert a["valid"][-1]["ppl"] == b["valid"][-1]["ppl"]


# ---------------------------------------------------------------------------------------- evaluate
def test_evaluate_ppl_equals_the_models_perplexity_on_the_same_blocks(trained, work, capsys):
    ckpt = trained / "checkpoint_last.pt"
    for subset in ("valid", "test"):
        capsys.readouterr()
        assert main(["evaluate", "--ppl", "--model", str(ckpt), "--data", str(work / "data"), "--subset", subset,
                     "--json"]) == 0
        res = json.loads(capsys.readouterr().out)
        model, _ = load_lm(ckpt)
        blocks = LMBlocks.from_data(work / "data", subset, context=16, vocab_size=64)
        assert res["ppl"] == perplexity(model, blocks.batches(16))
        assert (res["tokens"], res["blocks"], res["subset"]) == (blocks.num_tokens, len(blocks), subset)
    assert res["ppl"] < 64 and _logged(trained, "valid")[-1]["ppl"] == pytest.approx(
        perplexity(model, LMBlocks.from_data(work / "data", "valid", 16, 64).batches(8)), rel=1e-6)  # batch 8, as trained


def test_new_text_prepared_in_a_trained_models_vocabulary_is_scored(trained, work, tmp_path, capsys):
    ckpt = trained / "checkpoint_last.pt"
    rng = random.Random(5)
    other = tmp_path / "other.txt"
    other.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(60)) + "\n")
    symbols = load_lm_checkpoint(ckpt)["vocabulary"]["symbols"]
    ppl = {}
    for name, source in (("ckpt", ckpt), ("dir", work / "data"), ("model", work / "data" / "spm.model")):
        out = tmp_path / name
        assert main(["prepare", "mono", "--input", str(other), "--lang", "en", "--valid-share", "0.5",
                     "--spm-model", str(source), "--out", str(out)]) == 0
        assert (out / "spm.model").read_bytes() == (work / "data" / "spm.model").read_bytes()
        meta = json.loads((out / "meta.json").read_text())
        assert meta["vocabulary_from"] == str(source) and meta["unk_share"] == 0
        if name == "model":  # a bare SentencePiece model: the dictionary is counted on the new text
            continue
        assert Dictionary.load(out / "dict.en.txt").symbols == symbols
        capsys.readouterr()
        assert main(["evaluate", "--ppl", "--model", str(ckpt), "--data", str(out), "--json"]) == 0
        ppl[name] = json.loads(capsys.readouterr().out)["ppl"]
    assert ppl["ckpt"] == ppl["dir"] and 1 < ppl["ckpt"] < 64
    stamp = (tmp_path / "ckpt" / "valid.en.bin").stat().st_mtime_ns  # a rerun asking for the same is skipped
    assert main(["prepare", "mono", "--input", str(other), "--lang", "en", "--valid-share", "0.5",
                 "--spm-model", str(ckpt), "--out", str(tmp_path / "ckpt")]) == 0
    assert (tmp_path / "ckpt" / "valid.en.bin").stat().st_mtime_ns == stamp


# ---------------------------------------------------------------------------------------- export
def test_onnx_export_matches_torch_for_prefill_and_cached_steps(trained, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from hat.export.lm_onnx import OrtLM

    out = tmp_path / "onnx"
    assert main(["export", "--checkpoint", str(trained / "checkpoint_last.pt"), "--format", "onnx",
                 "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["max_abs_diff"] <= 1e-3 and {Path(f).name for f in res["files"]} == {
        "lm.onnx", "lm_onnx.json", "spm.model", "dict.en.txt"}
    meta = json.loads((out / "lm_onnx.json").read_text())
    assert meta["max_positions"] == 16 and meta["num_layers"] == 2 and meta["cache_dim"] == 32
    model, _ = load_lm(trained / "checkpoint_last.pt")
    ort = OrtLM(out / "lm.onnx", meta["max_positions"])
    prompt = torch.randint(4, 60, (2, 9), generator=torch.Generator().manual_seed(5))
    torch.set_grad_enabled(False)
    logits, cache = model.step(prompt)
    got, got_cache = ort.extend(prompt.numpy())
    worst = float((logits - torch.from_numpy(got)).abs().max())
    nxt = logits[:, -1:].argmax(-1)
    for _ in range(4):  # greedy steps over the cache, each fed its own argmax
        logits, cache = model.step(nxt, cache)
        got, got_cache = ort.extend(nxt.numpy(), got_cache)
        worst = max(worst, float((logits - torch.from_numpy(got)).abs().max()))
        nxt = logits[:, -1:].argmax(-1)
    torch.set_grad_enabled(True)
    assert worst < 1e-4 and got_cache[0].shape == (2, 13, 32)
    with pytest.raises(HatError, match="17 tokens do not fit the context of 16 positions"):
        ort.extend(prompt[:, :4].numpy(), got_cache)
    # the export carries the vocabulary: new text prepared with it binarizes as the model was trained
    assert main(["prepare", "mono", "--input", str(trained.parent / "text.txt"), "--lang", "en", "--spm-model",
                 str(out), "--out", str(tmp_path / "again")]) == 0
    assert Dictionary.load(tmp_path / "again" / "dict.en.txt").symbols == load_lm_checkpoint(
        trained / "checkpoint_last.pt")["vocabulary"]["symbols"]


# ---------------------------------------------------------------------------------------- refusals
def _refused(capsys, needle: str, *argv: str) -> None:
    capsys.readouterr()
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


def test_mismatched_tasks_are_refused_in_one_line_writing_nothing(work, trained, tmp_path, capsys):
    run = tmp_path / "never"
    (tmp_path / "t.yml").write_text(yaml.safe_dump({"encoder_embed_dim": 512, "decoder_embed_dim": 512}))
    enc_space = {**SPACE, "choices": {**SPACE["choices"], "encoder_embed_dim": [16]}}
    (tmp_path / "enc.yaml").write_text(yaml.safe_dump(enc_space))
    lm = [f"space={work / 'space.yaml'}", f"subnet={work / 'arch.yml'}", f"data={work / 'data'}", f"save_dir={run}"]
    _refused(capsys, "a translation training config, not a decoder-only LM one",
             "train", "--task", "lm", "--config", "tiny-cpu", *lm)
    _refused(capsys, "a decoder-only LM training config (task: lm), not a translation one",
             "train", "--task", "translation", "--config", "lm-tiny", *lm)
    _refused(capsys, "a translation config, not a decoder-only LM one", "train", "--task", "lm", *lm,
             f"subnet={tmp_path / 't.yml'}")
    _refused(capsys, "a translation space, not a decoder-only LM one", "train", "--task", "lm", *lm, "space=tiny")
    _refused(capsys, "encoder key(s) encoder_embed_dim", "train", "--task", "lm", *lm, f"space={tmp_path / 'enc.yaml'}")
    _refused(capsys, "subnet is not set", "train", "--task", "lm", f"save_dir={run}")
    _refused(capsys, "a decoder-only LM data directory", "train", "--config", "tiny-cpu", f"data={work / 'data'}",
             f"save_dir={run}")
    assert not run.exists()
    model = trained / "checkpoint_last.pt"
    _refused(capsys, "a decoder-only LM checkpoint: score it with --ppl", "evaluate", "--model", str(model),
             "--data", str(work / "data"))
    fake = tmp_path / "model.pt"
    save_torch({"format": "hat-standalone", "version": 1}, fake)
    _refused(capsys, "not a decoder-only LM checkpoint", "evaluate", "--ppl", "--model", str(fake),
             "--data", str(work / "data"))
    _refused(capsys, "--config scores translations", "evaluate", "--ppl", "--model", str(model),
             "--data", str(work / "data"), "--config", str(work / "arch.yml"))
    out = tmp_path / "exp"
    _refused(capsys, "--quantize does not apply", "export", "--checkpoint", str(model), "--format", "onnx",
             "--quantize", "int8", "--out", str(out))
    _refused(capsys, "exports to --format onnx only", "export", "--checkpoint", str(model), "--out", str(out))
    assert not out.exists()


def test_resuming_another_architecture_is_refused(work, trained, tmp_path, capsys):
    other = tmp_path / "other.yml"
    other.write_text(yaml.safe_dump({**ARCH, "embed_dim": 16}))
    _refused(capsys, "checkpoint has another lm_config", "train", "--task", "lm", f"space={work / 'space.yaml'}",
             f"subnet={other}", f"data={work / 'data'}", f"save_dir={trained}", *TRAIN, "max_updates=80")
    assert load_lm_checkpoint(trained / "checkpoint_last.pt")["update"] == 60


def test_bf16_autocast_trains_with_fp32_weights_and_fp16_is_refused(work, trained, tmp_path, capsys):
    run = tmp_path / "bf16"
    assert _train(work, run, "max_updates=40", "amp=bf16") == 0
    assert "amp bf16" in capsys.readouterr().err
    bf16 = _logged(run, "valid")
    assert [v["update"] for v in bf16] == [20, 40] and bf16[-1]["ppl"] < bf16[0]["ppl"] < 64  # 64: knowing nothing
    ckpt = load_lm_checkpoint(run / "checkpoint_last.pt")
    assert ckpt["config"]["amp"] == "bf16" and all(v.dtype == torch.float32 for v in ckpt["model"].values()
                                                   if v.is_floating_point())
    _refused(capsys, "amp", "train", "--task", "lm", f"space={work / 'space.yaml'}", f"subnet={work / 'arch.yml'}",
             f"data={work / 'data'}", f"save_dir={tmp_path / 'fp16'}", *TRAIN, "amp=fp16")
    assert not (tmp_path / "fp16").exists()
