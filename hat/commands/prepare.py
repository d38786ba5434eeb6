"""`hat prepare debian|text`: build a training-ready data directory (see hat.data.prepare)."""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time

from hat.data.prepare import prepare_debian, prepare_text, summary


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--vocab-size", type=int, default=8000, help="joint SentencePiece BPE vocabulary size")
    p.add_argument("--seed", type=int, default=1)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="build a binarized parallel corpus",
                       description="Build raw splits, a joint SentencePiece model, dictionaries and binarized data.")
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True

    d = kinds.add_parser("debian", help="real de-en / fr-en corpus from Debian packages (needs apt-get)")
    d.add_argument("--pair", default="de-en", choices=["de-en", "fr-en", "en-de", "en-fr"])
    d.add_argument("--cache", default="data/cache", help="download/extraction cache (reused across runs)")
    d.add_argument("--valid-size", type=int, default=2000)
    d.add_argument("--test-size", type=int, default=2000)
    d.add_argument("--max-chars", type=int, default=250, help="drop pairs with a side longer than this")
    _common(d)
    d.set_defaults(func=_run_debian)

    t = kinds.add_parser("text", help="your own raw parallel text (PREFIX.SRC / PREFIX.TGT [/ PREFIX.origin])")
    t.add_argument("--src", required=True, help="source language code (file suffix)")
    t.add_argument("--tgt", required=True, help="target language code (file suffix)")
    t.add_argument("--trainpref", required=True)
    t.add_argument("--validpref", required=True)
    t.add_argument("--testpref")
    _common(t)
    t.set_defaults(func=_run_text)


def _command(args: argparse.Namespace) -> str:
    """The equivalent command line, rebuilt from the parsed options (recorded in meta.json)."""
    parts = ["hat", "prepare", args.kind]
    for k, v in vars(args).items():
        if k in ("func", "command", "kind") or v is None:
            continue
        parts += [f"--{k.replace('_', '-')}", shlex.quote(str(v))]
    return " ".join(parts)


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _run_debian(args: argparse.Namespace) -> int:
    _setup_logging()
    t0 = time.time()
    meta = prepare_debian(args.out, args.pair, cache=args.cache, vocab_size=args.vocab_size,
                          valid_size=args.valid_size, test_size=args.test_size, seed=args.seed,
                          max_chars=args.max_chars, command=_command(args))
    print(summary(meta))
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")
    return 0


def _run_text(args: argparse.Namespace) -> int:
    _setup_logging()
    meta = prepare_text(args.out, args.src, args.tgt, args.trainpref, args.validpref, args.testpref,
                        vocab_size=args.vocab_size, seed=args.seed, command=_command(args))
    print(summary(meta))
    print(f"wrote {args.out}")
    return 0
