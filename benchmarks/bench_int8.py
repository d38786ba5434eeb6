"""float32 vs int8: BLEU, measured latency and file size of exported SubTransformers.

For each standalone model (e.g. the demo's searched subnets and the largest), on torch
(dynamic quantization of the Linear layers) and on onnxruntime (dynamic quantization of the
graphs): latency with HAT's protocol (`hat measure`'s: batch 1, 30 source tokens, 30 cached
decoder steps over beam-5 copies; the device's protocol from --device), BLEU on the first --n
test sentences (beam 4, lenpen 0.6), and the exported file sizes. Target (issue 11): int8
>= 1.5x faster at batch 1 with <= 0.5 BLEU lost.

    # the real run (quiet machine): the demo's exports
    python benchmarks/bench_int8.py --models demo/export/*/model.pt --data data/debian.de-en \\
        --device cpu-2core --threads 1 --n 1000 --out bench_int8.json
    # smoke test
    python benchmarks/bench_int8.py --models MODEL.pt --data DATA --quick
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import tempfile
from pathlib import Path


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.iterdir() if p.suffix in (".pt", ".onnx")]
    return sum(p.stat().st_size for p in files) / 2**20


def bench_model(model: Path, a: argparse.Namespace, protocol, tmp: Path) -> list[dict]:
    import hat
    from hat.cli import main as hat_main
    from hat.evaluate import evaluate
    from hat.latency.measure import time_model

    fp = hat.load(model)
    runtimes = [("torch", "hat-int8", ["--format", "standalone"])]
    if importlib.util.find_spec("onnxruntime"):
        runtimes.append(("onnxruntime", "onnx", ["--format", "onnx"]))
    rows = []
    for backend, name, flags in runtimes:
        for quantize in (None, "int8"):
            out = tmp / f"{model.parent.name}.{backend}.{quantize or 'fp32'}"
            if backend == "torch" and not quantize:
                path = model
            else:
                q = ["--quantize", "int8"] if quantize else []
                assert hat_main(["export", "--checkpoint", str(model), *flags, *q, "--out", str(out), "--json"]) == 0
                path = out / "model.pt" if backend == "torch" else out
            proto = dataclasses.replace(protocol, backend=backend, quantize=quantize)
            lat = time_model(fp.model, proto)
            res, _ = evaluate(hat.load(path, threads=a.threads), a.data, "test", beam=4, lenpen=0.6, limit=a.n,
                              progress=False)
            rows.append({"model": str(model), "runtime": backend, "weights": quantize or "fp32",
                         "latency_ms": round(lat["latency_mean_encoder"] + lat["latency_mean_decoder"], 2),
                         "bleu": res["bleu"], "size_mb": round(_size_mb(path), 2)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="standalone float32 model.pt files")
    p.add_argument("--data", required=True, help="prepared data directory (its test split is scored)")
    p.add_argument("--device", default="cpu-2core", help="device whose latency protocol is used")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=1000, help="test sentences for BLEU")
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument("--quick", action="store_true", help="smoke test: 20 sentences, 3 timed runs")
    a = p.parse_args()

    import torch

    from hat.latency.devices import resolve_device
    from hat.latency.measure import Protocol

    torch.set_num_threads(a.threads)
    protocol = Protocol.from_device(resolve_device(a.device), threads=a.threads)
    if a.quick:
        a.n = min(a.n, 20)
        protocol = dataclasses.replace(protocol, runs=3, warmup=1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        for model in a.models:
            rows += bench_model(Path(model), a, protocol, Path(tmp))
    print("\n| model | runtime | weights | latency ms | speed-up | BLEU | dBLEU | size MB |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for fp32, int8 in zip(rows[::2], rows[1::2]):
        for r in (fp32, int8):
            up, db = fp32["latency_ms"] / r["latency_ms"], r["bleu"] - fp32["bleu"]
            print(f"| {Path(r['model']).parent.name} | {r['runtime']} | {r['weights']} | {r['latency_ms']:.1f} | "
                  f"{up:.2f}x | {r['bleu']:.2f} | {db:+.2f} | {r['size_mb']:.2f} |")
    if a.out:
        Path(a.out).write_text(json.dumps({"device": a.device, "protocol": protocol.to_dict(), "n": a.n,
                                           "rows": rows}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
