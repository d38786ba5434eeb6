"""`hat evaluate`: translate a test set and report sacrebleu BLEU/chrF (also per origin tag)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hat.commands.settings import compute_device
from hat.errors import HatError
from hat.files import atomic_write_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="BLEU/chrF of a SubTransformer on a prepared test set",
        description="Decode SUBSET of a `hat prepare` directory with beam search (batched, sorted by length) "
                    "and score the detokenized output with sacrebleu (BLEU, chrF, BLEU per origin tag).",
    )
    m = p.add_mutually_exclusive_group(required=True)
    m.add_argument("--model", help="standalone model from `hat export --format standalone`")
    m.add_argument("--checkpoint", help="SuperTransformer checkpoint of `hat train` (needs --config)")
    p.add_argument("--config", help="SubConfig YAML to cut out of --checkpoint (ours or HAT's keys)")
    p.add_argument("--data", required=True, help="prepared data directory (hat prepare)")
    p.add_argument("--subset", default="test", help="split to evaluate (default: test)")
    p.add_argument("--beam", type=int, default=4, help="beam size (1: greedy)")
    p.add_argument("--lenpen", type=float, default=0.6, help="length penalty: score / len**lenpen")
    p.add_argument("--max-len-a", type=float, default=1.2, help="max output length = a * src_len + b")
    p.add_argument("--max-len-b", type=int, default=10)
    p.add_argument("--max-tokens", type=int, default=4096, help="source tokens per batch (padded)")
    p.add_argument("--max-sentences", "--batch-size", type=int, default=None, help="sentences per batch")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N sentences")
    p.add_argument("--out", help="write hypotheses here, one per line in corpus order "
                                 "(default: SUBSET.hyp.TGT next to the model)")
    p.add_argument("--hyps", help="score this hypotheses file instead of decoding")
    p.add_argument("--tokenized-bleu", action="store_true",
                   help="also report HAT-style tokenized BLEU: detokenized text tokenized with --tok, "
                        "compound-split (a-b -> a ##AT##-##AT## b), scored on tokens")
    p.add_argument("--tok", default="13a", choices=["13a", "intl"], help="tokenizer for --tokenized-bleu")
    p.add_argument("--no-compound-split", action="store_true", help="skip compound splitting in --tokenized-bleu")
    p.add_argument("--compute", default="cpu", help="torch device to decode on: cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from hat.evaluate import evaluate
    from hat.export.standalone import load, load_any

    if args.checkpoint and not args.config:
        raise HatError(f"{args.checkpoint}: --checkpoint needs --config SUBNET.yml (or use --model)")
    if not Path(args.data).is_dir():
        raise HatError(f"{args.data}: data directory not found")
    for flag, value, low in (("--beam", args.beam, 1), ("--limit", args.limit, 1), ("--max-tokens", args.max_tokens, 1),
                             ("--max-sentences", args.max_sentences, 1), ("--threads", args.threads, 1),
                             ("--max-len-a", args.max_len_a, 0), ("--max-len-b", args.max_len_b, 0)):
        if value is not None and not value >= low:
            raise HatError(f"{flag} must be >= {low}, got {value}")
    device = compute_device(args.compute)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        tr = load(args.model, device)
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
    res, hyps = evaluate(
        tr, args.data, args.subset, beam=args.beam, lenpen=args.lenpen, max_len_a=args.max_len_a,
        max_len_b=args.max_len_b, max_tokens=args.max_tokens, max_sentences=args.max_sentences, limit=args.limit,
        tokenized=args.tokenized_bleu, tok=args.tok, compound=not args.no_compound_split, hyps=hyps_in,
        progress=not args.json,
    )
    if hyps_in is None:
        out = Path(args.out) if args.out else model_path.parent / f"{args.subset}.hyp.{res['tgt']}"
        atomic_write_text(out, "".join(h + "\n" for h in hyps))
        res["hypotheses"] = str(out)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"model       {res['model']}")
    print(f"data        {res['data']} [{res['subset']}] {res['src']}->{res['tgt']}, {res['n']} sentences, "
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
