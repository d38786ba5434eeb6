"""BLEU of a SubTransformer on a test set: decoding (the translator's `generate`) and sacrebleu.

* `score(hyps, refs, origins=None, tokenized=False)`: detokenized BLEU and chrF (sacrebleu,
  with signatures), BLEU per origin tag, and optionally HAT-style tokenized BLEU.
* `evaluate(translator, data_dir, subset, ...)`: both, on a `hat prepare` directory.
* `evaluate_text(translator, src, ref, origin=None, ...)`: both, on raw parallel text files
  (`hat evaluate --src F --ref F`), with the model's own tokenizer; empty source lines give
  empty hypotheses, as in `hat translate`.

The translator is any export `hat.export.runtimes.open_model` opens (standalone float32 or int8,
ONNX, CTranslate2): decoding goes through its `generate` / `translate`.

Tokenized BLEU (`tokenized=True`), as HAT reports it: hypotheses and references are the
SentencePiece-DETOKENIZED text, tokenized with sacrebleu's `13a` (Moses-like; or `intl`),
then compound-split as HAT's `compound_split_bleu.sh` does (`a-b` -> `a ##AT##-##AT## b`),
then scored on those whitespace tokens (sacrebleu `tokenize='none'`, i.e. fairseq-score /
multi-bleu). Scoring on SentencePiece pieces would reward getting subwords right and is not
comparable with published numbers, so it is not offered.

* `evaluate_ppl(checkpoint, data_dir, subset)`: perplexity of a decoder-only LM (`hat evaluate
  --ppl`) on one split, in blocks of the context it was trained on.
"""
from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

from hat.errors import DataError

_COMPOUND = re.compile(r"(\S)-(\S)")


def compound_split(line: str) -> str:
    """HAT/fairseq `compound_split_bleu.sh`: perl -ple 's{(\\S)-(\\S)}{$1 ##AT##-##AT## $2}g'."""
    return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


# ------------------------------------------------------------------------------------------ scoring
def _bleu(hyps: list[str], refs: list[str], tokenize: str):
    from sacrebleu.metrics import BLEU

    m = BLEU(tokenize=tokenize)
    return m.corpus_score(hyps, [refs]), m


def score(
    hyps: Sequence[str],
    refs: Sequence[str],
    origins: Sequence[str] | None = None,
    *,
    tokenized: bool = False,
    tok: str = "13a",
    compound: bool = True,
) -> dict:
    """BLEU/chrF of detokenized `hyps` against `refs` (one reference each), per origin too.

    Returns {"bleu", "chrf", "bleu_signature", "chrf_signature", "bleu_details", "n",
    "per_origin": {tag: {"bleu", "n"}}, and with `tokenized`: "tok_bleu", "tok_bleu_method"}.
    """
    from sacrebleu.metrics import CHRF

    hyps, refs = list(hyps), list(refs)
    if len(hyps) != len(refs):
        raise DataError(f"{len(hyps)} hypotheses but {len(refs)} references")
    res, bleu = _bleu(hyps, refs, "13a")
    chrf_m = CHRF()
    chrf = chrf_m.corpus_score(hyps, [refs])
    out: dict = {
        "n": len(hyps),
        "bleu": round(res.score, 4),
        "chrf": round(chrf.score, 4),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf_m.get_signature()),
        "bleu_details": {
            "precisions": [round(p, 4) for p in res.precisions],
            "bp": round(res.bp, 4),
            "sys_len": res.sys_len,
            "ref_len": res.ref_len,
        },
    }
    if origins is not None:
        if len(origins) != len(hyps):
            raise DataError(f"{len(origins)} origin tags but {len(hyps)} hypotheses")
        groups: dict[str, list[int]] = OrderedDict()
        for i, tag in enumerate(origins):
            groups.setdefault(tag, []).append(i)
        out["per_origin"] = {
            tag: {"bleu": round(_bleu([hyps[i] for i in ix], [refs[i] for i in ix], "13a")[0].score, 4), "n": len(ix)}
            for tag, ix in sorted(groups.items())
        }
    if tokenized:
        from sacrebleu.metrics import BLEU

        tokenizer = BLEU(tokenize=tok).tokenizer

        def prep(s: str) -> str:
            t = tokenizer(s.strip())
            return compound_split(t) if compound else t

        th, tr = [prep(h) for h in hyps], [prep(r) for r in refs]
        tres, _ = _bleu(th, tr, "none")
        out["tok_bleu"] = round(tres.score, 4)
        out["tok_bleu_method"] = f"sacrebleu tokenize={tok}" + (" + compound split (##AT##-##AT##)" if compound else "") + ", scored with tokenize=none"
    return out


