"""`hat export`: a SubTransformer as a standalone file, a fairseq checkpoint + plugin, or ONNX."""
from __future__ import annotations

import argparse
import json

from hat.errors import HatError
from hat.export import FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a SubTransformer (standalone | fairseq | onnx)",
        description="Cut --config out of a SuperTransformer --checkpoint (or take a standalone model) and write it "
                    "as a standalone file (DIR/model.pt), a fairseq checkpoint with its --user-dir plugin, or ONNX "
                    "encoder + decoder-step graphs.",
    )
    p.add_argument("--checkpoint", required=True, help="SuperTransformer checkpoint (hat train) or a standalone model.pt")
    p.add_argument("--config", help="SubConfig YAML (ours or HAT's keys); required with a SuperTransformer checkpoint")
    p.add_argument("--data", help="data directory for the SentencePiece model and dictionaries "
                                  "(default: the one recorded in the checkpoint)")
    p.add_argument("--format", default="standalone", choices=FORMATS.names())
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (onnx format)")
    p.add_argument("--no-verify", action="store_true", help="onnx: skip the onnxruntime-vs-torch check")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hat.export import export, load_any  # noqa: PLC0415

    tr = load_any(args.checkpoint, args.config, args.data)
    kw = {}
    if args.format == "onnx":
        kw = {"opset": args.opset, "verify": not args.no_verify}
    try:
        res = export(tr, args.format, args.out, **kw)
    except ImportError as e:  # the optional extras are named after their format
        raise HatError(f"{args.out}: --format {args.format} needs {e.name or 'an optional package'} "
                       f"(pip install 'hat[{args.format}]')") from None
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
