"""`hat evaluate`: translate a test set and report sacrebleu BLEU/chrF (also per origin tag); with
`--ppl`, the perplexity of a decoder-only LM."""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

from hat.commands.translate import add_decoding_options
from hat.errors import HatError
from hat.files import atomic_write_text

EXAMPLES = """examples:
  hat evaluate --model export/subnet/model.pt --data data/debian.de-en
  hat evaluate --checkpoint SUPER.pt --config subnet.yml --data data/debian.de-en --beam 1 --limit 200
  hat evaluate --model export/onnx-int8 --src newstest.de --ref newstest.en --out newstest.hyp.en
  hat evaluate --ppl --model checkpoints/lm/checkpoint_best.pt --data data/debian.de-en --subset test --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="BLEU/chrF of a SubTransformer on a prepared test set or on raw parallel text",
        description="Decode SUBSET of a `hat prepare` directory (--data), or raw parallel text (--src/--ref, no "
                    "data directory needed), with beam search (batched, sorted by length) and score the "
                    "detokenized output with sacrebleu (BLEU, chrF, BLEU per origin tag).",
        epilog=EXAMPLES,
    )
    m = p.add_mutually_exclusive_group(required=True)
    m.add_argument("--model", help="standalone model.pt (float32 or int8) or an ONNX / CTranslate2 export directory")
    m.add_argument("--checkpoint", help="SuperTransformer checkpoint of `hat train` (needs --config)")
    p.add_argument("--config", help="SubConfig YAML to cut out of --checkpoint (ours or HAT's keys)")
    p.add_argument("--data", help="prepared data directory (hat prepare); or give --src and --ref")
    p.add_argument("--src", help="raw source text, one sentence per line (instead of --data)")
    p.add_argument("--ref", help="raw references, line by line with --src")
    p.add_argument("--origin", help="with --src: a tag per line (e.g. the domain) for BLEU per origin")
    p.add_argument("--subset", help="split to evaluate (default: test; with --ppl: valid)")
    p.add_argument("--ppl", action="store_true",
                   help="perplexity of a decoder-only LM (--model: its `hat train --task lm` checkpoint) on "
                        "SUBSET of --data (an LM directory, or a parallel one's side the LM was trained on), "
                        "--batch-size blocks at a time (default 16)")
    add_decoding_options(p)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N sentences")
    p.add_argument("--out", help="write hypotheses here, one per line in corpus order "
                                 "(default with --data: SUBSET.hyp.TGT next to the model, never overwritten without "
                                 "--force; with --src: not written)")
    p.add_argument("--force", action="store_true", help="overwrite the default hypotheses file next to the model")
    p.add_argument("--hyps", help="score this hypotheses file instead of decoding")
    p.add_argument("--tokenized-bleu", action="store_true",
                   help="also report HAT-style tokenized BLEU: detokenized text tokenized with --tok, "
                        "compound-split (a-b -> a ##AT##-##AT## b), scored on tokens")
    p.add_argument("--tok", default="13a", choices=["13a", "intl"], help="tokenizer for --tokenized-bleu")
    p.add_argument("--no-compound-split", action="store_true", help="skip compound splitting in --tokenized-bleu")
    p.add_argument("--compute", default="cpu", help="device to decode on: cpu | cuda | cuda:N (int8: cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch, onnxruntime, CTranslate2)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hat.commands.translate import check_decoding_args, decoding_options
    from hat.evaluate import evaluate, evaluate_text
    from hat.export.runtimes import open_model
    from hat.export.standalone import load_any
    from hat.model.lm_checkpoint import is_lm_checkpoint

    if args.ppl:
        return _run_ppl(args)
    args.subset = args.subset or "test"
    if args.model and is_lm_checkpoint(args.model):
        raise HatError(f"{args.model}: a decoder-only LM checkpoint: score it with --ppl (BLEU scores translation "
                       "models)")
    if args.checkpoint and not args.config:
        raise HatError(f"{args.checkpoint}: --checkpoint needs --config SUBNET.yml (or use --model)")
    text = args.src is not None or args.ref is not None
    if text and (args.src is None or args.ref is None):
        raise HatError("--src and --ref go together (raw parallel text)")
    if text and args.data and args.checkpoint is None:
        raise HatError("give --data (a prepared directory) or --src/--ref (raw text), not both")
    if not text and not args.data:
        raise HatError("give --data (a prepared directory) or --src and --ref (raw parallel text)")
    if args.origin and not text:
        raise HatError("--origin goes with --src/--ref (a prepared directory has its own origin tags)")
    if args.data and not text and not Path(args.data).is_dir():
        raise HatError(f"{args.data}: data directory not found")
    device = check_decoding_args(args)
    if args.limit is not None and not args.limit >= 1:
        raise HatError(f"--limit must be >= 1, got {args.limit}")
    model_file = Path(args.model or args.checkpoint)
    if not text and not args.out and not args.hyps and not args.force:  # refuse before decoding, not after
        for old in model_file.parent.glob(f"{glob.escape(args.subset)}.hyp.*"):
            raise HatError(f"{old}: exists (hypotheses of an earlier evaluation, which other results may refer to); "
                           "pass --out FILE, or --force to overwrite it")
    if args.model:
        tr = open_model(args.model, device, args.threads)
        model_path = Path(args.model)
    else:
        tr = load_any(args.checkpoint, args.config, args.data, device)
        model_path = Path(args.checkpoint)
    hyps_in = None
    if args.hyps:
        hp = Path(args.hyps)
        if not hp.is_file():
            raise HatError(f"{hp}: hypotheses file not found")
        hyps_in = hp.read_text(encoding="utf-8").split("\n")
        if hyps_in and hyps_in[-1] == "":
            hyps_in.pop()
    options = dict(**decoding_options(args), limit=args.limit, tokenized=args.tokenized_bleu, tok=args.tok,
                   compound=not args.no_compound_split, hyps=hyps_in, progress=not args.json)
    if text:
        res, hyps = evaluate_text(tr, args.src, args.ref, args.origin, **options)
    else:
        res, hyps = evaluate(tr, args.data, args.subset, **options)
    if hyps_in is None and (args.out or not text):
        out = Path(args.out) if args.out else model_path.parent / f"{args.subset}.hyp.{res['tgt']}"
        atomic_write_text(out, "".join(h + "\n" for h in hyps))
        res["hypotheses"] = str(out)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"model       {res['model']}")
    data = f"{res['src_file']} / {res['ref_file']}" if res["subset"] == "text" else f"{res['data']} [{res['subset']}]"
    print(f"data        {data} {res['src']}->{res['tgt']}, {res['n']} sentences, "
          f"beam {res['beam']}, lenpen {res['lenpen']}, {res['seconds']:.1f} s")
    print(f"BLEU        {res['bleu']:.2f}   {res['bleu_signature']}")
    print(f"chrF        {res['chrf']:.2f}   {res['chrf_signature']}")
    d = res["bleu_details"]
    print(f"            precisions {'/'.join(f'{p:.1f}' for p in d['precisions'])}, BP {d['bp']:.3f}, "
          f"hyp/ref len {d['sys_len']}/{d['ref_len']}")
    if "tok_bleu" in res:
        print(f"tok. BLEU   {res['tok_bleu']:.2f}   ({res['tok_bleu_method']})")
    for tag, r in (res.get("per_origin") or {}).items():
        print(f"  {tag:<12} BLEU {r['bleu']:6.2f}  ({r['n']} sentences)")
    if "hypotheses" in res:
        print(f"hypotheses  {res['hypotheses']}")
    sys.stdout.flush()
    return 0


def _run_ppl(args: argparse.Namespace) -> int:
    """`hat evaluate --ppl`: refuse what belongs to translation, then `hat.evaluate.evaluate_ppl`."""
    from hat.evaluate import evaluate_ppl
    from hat.model.lm_checkpoint import is_lm_checkpoint

    if args.checkpoint or not args.model:
        raise HatError("--ppl takes the LM's `hat train --task lm` checkpoint as --model")
    translation = [f"--{k.replace('_', '-')}" for k in ("config", "src", "ref", "origin", "hyps", "out")
                   if getattr(args, k)] + ["--tokenized-bleu"] * args.tokenized_bleu
    if translation:
        raise HatError(f"{translation[0]} scores translations, not --ppl")
    if not is_lm_checkpoint(args.model):
        raise HatError(f"{args.model}: not a decoder-only LM checkpoint (--ppl scores the LMs of "
                       "`hat train --task lm`; translation models are scored by BLEU, without --ppl)")
    if not args.data:
        raise HatError("--ppl needs --data (a prepared directory)")
    batch = 16 if args.max_sentences is None else args.max_sentences
    if args.limit is not None and args.limit < 1 or batch < 1:
        raise HatError(f"--limit and --batch-size must be >= 1, got {args.limit} and {batch}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    res = evaluate_ppl(args.model, args.data, args.subset or "valid", batch_size=batch, limit=args.limit,
                       device=args.compute)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"model       {res['model']} (update {res['update']})")
    print(f"data        {res['data']} [{res['subset']}] {res['lang']}, {res['tokens']} tokens in {res['blocks']} "
          f"blocks of {res['context']}, {res['seconds']:.1f} s")
    print(f"perplexity  {res['ppl']:.3f}   (nll {res['nll']:.4f} nats/token)")
    return 0
