"""Where hat's decoding time goes: the share of `encode`, `decode_step` and the beam search's own
bookkeeping, then torch profiler's operator table (self CPU time), for one standalone model.

    python benchmarks/profile_decode.py --model MODEL.pt --src data/debian.de-en/raw/test.de \\
        --n 100 --batch 1 --beam 4 --threads 1
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="standalone model.pt (float32 or int8)")
    p.add_argument("--src", required=True, help="source sentences, one per line")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--lenpen", type=float, default=0.6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=18, help="operators shown")
    a = p.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    import hat

    torch.set_num_threads(a.threads)
    tr = hat.load(a.model)
    src = [tr.encode(s) for s in Path(a.src).read_text(encoding="utf-8").splitlines()[: a.n]]
    kw = dict(beam=a.beam, lenpen=a.lenpen, max_tokens=10**9, max_sentences=a.batch, progress=False)
    tr.generate(src[:2], **kw)  # warm-up
    model, spent = tr.model, {"decode_step": 0.0, "encode": 0.0}
    originals = {name: getattr(model, name) for name in spent}

    def timed(name: str):
        def call(*args, **kwargs):
            t0 = time.process_time()
            try:
                return originals[name](*args, **kwargs)
            finally:
                spent[name] += time.process_time() - t0
        return call

    for name in spent:
        setattr(model, name, timed(name))
    t0 = time.process_time()
    tr.generate(src, **kw)
    total = time.process_time() - t0
    for name in spent:
        setattr(model, name, originals[name])
    shares = " ".join(f"{k} {v:.2f}s ({v / total:.0%})" for k, v in spent.items())
    print(f"CPU time {total:.2f}s: {shares}, search and the rest {total - sum(spent.values()):.2f}s")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        tr.generate(src, **kw)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))


if __name__ == "__main__":
    main()
