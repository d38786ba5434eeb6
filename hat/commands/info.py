"""`hat info CONFIG.yml --space NAME|FILE [--json]`: validate a SubConfig and print its size.

A decoder-only LM config (`task: lm`) with an LM space prints its parameters, the decoder's (LTS's
proxy) and the MACs of a prefill plus cached generation steps; either kind of config with the
other kind of space is refused in one line.

`hat info FRONT.csv --row N --space LM_SPACE [--save LM.yml]` does the same for row N of a
decoder-only front (`hat search --task lm`'s CSV, 1 = the fastest) and saves it as an LM config.

`hat info P.pt` describes a latency predictor (model, device, space, interval and how its training
latencies were timed); `hat info --device NAME` a device's protocol and its predictor, with a
warning when the two were timed differently.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hat.errors import HatError
from hat.space import (LMSpace, describe, is_lm_file, lm_decoder_params, lm_macs, lm_params, load_any_space,
                       load_lm_config, load_space, load_subconfig, macs, num_params, save_lm_config)

EXAMPLES = """examples:
  hat info hat/configs/subnets/hat_raspberrypi_3.5s.yml --space wmt14.en-de
  hat info search/subnet.yml --space tiny --json
  hat info lm.yml --space lm-tiny --prompt-len 32 --gen-len 96   # a decoder-only LM config
  hat info search/front.csv --row 12 --space lm-tiny --save lm.yml   # a row of an LM front, as a config
  hat info --device cpu-2core        # its protocol, its predictor and how that was timed
  hat info lat.pt                    # a predictor file from `hat fit-predictor`
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="validate a SubConfig YAML (ours or HAT's) and print params/MACs; describe a "
                       "latency predictor (.pt) or a device (--device)", epilog=EXAMPLES)
    p.add_argument("config", nargs="?", help="SubConfig YAML (our keys or HAT's *-subtransformer keys), or a latency "
                                             "predictor file (.pt)")
    p.add_argument("--space", help="shipped space name (e.g. wmt14.en-de) or a space YAML file (needed for a SubConfig)")
    p.add_argument("--device", help="describe this device (name or YAML) and its latency predictor")
    p.add_argument("--src-len", type=int, default=30, help="source length for MACs (HAT: 30; IWSLT 23)")
    p.add_argument("--tgt-len", type=int, default=30, help="decoder steps for MACs")
    p.add_argument("--normalize-before", action="store_true", help="count the pre-norm final LayerNorms")
    p.add_argument("--prompt-len", type=int, help="LM configs: prompt tokens prefilled for MACs (default: half the "
                                                  "space's context)")
    p.add_argument("--gen-len", type=int, help="LM configs: cached generation steps for MACs (default: the rest of "
                                               "the context)")
    p.add_argument("--row", type=int, help="with a front CSV of `hat search --task lm`: the row (1 = the fastest)")
    p.add_argument("--save", metavar="LM.yml", help="with --row: write that row as an LM config (for hat train --task lm)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.device or (args.config and Path(args.config).suffix == ".pt"):
        return _latency_info(args)
    if not args.config:
        raise HatError("give a SubConfig YAML (with --space), a predictor file (.pt) or --device NAME")
    if not args.space:
        raise HatError(f"{args.config}: --space is required for a SubConfig (e.g. --space tiny)")
    space = load_any_space(args.space)
    if not Path(args.config).is_file():
        raise HatError(f"{args.config}: no such file")
    if Path(args.config).suffix == ".csv" or args.row is not None or args.save:
        return _front_row_info(args, space)
    lm_config = is_lm_file(args.config)
    if lm_config and not isinstance(space, LMSpace):
        raise HatError(f"{args.config}: a decoder-only LM config (task: lm), but space {space.name} is a translation "
                       "space: give an LM space (e.g. --space lm-tiny)")
    if isinstance(space, LMSpace):
        if not lm_config:
            raise HatError(f"{args.config}: a translation SubConfig, but space {space.name} is a decoder-only LM space "
                           "(task: lm): give a translation space (e.g. --space tiny)")
        return _lm_info(args, space)
    cfg = space.validate(load_subconfig(args.config), source=args.config)
    params = num_params(cfg, space, args.normalize_before)
    m = macs(cfg, space, args.src_len, args.tgt_len)
    if args.json:
        print(json.dumps({"space": space.name, "params": params, "macs": m, "config": cfg.to_dict()}))
        return 0
    print(f"space       {space.name}")
    print(f"params      {params / 1e6:.2f} M (HAT semantics: no embeddings, no output projection)")
    print(f"MACs        {m / 1e9:.3f} G (source {args.src_len} tokens, {args.tgt_len} decoder steps, KV cache)")
    print(f"encoder     {cfg.encoder_layer_num} layers x {cfg.encoder_embed_dim}, FFN {list(cfg.encoder_ffn_embed_dim)}, heads {list(cfg.encoder_self_attention_heads)}")
    print(f"decoder     {cfg.decoder_layer_num} layers x {cfg.decoder_embed_dim}, FFN {list(cfg.decoder_ffn_embed_dim)}, "
          f"self heads {list(cfg.decoder_self_attention_heads)}, ende heads {list(cfg.decoder_ende_attention_heads)}, "
          f"arbitrary {list(cfg.decoder_arbitrary_ende_attn)}")
    print(f"summary     {describe(cfg)}")
    return 0


def _front_row_info(args: argparse.Namespace, space: Any) -> int:
    """A row of an LM front CSV: validated against `space`, described, and with --save written."""
    if Path(args.config).suffix != ".csv" or args.row is None:
        raise HatError(f"{args.config}: --row and --save read a front CSV of `hat search --task lm`: give the CSV "
                       "and --row N")
    if not isinstance(space, LMSpace):
        raise HatError(f"{args.config}: an LM front, but space {space.name} is a translation space: give the LM space "
                       "it was searched in (e.g. --space lm-tiny)")
    if args.save and Path(args.save).is_dir():
        raise HatError(f"--save {args.save} is a directory; give the LM config file to write (e.g. lm.yml)")
    from hat.search.lm_front import read_lm_front_row  # noqa: PLC0415

    raw, cols = read_lm_front_row(args.config, args.row)
    cfg = space.validate(raw, source=f"{args.config} row {args.row}")
    if args.save:
        meta = {"space": space.name, "front": str(args.config), "row": args.row,
                **{k: float(cols[k]) for k in ("latency_ms", "memory_bytes") if cols.get(k)}}
        save_lm_config(cfg, args.save, meta)
    code = _lm_info(args, space, cfg)
    if args.save and not args.json:
        print(f"wrote {args.save}")
    return code


def _lm_info(args: argparse.Namespace, space: LMSpace, cfg: Any = None) -> int:
    cfg = cfg if cfg is not None else space.validate(load_lm_config(args.config), source=args.config)
    prompt = args.prompt_len if args.prompt_len is not None else space.max_positions // 2
    gen = args.gen_len if args.gen_len is not None else space.max_positions - prompt
    params, dec, m = lm_params(cfg, space), lm_decoder_params(cfg), lm_macs(cfg, space, prompt, gen)
    if args.json:
        print(json.dumps({"task": "lm", "space": space.name, "params": params, "decoder_params": dec, "macs": m,
                          "prompt_len": prompt, "gen_len": gen, "config": cfg.to_dict()}))
        return 0
    print(f"space       {space.name} (decoder-only LM, vocabulary {space.vocab_size}, context {space.max_positions})")
    print(f"params      {params / 1e6:.2f} M (the token table, tied with the output projection, included)")
    print(f"decoder     {dec / 1e6:.2f} M (no embeddings: LiteTransformerSearch's proxy for perplexity)")
    print(f"MACs        {m / 1e9:.3f} G (prompt {prompt} tokens, {gen} generation steps, KV cache)")
    print(f"layers      {cfg.layer_num} x {cfg.embed_dim}, FFN {list(cfg.ffn_embed_dim)}, heads {list(cfg.attention_heads)}")
    print(f"summary     {cfg.describe()}")
    return 0


def _latency_info(args: argparse.Namespace) -> int:
    from hat.latency.devices import resolve_device  # noqa: PLC0415
    from hat.latency.measure import Protocol  # noqa: PLC0415
    from hat.latency.predictors import load_predictor  # noqa: PLC0415
    from hat.latency.provenance import describe as describe_protocol  # noqa: PLC0415
    from hat.latency.provenance import predictor_warning  # noqa: PLC0415

    if args.device and args.config:
        raise HatError("give a predictor file or --device, not both")
    space = load_space(args.space) if args.space else None
    spec = resolve_device(args.device) if args.device else None
    path = args.config or (_found(spec) if spec.predictor else None)
    pred = load_predictor(path, space) if path else None
    out: dict[str, Any] = {}
    if spec is not None:
        sp = space or (pred._space_obj() if pred is not None else None)  # the vocabulary default depends on it
        proto = Protocol.from_device(spec, sp).to_dict()
        if sp is None and "vocab_size" not in spec.protocol:
            del proto["vocab_size"]  # depends on the space, which nothing names here
        out["device"] = {"name": spec.name, "description": spec.description, "protocol": proto,
                         "hardware": spec.hardware, "predictor": str(path) if path else None}
    if pred is not None:
        lo, hi = pred.bounds() if pred.has_interval else (None, None)
        out["predictor"] = {"path": str(path), "model": pred.name, "feature_set": pred.feature_set,
                            "device": pred.device, "space": (pred.space or {}).get("name"), "lat_norm": pred.lat_norm,
                            "interval_90": [lo, hi], "protocol": pred.protocol or "unknown", "origin": _origin(pred)}
    if spec is not None and pred is None:
        out["device"]["import_from_hat"] = spec.import_commands()
    warning = predictor_warning(pred, out["device"]["protocol"], "the device's protocol", spec.name) \
        if spec is not None and pred is not None else None
    if warning:
        out["warning"] = warning
    if args.json:
        print(json.dumps(out))
        return 0
    if spec is not None:
        print(f"device      {spec.name}: {spec.description}" + (f" (hardware: {spec.hardware})" if spec.hardware else ""))
        print(f"protocol    {describe_protocol(out['device']['protocol'])}")
        if pred is None:
            looked = f"{spec.predictor} not found (beside the device YAML, then here); " if spec.predictor else ""
            print(f"predictor   {looked}none ships: `hat measure` on the device, then `hat fit-predictor`")
            for h, cmd in zip(spec.hat_predictors, spec.import_commands()):
                print(f"from HAT    {h.get('task', '?')}: {cmd}")
    if pred is not None:
        d = out["predictor"]
        print(f"predictor   {path}: {pred.name}, {pred.feature_set} features, fit for device {pred.device or '?'}, "
              f"space {d['space'] or '?'}")
        print(f"origin      {d['origin']}")
        if lo is not None:
            print(f"interval    90 %: {lo:.3f}-{hi:.3f} x the point estimate ({pred.interval.get('method')})")
        else:
            print("interval    none (searches hold the point estimate)")
        print(f"timed with  {describe_protocol(pred.protocol)}")
    if warning:
        print(warning)
    return 0


def _found(spec: Any) -> Path | None:
    """The device's predictor file, None when it names one that is not there (HAT's devices)."""
    from hat.errors import ConfigError  # noqa: PLC0415

    try:
        return spec.predictor_path()
    except ConfigError:
        return None


def _origin(pred: Any) -> str:
    """Where a predictor came from, in words: imported from HAT (file and norms), adapted, or fit here."""
    from hat.latency.predictors.hat_import import imported_from  # noqa: PLC0415

    rec = imported_from(pred)
    if rec is not None:
        fn = " ".join(f"{x:g}" for x in rec.get("feature_norm", []))
        return f"imported from HAT's {rec.get('file', '?')} (feature-norm {fn}, lat-norm {rec.get('lat_norm', 0):g})"
    src = pred.state.get("transferred_from")
    if isinstance(src, dict):
        return f"adapted from {src.get('file') or src.get('device') or '?'} ({src.get('model')}) with `--transfer-from`"
    rows = (pred.interval or {}).get("rows")
    return "fit by `hat fit-predictor`" + (f" on {rows} rows" if rows else "")