# ------------------------------------------------------------------------------------------ test sets
def read_references(data_dir: Path, subset: str, tgt_lang: str, n: int, fallback=None) -> list[str]:
    """Raw (detokenized) references from `raw/{subset}.{tgt}`; `fallback()` when absent."""
    p = data_dir / "raw" / f"{subset}.{tgt_lang}"
    if p.is_file():
        refs = p.read_text(encoding="utf-8").split("\n")
        if refs and refs[-1] == "":
            refs.pop()
        if len(refs) != n:
            raise DataError(f"{p} has {len(refs)} lines but the {subset} split has {n} sentences")
        return refs
    if fallback is None:
        raise DataError(f"{p}: raw references not found")
    return fallback()


def evaluate(
    translator,
    data_dir: str | Path,
    subset: str = "test",
    *,
    limit: int | None = None,
    hyps: Sequence[str] | None = None,
    progress: bool = True,
    **options,
) -> tuple[dict, list[str]]:
    """Decode (or take `hyps`) and score `subset` of a prepared directory; returns (results, hyps).
    `options`: decoding (`Translator.generate`'s) and scoring (`score`'s) keywords."""
    from hat.data.dataset import ParallelDataset

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found")
    if not (data_dir / f"{subset}.idx").exists() and not any(data_dir.glob(f"{subset}.*.idx")):
        have = sorted({p.name.split(".")[0] for p in data_dir.glob("*.idx")})
        raise DataError(f"{data_dir}: no subset {subset!r} (have: {', '.join(have) or 'none'})")
    ds = ParallelDataset(data_dir, subset)
    translator.check_vocab(ds.src_dict, ds.tgt_dict, str(data_dir))
    n = len(ds) if limit is None else min(limit, len(ds))
    refs = read_references(
        data_dir, subset, ds.tgt_lang, len(ds),
        fallback=lambda: [translator.tgt_tokenizer.decode(ds.tgt[i].tolist()) for i in range(len(ds))],
    )[:n]
    origins = ds.origins[:n] if ds.origins is not None else None

    def decode(**kw) -> tuple[list[str], int]:
        sources = [ds.src[i] for i in range(n)]
        ids = translator.generate(sources, progress=progress, desc=subset, **kw)
        truncated = sum(len(x) > translator.model.args.max_positions for x in sources)  # generate() cut them
        return [translator.tgt_tokenizer.decode(h) for h in ids], truncated

    res, hyps = _decode_and_score(decode, refs, origins, hyps, f"{n} sentences of {subset}", **options)
    res.update({"data": str(data_dir), "subset": subset, "src": ds.src_lang, "tgt": ds.tgt_lang,
                "model": translator.source})
    return res, hyps


def evaluate_text(
    translator,
    src: str | Path,
    ref: str | Path,
    origin: str | Path | None = None,
    *,
    limit: int | None = None,
    hyps: Sequence[str] | None = None,
    progress: bool = True,
    **options,
) -> tuple[dict, list[str]]:
    """`evaluate` on raw parallel text (`src` and `ref` one sentence per line, optional `origin`
    tags per line), no data directory: the model's own SentencePiece model and dictionaries."""
    from hat.data.text import read_lines

    sources, refs = read_lines(src, allow_empty_lines=True), read_lines(ref, allow_empty_lines=True)
    if len(sources) != len(refs):
        raise DataError(f"{ref}: {len(refs)} lines but {src} has {len(sources)}")
    origins = None
    if origin is not None:
        origins = read_lines(origin)
        if len(origins) != len(sources):
            raise DataError(f"{origin}: {len(origins)} lines but {src} has {len(sources)}")
    n = len(sources) if limit is None else min(limit, len(sources))

    def decode(**kw) -> tuple[list[str], int]:
        cut: list[int] = []
        hyps = translator.translate(sources[:n], progress=progress, on_truncate=lambda i, _: cut.append(i), **kw)
        return hyps, len(cut)

    res, hyps = _decode_and_score(decode, refs[:n], origins[:n] if origins else None, hyps, f"{n} lines of {src}",
                                  **options)
    res.update({"data": str(src), "subset": "text", "src_file": str(src), "ref_file": str(ref),
                "src": translator.src_lang, "tgt": translator.tgt_lang, "model": translator.source})
    return res, hyps


