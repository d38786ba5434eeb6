"""`hat info CONFIG.yml --space NAME|FILE [--json]`: validate a SubConfig and print its size."""
from __future__ import annotations

import argparse
import json

from hat.space import describe, load_space, load_subconfig, macs, num_params

EXAMPLES = """examples:
  hat info hat/configs/subnets/hat_raspberrypi_3.5s.yml --space wmt14.en-de
  hat info search/subnet.yml --space tiny --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="validate a SubConfig YAML (ours or HAT's) and print params/MACs",
                       epilog=EXAMPLES)
    p.add_argument("config", help="SubConfig YAML (our keys or HAT's *-subtransformer keys)")
    p.add_argument("--space", required=True, help="shipped space name (e.g. wmt14.en-de) or a space YAML file")
    p.add_argument("--src-len", type=int, default=30, help="source length for MACs (HAT: 30; IWSLT 23)")
    p.add_argument("--tgt-len", type=int, default=30, help="decoder steps for MACs")
    p.add_argument("--normalize-before", action="store_true", help="count the pre-norm final LayerNorms")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    space = load_space(args.space)
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
