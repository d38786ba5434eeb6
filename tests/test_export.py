"""Standalone export: SuperTransformer checkpoint -> model.pt -> hat.load, identical outputs.

The helpers here (tiny corpus, briefly trained SuperTransformer checkpoint in `hat train`'s
format, a SubConfig exercising every per-layer gene) are shared by test_evaluate, test_onnx
and test_fairseq.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import hat
from hat.cli import main
from hat.data import ParallelDataset, batch_by_tokens, collate
from hat.errors import CheckpointError
from hat.model import ModelArgs, SuperTransformer, beam_search, greedy_search
from hat.model.generate import left_pad
from hat.space import DesignSpace, SubConfig, save_subconfig

WORDS = {"haus": "house", "katze": "cat", "hund": "dog", "groß": "big", "klein": "small",
         "rot": "red", "das": "the", "ist": "is", "sehr": "very", "garten": "garden",
         "baum": "tree", "grün": "green", "und": "and", "schnell": "fast", "alt": "old"}

SPACE = {
    "name": "test-export",
    "super": {"encoder_embed_dim": 64, "decoder_embed_dim": 64, "encoder_ffn_embed_dim": 128,
              "decoder_ffn_embed_dim": 128, "encoder_layer_num": 3, "decoder_layer_num": 3,
              "encoder_attention_heads": 4, "decoder_attention_heads": 4, "qkv_dim": 32},
    "choices": {"encoder_embed_dim": [64, 48], "decoder_embed_dim": [64, 48], "encoder_layer_num": [2, 3],
                "decoder_layer_num": [1, 2, 3], "encoder_ffn_embed_dim": [128, 96, 64],
                "decoder_ffn_embed_dim": [128, 96, 64], "encoder_self_attention_heads": [4, 2],
                "decoder_self_attention_heads": [4, 2], "decoder_ende_attention_heads": [4, 2],
                "decoder_arbitrary_ende_attn": [-1, 1, 2]},
}
# different enc/dec widths (shared table sliced two ways), per-layer FFN/heads, arbitrary attention
SUB = SubConfig(
    encoder_embed_dim=48, decoder_embed_dim=64, encoder_layer_num=3, decoder_layer_num=2,
    encoder_ffn_embed_dim=(128, 64, 96), encoder_self_attention_heads=(2, 4, 2),
    decoder_ffn_embed_dim=(96, 64), decoder_self_attention_heads=(4, 2), decoder_ende_attention_heads=(2, 4),
    decoder_arbitrary_ende_attn=(1, 2),
)


def corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    keys = sorted(WORDS)
    de, en = [], []
    for _ in range(n):
        ws = [rng.choice(keys) for _ in range(rng.randint(2, 7))]
        if rng.random() < 0.3:
            ws[0] = ws[0] + "-" + rng.choice(keys)  # hyphenated compounds for compound splitting
        de.append(" ".join(ws).capitalize() + ".")
        en.append(" ".join("-".join(WORDS[p] for p in w.split("-")) for w in ws).capitalize() + ".")
    return de, en


def _write(prefix: Path, de, en, origin=None) -> str:
    prefix.with_suffix(".de").write_text("\n".join(de) + "\n", encoding="utf-8")
    prefix.with_suffix(".en").write_text("\n".join(en) + "\n", encoding="utf-8")
    if origin is not None:
        prefix.with_suffix(".origin").write_text("\n".join(origin) + "\n", encoding="utf-8")
    return str(prefix)


def make_data(tmp: Path, n_train: int = 400, n_test: int = 40) -> Path:
    de, en = corpus(n_train, 0)
    train = _write(tmp / "train", de, en, ["a" if i % 3 else "b" for i in range(n_train)])
    valid = _write(tmp / "valid", *corpus(20, 1))
    tde, ten = corpus(n_test, 2)
    test = _write(tmp / "test", tde, ten, ["ding" if i % 4 else "wesnoth" for i in range(n_test)])
    out = tmp / "data"
    rc = main(["prepare", "text", "--src", "de", "--tgt", "en", "--trainpref", train, "--validpref", valid,
               "--testpref", test, "--out", str(out), "--vocab-size", "120"])
    assert rc == 0
    return out


def make_checkpoint(tmp: Path, data: Path, steps: int = 50, seed: int = 0) -> Path:
    """A SuperTransformer briefly trained on `data` (mostly the test subnet), saved as `hat train` does."""
    from hat.files import save_torch
    from hat.model.checkpoint import FORMAT, FORMAT_VERSION

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest on a loaded 2-core machine
    ds = ParallelDataset(data, "train")
    space = DesignSpace.from_dict(SPACE)
    args = ModelArgs(len(ds.src_dict), len(ds.tgt_dict), dropout=0.0, attention_dropout=0.0)
    model = SuperTransformer(space, args)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    batches = batch_by_tokens(ds.src_sizes, ds.tgt_sizes, 600, seed=seed)
    rng = random.Random(seed)
    model.train()
    for step in range(steps):
        b = collate([ds[i] for i in batches[step % len(batches)]], 1, 2)
        cfg = space.sample(rng) if step % 5 == 4 else SUB
        logits = model(b["src_tokens"], b["src_lengths"], b["prev_output_tokens"], config=cfg)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), b["target"].view(-1), ignore_index=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    state = {"format": FORMAT, "version": FORMAT_VERSION, "model": model.state_dict(), "space": space.to_dict(),
             "model_args": args.to_dict(), "update": steps, "config": {"data": str(data)}}
    path = tmp / "checkpoints" / "checkpoint_best.pt"
    save_torch(state, [path])
    return path


def make_subconfig(tmp: Path) -> Path:
    path = tmp / "subnet.yml"
    save_subconfig(SUB, path)
    return path


_SHARED: dict = {}


def shared_setup(tmp_path_factory) -> dict:
    """Data, checkpoint, SubConfig and standalone export, built once per test session."""
    if _SHARED:
        return _SHARED
    tmp = tmp_path_factory.mktemp("export")
    data = make_data(tmp)
    ckpt = make_checkpoint(tmp, data)
    cfg = make_subconfig(tmp)
    out = tmp / "std"
    assert main(["export", "--checkpoint", str(ckpt), "--config", str(cfg), "--format", "standalone",
                 "--out", str(out)]) == 0
    _SHARED.update({"tmp": tmp, "data": data, "ckpt": ckpt, "cfg": cfg, "model": out / "model.pt"})
    return _SHARED


@pytest.fixture
def setup(tmp_path_factory) -> dict:
    return shared_setup(tmp_path_factory)


def _super(ckpt: Path) -> SuperTransformer:
    from hat.model import load_super_checkpoint

    model, _ = load_super_checkpoint(ckpt)
    return model.configure(SUB).eval()


def test_standalone_roundtrip_identical_logits_and_beams(setup):
    tr = hat.load(setup["model"])
    assert not tr.model.training and tr.config == SUB
    sup = _super(setup["ckpt"])
    ds = ParallelDataset(setup["data"], "test")
    b = collate([ds[i] for i in range(8)], 1, 2)
    with torch.no_grad():
        ref = sup(b["src_tokens"], b["src_lengths"], b["prev_output_tokens"])
        got = tr.model(b["src_tokens"], b["src_lengths"], b["prev_output_tokens"])
    assert torch.equal(ref, got)
    hs = beam_search(sup, b["src_tokens"], b["src_lengths"], beam=4, lenpen=0.6)
    hg = beam_search(tr.model, b["src_tokens"], b["src_lengths"], beam=4, lenpen=0.6)
    assert [h[0].tokens for h in hs] == [h[0].tokens for h in hg]
    assert [h[0].score for h in hs] == pytest.approx([h[0].score for h in hg], abs=1e-6)


def test_standalone_translate_needs_no_data_dir(setup, tmp_path):
    # copy the model alone somewhere else: the vocabulary and SentencePiece model travel inside
    moved = tmp_path / "elsewhere.pt"
    moved.write_bytes(setup["model"].read_bytes())
    tr = hat.load(moved)
    src = ["Das haus ist rot.", "Der hund."]
    out = tr.translate(src, beam=4, lenpen=0.6)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
    assert out == [tr.translate([s], beam=4, lenpen=0.6)[0] for s in src]  # batching does not matter
    # translate = SentencePiece + dictionary in, the model's own search, dictionary + SentencePiece out
    ids = [torch.tensor(tr.src_dict.encode_pieces(tr.tokenizer.sp.encode(s, out_type=str))) for s in src]
    by_hand = beam_search(tr.model, left_pad(ids, 1), beam=4, lenpen=0.6)
    assert out == [tr.tgt_tokenizer.sp.decode_pieces(tr.tgt_dict.string(h[0].tokens).split()) for h in by_hand]
    greedy = [h.tokens for h in greedy_search(tr.model, left_pad(ids[:1], 1))]
    assert tr.translate(src[:1], beam=1) == [tr.tgt_tokenizer.decode(greedy[0])]
    assert tr.src_lang == "de" and tr.tgt_lang == "en" and tr.meta["update"] == 50


def test_reexport_of_standalone_is_identical(setup, tmp_path):
    assert main(["export", "--checkpoint", str(setup["model"]), "--format", "standalone", "--out", str(tmp_path)]) == 0
    a, b = hat.load(setup["model"]).model.state_dict(), hat.load(tmp_path / "model.pt").model.state_dict()
    assert list(a) == list(b) and len(a) > 0
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong-dict"])
def test_corrupt_standalone_is_refused(setup, tmp_path, damage, capsys):
    raw = setup["model"].read_bytes()
    bad = tmp_path / "bad.pt"
    if damage == "truncate":
        bad.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        bad.write_bytes(b"not a model" * 100)
    elif damage == "empty":
        bad.write_bytes(b"")
    else:
        torch.save({"format": "something-else"}, bad)
    with pytest.raises(CheckpointError, match=str(bad)):
        hat.load(bad)
    rc = main(["evaluate", "--model", str(bad), "--data", str(setup["data"])])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and str(bad) in err


def test_export_errors_are_one_line(setup, tmp_path, capsys):
    rc = main(["export", "--checkpoint", str(setup["ckpt"]), "--format", "standalone", "--out", str(tmp_path)])
    assert rc == 2 and "--config" in capsys.readouterr().err
    bad_cfg = tmp_path / "big.yml"
    save_subconfig(SubConfig.from_dict({**SUB.to_dict(), "encoder_embed_dim": 80}), bad_cfg)
    rc = main(["export", "--checkpoint", str(setup["ckpt"]), "--config", str(bad_cfg), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "encoder_embed_dim" in err
    rc = main(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--config", str(setup["cfg"]),
               "--out", str(tmp_path)])
    assert rc == 2 and "missing.pt" in capsys.readouterr().err


def test_import_hat_is_light():
    import subprocess
    import sys

    code = "import sys, hat; print('torch' in sys.modules); print(callable(hat.load))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