def _decode_and_score(
    decode,
    refs: list[str],
    origins: Sequence[str] | None,
    hyps: Sequence[str] | None,
    what: str,
    *,
    tokenized: bool = False,
    tok: str = "13a",
    compound: bool | None = None,
    **decoding,
) -> tuple[dict, list[str]]:
    """`decode(**decoding options)` -> (hypotheses, sources cut to fit), unless `hyps` are given,
    and `score` against `refs`. `decoding`: `hat.model.generate.Decoding`'s fields (an unknown
    keyword is a TypeError)."""
    import time
    from dataclasses import asdict

    from hat.model.generate import Decoding

    d = Decoding(**decoding)
    t0 = time.time()
    truncated = 0
    if hyps is None:
        hyps, truncated = decode(**asdict(d))
    else:
        hyps = list(hyps)
        if len(hyps) != len(refs):
            raise DataError(f"{len(hyps)} hypotheses for {what}")
    elapsed = time.time() - t0
    res = score(hyps, refs, origins, tokenized=tokenized, tok=tok, compound=True if compound is None else compound)
    res.update({"beam": d.beam, "lenpen": d.lenpen, "max_len_a": d.max_len_a, "max_len_b": d.max_len_b,
                "seconds": round(elapsed, 3), "truncated_sources": truncated})
    return res, hyps


def paired_bleu_pvalue(base_hyps: Sequence[str], hyps: Sequence[str], refs: Sequence[str],
                       samples: int = 1000) -> float:
    """p-value that `hyps` and `base_hyps` differ in BLEU only by chance (sacrebleu's paired
    bootstrap resampling over the same sentences, Koehn 2004; sacrebleu seeds it: repeatable)."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    test = PairedTest([("base", list(base_hyps)), ("other", list(hyps))], {"BLEU": BLEU()}, [list(refs)],
                      test_type="bs", n_samples=samples)
    _, scores = test()
    base, other = scores["BLEU"]
    if base.score == other.score:  # sacrebleu counts resamples strictly above the observed difference:
        return 1.0  # a difference of 0 would read p = 1/(samples+1), "significant", for identical outputs
    return float(other.p_value)


def pvalue_text(p: float, samples: int = 1000) -> str:
    """`p=0.030`, or `p<0.001` at the floor of a `samples`-sample bootstrap ((0 + 1) / (samples + 1)):
    a p-value that small is a bound, not a measurement."""
    floor = 1.0 / (samples + 1)
    return f"p<{1 / samples:g}" if p <= floor * (1 + 1e-9) else f"p={p:.3f}"


def evaluate_ppl(checkpoint: str | Path, data_dir: str | Path, subset: str = "valid", *, batch_size: int = 16,
                 limit: int | None = None, device: str = "cpu") -> dict:
    """Perplexity of the LM in `checkpoint` (a `hat train --task lm` file) over `subset` of a
    prepared directory (its first `limit` blocks), cut into blocks of the trained context as in
    training; the directory's dictionary must be the one the model was trained with."""
    from hat.data.lm import LMBlocks, lm_side
    from hat.model.lm import perplexity
    from hat.model.lm_checkpoint import load_lm

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found")
    model, ckpt = load_lm(checkpoint, device)
    lang, dictionary = lm_side(data_dir, ckpt["vocabulary"].get("lang"))
    if dictionary.symbols != ckpt["vocabulary"]["symbols"]:
        raise DataError(f"{data_dir}: its {lang} dictionary is not the one {checkpoint} was trained with "
                        "(prepare the text with its vocabulary: hat prepare mono --spm-model CHECKPOINT)")
    if not (data_dir / f"{subset}.{lang}.idx").is_file():
        have = sorted({p.name.split(".")[0] for p in data_dir.glob(f"*.{lang}.idx")})
        raise DataError(f"{data_dir}: no subset {subset!r} (have: {', '.join(have) or 'none'})")
    blocks = LMBlocks.from_data(data_dir, subset, ckpt["context"], model.embed_tokens.num_embeddings, lang)
    n = len(blocks) if limit is None else min(limit, len(blocks))
    t0 = time.time()
    ppl = perplexity(model, ((x.to(device), y.to(device)) for x, y in blocks.batches(batch_size, limit=n)))
    return {"model": str(checkpoint), "data": str(data_dir), "subset": subset, "lang": lang, "ppl": ppl,
            "nll": math.log(ppl), "tokens": n * blocks.context, "blocks": n, "context": blocks.context,
            "architecture": ckpt["lm_config"], "update": ckpt["update"], "seconds": round(time.time() - t0, 2)}
