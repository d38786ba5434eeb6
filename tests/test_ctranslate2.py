"""CTranslate2 export: the spec written from hat's modules decodes like hat (greedy and beam, one
sentence at a time), int8 is recorded and runs, and SubConfigs CTranslate2 cannot express are
refused with one line. Skipped without ctranslate2."""
from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch

pytest.importorskip("ctranslate2")

import hat  # noqa: E402
from hat.cli import main  # noqa: E402
from hat.export.ctranslate2_export import Ct2Translator, export_ctranslate2, unsupported  # noqa: E402
from hat.export.standalone import Translator, from_super_checkpoint  # noqa: E402
from hat.model import ModelArgs, SubTransformer  # noqa: E402
from hat.space import SubConfig  # noqa: E402
from test_export import SUB, shared_setup  # noqa: E402

# one head count per stack (encoder 2, decoder 4), the last encoder layer only; everything else
# heterogeneous: encoder 48 wide and decoder 64, per-layer FFN widths, qkv_dim 32 != embed dims
EXPRESSIBLE = SubConfig(
    encoder_embed_dim=48, decoder_embed_dim=64, encoder_layer_num=2, decoder_layer_num=2,
    encoder_ffn_embed_dim=(128, 64), encoder_self_attention_heads=(2, 2),
    decoder_ffn_embed_dim=(96, 64), decoder_self_attention_heads=(4, 4), decoder_ende_attention_heads=(4, 4),
    decoder_arbitrary_ende_attn=(-1, -1),
)


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    s = shared_setup(tmp_path_factory)
    tr = from_super_checkpoint(s["ckpt"], EXPRESSIBLE)
    out = s["tmp"] / "ct2"
    export_ctranslate2(tr, out)
    return {**s, "tr": tr, "ct2": out}


def _sources(ct, n: int = 12) -> list[torch.Tensor]:
    tr = ct["tr"]
    lines = (ct["tmp"] / "test.de").read_text(encoding="utf-8").splitlines()[:n]
    return [tr.encode(line) for line in lines]


@pytest.mark.parametrize("beam", [1, 4])
def test_ctranslate2_decodes_like_hat(ct, beam):
    src = _sources(ct)
    kw = dict(beam=beam, lenpen=0.6, max_len_a=1.2, max_len_b=10, max_sentences=1, progress=False)
    ours = ct["tr"].generate(src, **kw)
    theirs = hat.load(ct["ct2"]).generate(src, **kw)
    assert theirs == ours and all(ours)


def test_ctranslate2_files_and_int8(ct, tmp_path, capsys):
    out = tmp_path / "ct2-int8"
    model = tmp_path / "expressible.pt"
    ct["tr"].save(model)
    assert main(["export", "--checkpoint", str(model), "--format", "ctranslate2", "--quantize", "int8",
                 "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quantization"] == "int8"
    meta = json.loads((out / "hat-ctranslate2.json").read_text())
    assert meta["quantization"] == "int8" and SubConfig.from_dict(meta["config"]) == EXPRESSIBLE
    for name in ("model.bin", "config.json", "spm.model", "dict.de.txt", "dict.en.txt"):
        assert (out / name).is_file(), name
    assert (out / "model.bin").stat().st_size < 0.8 * (ct["ct2"] / "model.bin").stat().st_size
    tr = hat.load(out)
    assert isinstance(tr, Ct2Translator) and tr.quantization == "int8"
    src = (ct["tmp"] / "test.de").read_text(encoding="utf-8").splitlines()[:6]
    assert all(tr.translate(src))


def test_inexpressible_subconfigs_are_refused_in_one_line(ct, tmp_path, capsys):
    out = tmp_path / "ct2"
    assert main(["export", "--checkpoint", str(ct["model"]), "--format", "ctranslate2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CTranslate2 cannot express" in err
    for reason in ("encoder head counts differ", "decoder head counts differ", "arbitrary encoder-decoder attention"):
        assert reason in err
    assert not out.exists()
    args = ModelArgs(20, 20)
    for change, reason in (
        (dict(encoder_self_attention_heads=(2, 4)), "encoder head counts"),
        (dict(decoder_ende_attention_heads=(2, 2)), "decoder head counts"),  # self 4, cross 2
        (dict(decoder_arbitrary_ende_attn=(-1, 1)), "arbitrary"),
    ):
        model = SubTransformer(dataclasses.replace(EXPRESSIBLE, **change), args, 32, 64, 64)
        assert [r for r in unsupported(model) if reason in r]
    # one encoder layer: every gene means "the last encoder layer"
    one = dataclasses.replace(EXPRESSIBLE, encoder_layer_num=1, encoder_ffn_embed_dim=(128,),
                              encoder_self_attention_heads=(2,), decoder_arbitrary_ende_attn=(1, 2))
    assert unsupported(SubTransformer(one, args, 32, 64, 64)) == []
    assert unsupported(SubTransformer(SUB, args, 32, 64, 64))


def test_pre_norm_and_untied_embeddings_decode_like_hat(ct, tmp_path):
    """The other ModelArgs CTranslate2 can take: pre-norm with final LayerNorms, separate source /
    target tables and an output projection of its own (random weights: greedy still must agree)."""
    torch.manual_seed(0)
    tr = ct["tr"]
    V = len(tr.src_dict)
    args = ModelArgs(V, V, normalize_before=True, share_all_embeddings=False, share_decoder_input_output_embed=False,
                     dropout=0.0, attention_dropout=0.0)
    model = SubTransformer(EXPRESSIBLE, args, 32, 64, 64).eval()
    with torch.no_grad():
        for p in model.parameters():  # random, non-degenerate LayerNorms too
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    rnd = Translator(model, tr.spm_bytes, tr.src_dict, tr.tgt_dict, "de", "en")
    export_ctranslate2(rnd, tmp_path / "pre")
    rng = random.Random(0)
    src = [torch.tensor([rng.randrange(4, V) for _ in range(rng.randint(2, 9))] + [2]) for _ in range(8)]
    kw = dict(beam=1, max_len_a=0, max_len_b=8, max_sentences=1, progress=False)
    assert hat.load(tmp_path / "pre").generate(src, **kw) == rnd.generate(src, **kw)
