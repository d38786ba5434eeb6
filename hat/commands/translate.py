"""`hat translate`: stream text through any export (standalone, int8, ONNX, CTranslate2)."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from hat.commands.settings import compute_device
from hat.errors import DataError, HatError
from hat.model.generate import DECODING, Decoding

EXAMPLES = """examples:
  hat translate --model export/model.pt --input news.de --output news.en
  hat translate --model export/onnx-int8 --input news.de --output news.en --threads 1
  hat translate --model export/ct2 --beam 1 --input news.de"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "translate", help="translate text line by line with an exported SubTransformer",
        description="Read source sentences one per line (stdin or --input), write one translation per line "
                    "(stdout or --output) in input order. Lines are batched by length as they arrive; empty lines "
                    "stay empty. --model takes a standalone model.pt (float32 or int8), an ONNX export directory "
                    "or a CTranslate2 export directory.",
        epilog=EXAMPLES,
    )
    p.add_argument("--model", required=True,
                   help="model.pt of `hat export --format standalone [--quantize int8]`, or an export directory "
                        "(--format onnx | ctranslate2, or one holding model.pt)")
    p.add_argument("--input", default="-", help="source text, one sentence per line (default: - = stdin)")
    p.add_argument("--output", default="-",
                   help="translations (default: - = stdout); a file appears only once the whole input is translated")
    add_decoding_options(p)
    p.add_argument("--buffer-size", type=int, default=256,
                   help="most lines read before translating; fewer when no more input is waiting (default 256)")
    p.add_argument("--compute", default="cpu", help="cpu | cuda | cuda:N (default cpu; int8 models run on the CPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the runtime's)")
    p.set_defaults(func=run)


def add_decoding_options(p: argparse.ArgumentParser) -> None:
    """`--beam`, `--lenpen`, `--max-len-a/b`, `--max-tokens`, `--max-sentences` (shared with `hat
    evaluate`), one flag per `Decoding` field, with its default."""
    d = Decoding()
    p.add_argument("--beam", type=int, default=d.beam, help="beam size (1: greedy)")
    p.add_argument("--lenpen", type=float, default=d.lenpen, help="length penalty: score / len**lenpen")
    p.add_argument("--max-len-a", type=float, default=d.max_len_a, help="max output length = a * src_len + b")
    p.add_argument("--max-len-b", type=int, default=d.max_len_b, help="b of --max-len-a")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens, help="source tokens per batch, padded")
    p.add_argument("--max-sentences", "--batch-size", type=int, default=d.max_sentences,
                   help="sentences per batch (default: as many as --max-tokens allows)")


def decoding_options(args: argparse.Namespace) -> dict:
    """The `Decoding` keywords from the flags of `add_decoding_options`."""
    return {name: getattr(args, name) for name in DECODING}


def check_decoding_args(args: argparse.Namespace) -> "torch.device":
    """Bad decoding flags are one line each (shared with `hat evaluate`); sets --threads and
    returns the --compute device."""
    for flag, value, low in (("--beam", args.beam, 1), ("--max-tokens", args.max_tokens, 1),
                             ("--max-sentences", args.max_sentences, 1), ("--threads", args.threads, 1),
                             ("--max-len-a", args.max_len_a, 0), ("--max-len-b", args.max_len_b, 0),
                             ("--buffer-size", getattr(args, "buffer_size", None), 1)):
        if value is not None and not value >= low:  # NaN fails too
            raise HatError(f"{flag} must be >= {low}, got {value}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return compute_device(args.compute)


@contextlib.contextmanager
def _source(name: str):
    if name == "-":
        yield sys.stdin.buffer, "<stdin>"
        return
    path = Path(name)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a text file")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        yield f, str(path)


def run(args: argparse.Namespace) -> int:
    from hat.export.runtimes import open_model
    from hat.export.stream import translate_stream
    from hat.files import atomic_open

    device = check_decoding_args(args)
    if args.output != "-" and Path(args.output).is_dir():
        raise DataError(f"{args.output}: is a directory, expected a file for the translations")
    translator = open_model(args.model, device, args.threads)
    options = decoding_options(args)

    def warn(msg: str) -> None:
        print(f"hat translate: warning: {msg}", file=sys.stderr)

    with _source(args.input) as (stream, name):
        if args.output == "-":
            try:
                translate_stream(translator, stream, sys.stdout, name, buffer_size=args.buffer_size, warn=warn, **options)
            except BrokenPipeError:  # e.g. `| head`: the reader has what it wanted
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        with atomic_open(args.output, "w", encoding="utf-8") as out:
            n = translate_stream(translator, stream, out, name, buffer_size=args.buffer_size, warn=warn, **options)
    print(f"hat translate: {n} lines -> {args.output}", file=sys.stderr)
    return 0
