"""`hat prepare sample|debian|text|mono`: build a training-ready data directory (see hat.data.prepare;
`mono`, a decoder-only LM's monolingual text: hat.data.prepare_lm)."""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

from hat.data.dictionary import Dictionary
from hat.data.prepare import Vocabulary, prepare_debian, prepare_sample, prepare_text, summary
from hat.data.prepare_lm import mono_summary, prepare_mono
from hat.errors import DataError

SAMPLE_EXAMPLES = """examples:
  hat prepare sample --out data/sample.de-en
"""
DEBIAN_EXAMPLES = """examples:
  hat prepare debian --pair de-en --out data/debian.de-en
  hat prepare debian --pair fr-en --out data/debian.fr-en --vocab-size 16000
"""
TEXT_EXAMPLES = """examples:
  # your own raw parallel text: corpus/train.de + corpus/train.en, likewise valid and test
  hat prepare text --src de --tgt en --trainpref corpus/train --validpref corpus/valid \\
      --testpref corpus/test --out data/mine.de-en
  # a test set of your own in the vocabulary of a trained model (then: hat evaluate --data data/mytest)
  hat prepare text --src de --tgt en --testpref mytest --spm-model export/model.pt --out data/mytest
  # fairseq's prepare-wmt14en2de.sh output carries BPE markers (@@ ): strip them
  hat prepare text --src en --tgt de --trainpref wmt14/train --validpref wmt14/valid --testpref wmt14/test \\
      --remove-bpe --vocab-size 32000 --out data/wmt14.en-de
"""
MONO_EXAMPLES = """examples:
  # your own monolingual text, one sentence or paragraph per line, for a decoder-only LM
  hat prepare mono --input corpus.txt --lang en --out data/mine.lm
  hat prepare mono --input corpus.txt --valid-share 0.05 --test-share 0.05 --vocab-size 8000 --out data/mine.lm
  # new text in the vocabulary of a trained LM (then: hat evaluate --ppl --data data/other.lm)
  hat prepare mono --input other.txt --lang en --spm-model checkpoints/lm/checkpoint_best.pt --out data/other.lm
  # (a parallel directory, e.g. hat prepare debian's, trains an LM on its target side as it is)
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--vocab-size", type=int, default=8000, help="joint SentencePiece BPE vocabulary size")
    p.add_argument("--seed", type=int, default=1, help="random seed (SentencePiece sampling; debian: the split)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="build a binarized parallel corpus (or monolingual LM text)",
                       description="Build raw splits, a joint SentencePiece model, dictionaries and binarized data.",
                       epilog=SAMPLE_EXAMPLES + DEBIAN_EXAMPLES.replace("examples:\n", ""))
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True

    s = kinds.add_parser("sample", help="the bundled sample: 3,600 LibreOffice help pairs de-en (no download)",
                         description="A few thousand real German-English pairs shipped inside the package "
                                     "(LibreOffice help, MPL-2.0): enough to run the pipeline anywhere, "
                                     "not to train a useful model.", epilog=SAMPLE_EXAMPLES)
    _common(s)
    s.set_defaults(func=_run_sample)

    d = kinds.add_parser("debian", help="real de-en / fr-en corpus from Debian packages (needs apt-get)",
                         epilog=DEBIAN_EXAMPLES)
    d.add_argument("--pair", default="de-en", choices=["de-en", "fr-en", "en-de", "en-fr"], help="language pair")
    d.add_argument("--cache", default="data/cache", help="download/extraction cache (reused across runs)")
    d.add_argument("--valid-size", type=int, default=2000, help="validation pairs")
    d.add_argument("--test-size", type=int, default=2000, help="test pairs")
    d.add_argument("--max-chars", type=int, default=250, help="drop pairs with a side longer than this")
    _common(d)
    d.set_defaults(func=_run_debian)

    t = kinds.add_parser("text", help="your own raw parallel text (PREFIX.SRC / PREFIX.TGT [/ PREFIX.origin])",
                         description="Raw (detokenized) parallel text, one sentence per line; an optional "
                                     "PREFIX.origin tags each line for BLEU per origin. Warns when valid/test "
                                     "sources also occur in train.", epilog=TEXT_EXAMPLES)
    t.add_argument("--src", required=True, help="source language code (file suffix)")
    t.add_argument("--tgt", required=True, help="target language code (file suffix)")
    t.add_argument("--trainpref", help="training files prefix (required unless --spm-model reuses a vocabulary)")
    t.add_argument("--validpref", help="validation files prefix (required unless --spm-model)")
    t.add_argument("--testpref", help="test files prefix")
    t.add_argument("--spm-model", help="reuse this vocabulary instead of training one: a SentencePiece .model, "
                                       "a `hat prepare` directory, a `hat export` model.pt (or its directory) or "
                                       "a `hat train` checkpoint (its data directory's)")
    t.add_argument("--srcdict", help="source dictionary (fairseq dict.txt, or any --spm-model kind of path; "
                                     "default: --spm-model's dictionaries, else all its pieces)")
    t.add_argument("--tgtdict", help="target dictionary (default: --srcdict's target side, else --srcdict)")
    t.add_argument("--remove-bpe", action="store_true", help="strip fairseq/subword-nmt BPE markers ('@@ '); "
                                                              "without it BPE'd input is refused")
    _common(t)
    t.set_defaults(func=_run_text)

    m = kinds.add_parser("mono", help="your own monolingual text (one file) for a decoder-only language model",
                         description="Raw UTF-8 text, one sentence or paragraph per line (blank lines dropped): "
                                     "a SentencePiece model trained on it, its dictionary and token files with "
                                     "EOS after every line. The last --valid-share (and --test-share) of the "
                                     "lines, in order, are held out.", epilog=MONO_EXAMPLES)
    m.add_argument("--input", required=True, help="the text file")
    m.add_argument("--lang", default="text", help="language code (file suffix)")
    m.add_argument("--valid-share", type=float, default=0.05, help="share of the lines held out for validation")
    m.add_argument("--test-share", type=float, default=0.0, help="share of the lines held out for a test split")
    m.add_argument("--spm-model", help="reuse this vocabulary instead of training one: a `hat train --task lm` "
                                       "checkpoint, a prepared directory (an LM one, or a parallel one's --lang or "
                                       "target side), an LM ONNX export directory, or a SentencePiece .model")
    _common(m)
    m.set_defaults(func=_run_mono)


def _command(args: argparse.Namespace) -> str:
    """The equivalent command line, rebuilt from the parsed options (recorded in meta.json)."""
    parts = ["hat", "prepare", args.kind]
    for k, v in vars(args).items():
        if k in ("func", "command", "kind") or v is None or v is False:
            continue
        parts += [f"--{k.replace('_', '-')}"] + ([] if v is True else [shlex.quote(str(v))])
    return " ".join(parts)


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _run_sample(args: argparse.Namespace) -> int:
    _setup_logging()
    meta = prepare_sample(args.out, vocab_size=args.vocab_size, seed=args.seed, command=_command(args))
    print(summary(meta))
    print(f"wrote {args.out}")
    return 0


def _run_debian(args: argparse.Namespace) -> int:
    _setup_logging()
    t0 = time.time()
    meta = prepare_debian(args.out, args.pair, cache=args.cache, vocab_size=args.vocab_size,
                          valid_size=args.valid_size, test_size=args.test_size, seed=args.seed,
                          max_chars=args.max_chars, command=_command(args))
    print(summary(meta))
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")
    return 0


def _vocab_files(path: str, src: str, tgt: str) -> tuple[bytes, Dictionary | None, Dictionary | None]:
    """(SentencePiece model bytes, source dict, target dict) of a .model file, a `hat prepare`
    directory, a standalone export (file or directory) or a SuperTransformer checkpoint."""
    from hat.data.dataset import load_data  # noqa: PLC0415

    p = Path(path)
    if p.is_dir() and (p / "model.pt").is_file() and not (p / "meta.json").is_file():
        p = p / "model.pt"
    if p.is_dir():
        meta, sd, td = load_data(p)
        if (meta["src"], meta["tgt"]) not in ((src, tgt), (tgt, src)):
            raise DataError(f"{p}: prepared for {meta['src']}-{meta['tgt']}, not {src}-{tgt}")
        if not (p / "spm.model").is_file():
            raise DataError(f"{p / 'spm.model'}: SentencePiece model not found")
        return (p / "spm.model").read_bytes(), *((sd, td) if meta["src"] == src else (td, sd))
    if not p.is_file():
        raise DataError(f"{p}: no such SentencePiece model, data directory or model file")
    head = p.read_bytes()[:4]
    if head != b"PK\x03\x04":  # torch files are zip archives; anything else is read as a SentencePiece model
        from hat.data.tokenizer import load_spm  # noqa: PLC0415

        load_spm(p)  # refuses a file that is not one
        return p.read_bytes(), None, None
    from hat.export.standalone import FORMAT, dict_from_list  # noqa: PLC0415
    from hat.files import load_torch  # noqa: PLC0415
    from hat.model.checkpoint import FORMAT as SUPER_FORMAT  # noqa: PLC0415

    state = load_torch(p, "model file")
    fmt = state.get("format") if isinstance(state, dict) else None
    if fmt == FORMAT:
        if {state["src_lang"], state["tgt_lang"]} != {src, tgt}:
            raise DataError(f"{p}: translates {state['src_lang']}-{state['tgt_lang']}, not {src}-{tgt}")
        sd, td = dict_from_list(state["src_dict"], str(p)), dict_from_list(state["tgt_dict"], str(p))
        return state["spm_model"], *((sd, td) if state["src_lang"] == src else (td, sd))
    if fmt == SUPER_FORMAT and (state.get("config") or {}).get("data"):
        return _vocab_files(state["config"]["data"], src, tgt)
    raise DataError(f"{p}: not a SentencePiece model, a hat standalone model or a hat checkpoint with its data")


def vocabulary_from(args: argparse.Namespace) -> Vocabulary | None:
    """The vocabulary `--spm-model/--srcdict/--tgtdict` point at (None: train one)."""
    if not (args.spm_model or args.srcdict or args.tgtdict):
        return None
    src, tgt = args.src, args.tgt

    def is_dict(path: str | None) -> bool:
        return bool(path) and Path(path).is_file() and Path(path).suffix == ".txt"

    if not args.spm_model and is_dict(args.srcdict):
        raise DataError(f"{args.srcdict}: a dictionary file needs --spm-model (the SentencePiece model of its pieces)")
    spm_bytes, sd, td = _vocab_files(args.spm_model or args.srcdict or args.tgtdict, src, tgt)
    if args.srcdict:
        sd, td = ((Dictionary.load(args.srcdict), None) if is_dict(args.srcdict)
                  else _vocab_files(args.srcdict, src, tgt)[1:])
    if args.tgtdict:
        td = Dictionary.load(args.tgtdict) if is_dict(args.tgtdict) else _vocab_files(args.tgtdict, src, tgt)[2]
    return Vocabulary(spm_bytes, sd, td, " ".join(x for x in (args.spm_model, args.srcdict, args.tgtdict) if x))


def _run_text(args: argparse.Namespace) -> int:
    _setup_logging()
    meta = prepare_text(args.out, args.src, args.tgt, args.trainpref, args.validpref, args.testpref,
                        vocab_size=args.vocab_size, seed=args.seed, command=_command(args),
                        vocab=vocabulary_from(args), remove_bpe=args.remove_bpe)
    print(summary(meta))
    print(f"wrote {args.out}")
    return 0


def lm_vocabulary(path: str, lang: str) -> Vocabulary:
    """The vocabulary (SentencePiece model and dictionary) of a decoder-only LM checkpoint, an LM
    ONNX export, a prepared directory (an LM one; a parallel one's `lang` side, else its target
    side, as `hat train --task lm` reads it) or a SentencePiece .model (its dictionary: counted on
    the new text)."""
    p = Path(path)
    if p.is_dir() and (p / "lm_onnx.json").is_file():
        dicts = sorted(p.glob("dict.*.txt"))
        if len(dicts) != 1 or not (p / "spm.model").is_file():
            raise DataError(f"{p}: an LM export without its spm.model and one dict.LANG.txt")
        return Vocabulary((p / "spm.model").read_bytes(), Dictionary.load(dicts[0]), None, str(p))
    if p.is_dir():
        from hat.data.dataset import read_meta  # noqa: PLC0415
        from hat.data.lm import lm_side  # noqa: PLC0415

        meta = read_meta(p)  # lm_side checks its keys
        langs = (meta.get("lang"),) if meta.get("task") == "lm" else (meta.get("src"), meta.get("tgt"))
        _, d = lm_side(p, lang if lang in langs else None)
        if not (p / "spm.model").is_file():
            raise DataError(f"{p / 'spm.model'}: SentencePiece model not found")
        return Vocabulary((p / "spm.model").read_bytes(), d, None, str(p))
    if not p.is_file():
        raise DataError(f"{p}: no such LM checkpoint, data directory, LM export or SentencePiece model")
    from hat.model.lm_checkpoint import is_lm_checkpoint, load_lm_checkpoint  # noqa: PLC0415

    if is_lm_checkpoint(p):
        v = load_lm_checkpoint(p)["vocabulary"]
        return Vocabulary(bytes(v["spm_model"]), Dictionary.from_counts((s, 0) for s in v["symbols"][4:]), None, str(p))
    if p.read_bytes()[:4] == b"PK\x03\x04":
        raise DataError(f"{p}: a torch file that is not a decoder-only LM checkpoint (`hat train --task lm` writes one)")
    from hat.data.tokenizer import load_spm  # noqa: PLC0415

    load_spm(p)  # refuses a file that is not one
    return Vocabulary(p.read_bytes(), None, None, str(p))


def _run_mono(args: argparse.Namespace) -> int:
    _setup_logging()
    vocab = lm_vocabulary(args.spm_model, args.lang) if args.spm_model else None
    meta = prepare_mono(args.out, args.input, args.lang, valid_share=args.valid_share, test_share=args.test_share,
                        vocab_size=args.vocab_size, seed=args.seed, command=_command(args), vocab=vocab)
    print(mono_summary(meta))
    print(f"wrote {args.out}")
    return 0
