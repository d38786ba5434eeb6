"""`hat export`: a SubTransformer as a standalone file, a fairseq checkpoint + plugin, ONNX graphs or
a CTranslate2 model, float32 or int8 (`--quantize int8`)."""
from __future__ import annotations

import argparse
import json

from hat.errors import HatError, install_hint
from hat.export import FORMATS

EXAMPLES = """examples:
  hat export --checkpoint SUPER.pt --config subnet.yml --out export/subnet
  hat export --checkpoint SUPER.pt --config subnet.yml --format onnx --out export/onnx
  hat export --checkpoint export/model.pt --format onnx --quantize int8 --out export/onnx-int8
  # a decoder-only LM (hat train --task lm): one ONNX graph with a KV cache, checked against torch
  hat export --checkpoint checkpoints/lm/checkpoint_best.pt --format onnx --out export/lm-onnx
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a SubTransformer (standalone | fairseq | onnx | ctranslate2)",
        description="Cut --config out of a SuperTransformer --checkpoint (or take a standalone model) and write it "
                    "as a standalone file (DIR/model.pt), a fairseq checkpoint with its --user-dir plugin, ONNX "
                    "encoder + decoder-step graphs, or a CTranslate2 model (SubConfigs with one head count per "
                    "encoder and per decoder and no arbitrary encoder-decoder attention).",
        epilog=EXAMPLES,
    )
    p.add_argument("--checkpoint", required=True, help="SuperTransformer checkpoint (hat train) or a standalone model.pt")
    p.add_argument("--config", help="SubConfig YAML (ours or HAT's keys); required with a SuperTransformer checkpoint")
    p.add_argument("--data", help="data directory for the SentencePiece model and dictionaries "
                                  "(default: the one recorded in the checkpoint)")
    p.add_argument("--format", default="standalone", choices=FORMATS.names())
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (onnx format)")
    p.add_argument("--no-verify", action="store_true", help="onnx: skip the onnxruntime-vs-torch check")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="int8 weights (default: float32): torch dynamic quantization of the Linear layers "
                        "(standalone), onnxruntime dynamic quantization (onnx), CTranslate2's int8 (ctranslate2); "
                        "the exported file records it and hat.load / hat translate run it on the CPU")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hat.export import export, load_any  # noqa: PLC0415
    from hat.model.lm_checkpoint import is_lm_checkpoint  # noqa: PLC0415

    if is_lm_checkpoint(args.checkpoint):
        return _run_lm(args)
    tr = load_any(args.checkpoint, args.config, args.data)
    kw = {"quantize": args.quantize} if args.quantize else {}
    if args.format == "onnx":
        kw.update(opset=args.opset, verify=not args.no_verify)
    try:
        res = export(tr, args.format, args.out, **kw)
    except ImportError as e:  # the optional extras are named after their format
        raise HatError(f"{args.out}: --format {args.format} needs {e.name or 'an optional package'} "
                       f"({install_hint(args.format)})") from None
    res["architecture"] = tr.config.to_dict()
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"exported {args.format} to {args.out}")
    for f in res["files"]:
        print(f"  {f}")
    if res.get("usage"):
        print(res["usage"])
    return 0


def _run_lm(args: argparse.Namespace) -> int:
    """A decoder-only LM checkpoint: one architecture and its own vocabulary, float32 ONNX."""
    from hat.export import export_lm  # noqa: PLC0415
    from hat.model.lm_checkpoint import load_lm  # noqa: PLC0415

    for flag, given in (("--config", args.config), ("--data", args.data), ("--quantize", args.quantize)):
        if given:
            raise HatError(f"{args.checkpoint}: a decoder-only LM checkpoint (one architecture, its own vocabulary, "
                           f"float32): {flag} does not apply")
    model, ckpt = load_lm(args.checkpoint)
    try:
        res = export_lm(model, ckpt, args.format, args.out, opset=args.opset, verify=not args.no_verify)
    except ImportError as e:
        raise HatError(f"{args.out}: --format {args.format} needs {e.name or 'an optional package'} "
                       f"({install_hint(args.format)})") from None
    res["architecture"] = ckpt["lm_config"]
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"exported decoder-only LM ({args.format}) to {args.out}"
          + (f", max |onnxruntime - torch| {res['max_abs_diff']:.2e}" if "max_abs_diff" in res else ""))
    for f in res["files"]:
        print(f"  {f}")
    return 0
