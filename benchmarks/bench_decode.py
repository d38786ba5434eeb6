"""Decoding speed of one exported SubTransformer on every runtime, same sentences and settings.

Engines (each in its own process, so peak RSS is its own):
    hat            hat's beam search in torch eager with the KV cache (`hat translate --model model.pt`)
    hat-onnx       hat's beam search, each step one run of the ONNX decoder-step graph (onnxruntime)
    hat-int8       hat eager on the int8 model (torch dynamic quantization)
    hat-onnx-int8  the int8 ONNX graphs (onnxruntime dynamic quantization)
    fairseq        `fairseq-generate` on the fairseq export (the `fairseq` extra)
    ct2, ct2-int8  CTranslate2 on `hat export --format ctranslate2 [--quantize int8]` (only for
                   SubConfigs it can express; a worker that imports only sentencepiece + ctranslate2)

Reported per engine: ms/sentence at batch 1, tokens/s at batch 1 and at --batch (default 32),
peak RSS (MB, the worker process: Python + libraries + model + decoding), BLEU (sacrebleu, batch 1
hypotheses), the share of batch-1 hypotheses identical to hat's, and the model's size on disk.
Tokens are hypothesis tokens including EOS (fairseq's count); times cover decoding only (model
loading excluded; hat and CTranslate2 decode 2 sentences untimed first, fairseq-generate does not).
Each time is taken twice: wall-clock, and the worker process's CPU time (all its threads), which
on a shared machine leaves out the time other processes take from the core. Engines run in
--repeats interleaved rounds (each once per round, the order rotated); the report gives the
median and the spread (min-max) over the rounds.
Every engine gets the same sentences, beam, length penalty, length limit (max_len_a/b) and
--threads (also OMP_NUM_THREADS / MKL_NUM_THREADS in its environment).

    # the real run (quiet machine; MODEL = a standalone export of the searched subnet)
    python benchmarks/bench_decode.py --model MODEL.pt --data data/debian.de-en --n 1000 \\
        --beam 4 --lenpen 0.6 --threads 1 --work bench_decode.work --out bench_decode.json
    # smoke test: 40 sentences, batch 8
    python benchmarks/bench_decode.py --model MODEL.pt --data DATA --quick
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ENGINES = ("hat", "hat-onnx", "hat-int8", "hat-onnx-int8", "fairseq", "ct2", "ct2-int8")
EXPORTS = {  # engine -> (export subdirectory, hat export flags)
    "hat-onnx": ("onnx", ["--format", "onnx"]),
    "hat-int8": ("int8", ["--format", "standalone", "--quantize", "int8"]),
    "hat-onnx-int8": ("onnx-int8", ["--format", "onnx", "--quantize", "int8"]),
    "fairseq": ("fairseq", ["--format", "fairseq"]),
    "ct2": ("ct2", ["--format", "ctranslate2"]),
    "ct2-int8": ("ct2-int8", ["--format", "ctranslate2", "--quantize", "int8"]),
}


# ------------------------------------------------------------------------------------------ workers
def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; a child's rusage would also count the parent's pages it
    was forked with)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed_json(out: str, seconds: float, cpu_seconds: float, hyps: list[str], tokens: int) -> None:
    Path(out).write_text(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "tokens": tokens, "hyps": hyps,
                                     "rss_mb": peak_rss_mb()}), encoding="utf-8")


def worker_fairseq(result: str, argv: list[str]) -> None:
    """fairseq-generate itself, in this process so that its peak RSS can be read at the end; its
    generation timer (a StopwatchMeter) also sums the process CPU time between start and stop."""
    from fairseq.logging.meters import StopwatchMeter
    from fairseq_cli.generate import cli_main

    cpu = {"total": 0.0, "start": None}
    start, stop = StopwatchMeter.start, StopwatchMeter.stop

    def timed_start(self) -> None:
        cpu["start"] = time.process_time()
        start(self)

    def timed_stop(self, *a, **k) -> None:
        stop(self, *a, **k)
        if cpu["start"] is not None:
            cpu["total"] += time.process_time() - cpu["start"]
            cpu["start"] = None

    StopwatchMeter.start, StopwatchMeter.stop = timed_start, timed_stop
    sys.argv = ["fairseq-generate", *argv]
    try:
        cli_main()
    finally:
        Path(result).write_text(json.dumps({"rss_mb": peak_rss_mb(), "cpu_seconds": cpu["total"]}), encoding="utf-8")


def worker_hat(a: argparse.Namespace) -> None:
    import torch

    import hat

    torch.set_num_threads(a.threads)
    tr = hat.load(a.model, threads=a.threads)
    lines = Path(a.src).read_text(encoding="utf-8").splitlines()
    src = [tr.encode(s) for s in lines]
    kw = dict(beam=a.beam, lenpen=a.lenpen, max_len_a=a.max_len_a, max_len_b=a.max_len_b, max_tokens=10**9,
              max_sentences=a.batch, progress=False)
    tr.generate(src[:2], **kw)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    ids = tr.generate(src, **kw)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    _timed_json(a.result, seconds, cpu_seconds, [tr.tgt_tokenizer.decode(h) for h in ids],
                sum(len(h) + 1 for h in ids))


def worker_ct2(a: argparse.Namespace) -> None:
    """CTranslate2 as a deployment would run it: sentencepiece + ctranslate2, no torch, no hat."""
    import ctranslate2
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(Path(a.model) / "spm.model"))
    ct = ctranslate2.Translator(a.model, device="cpu", intra_threads=a.threads)
    lines = Path(a.src).read_text(encoding="utf-8").splitlines()
    pieces = [sp.encode(s, out_type=str) for s in lines]
    order = sorted(range(len(pieces)), key=lambda i: (-len(pieces[i]), i))  # length-sorted, as hat and fairseq

    def run(idx: list[int]) -> list[list[str]]:
        out = []
        for k in range(0, len(idx), a.batch):
            batch = [pieces[i] for i in idx[k : k + a.batch]]
            limit = max(max(1, min(int(a.max_len_a * (len(p) + 1) + a.max_len_b), 1023)) for p in batch)
            res = ct.translate_batch(batch, beam_size=a.beam, length_penalty=a.lenpen, max_decoding_length=limit,
                                     min_decoding_length=1, suppress_sequences=[["<blank>"]])
            out += [r.hypotheses[0] for r in res]
        return out

    run(order[:2])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    hyps = run(order)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    text = [""] * len(lines)
    for i, h in zip(order, hyps):
        text[i] = sp.decode_pieces(h)
    _timed_json(a.result, seconds, cpu_seconds, text, sum(len(h) + 1 for h in hyps))


# ------------------------------------------------------------------------------------------ parent
def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                           os.environ.get("PYTHONPATH", "")])}


def _run(cmd: list[str], threads: int) -> str:
    """Run `cmd` with the thread settings; its stdout and stderr together (fairseq logs to stderr)."""
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(threads))
    if p.returncode:
        raise RuntimeError(f"{Path(cmd[1]).name} {' '.join(cmd[2:4])} failed (exit {p.returncode}): "
                           f"{p.stderr.strip()[-800:]}")
    return p.stdout + p.stderr


def run_worker(engine: str, model: Path, src: Path, batch: int, a: argparse.Namespace, work: Path) -> dict:
    result = work / f"{engine}.b{batch}.json"
    kind = "ct2" if engine.startswith("ct2") else "hat"
    _run([sys.executable, __file__, "--worker", kind, "--model", str(model), "--src", str(src), "--batch", str(batch),
          "--beam", str(a.beam), "--lenpen", str(a.lenpen), "--max-len-a", str(a.max_len_a), "--max-len-b",
          str(a.max_len_b), "--threads", str(a.threads), "--result", str(result)], a.threads)
    return json.loads(result.read_text(encoding="utf-8"))


def run_fairseq(export: Path, bin_dir: Path, batch: int, a: argparse.Namespace, src_lang: str, tgt_lang: str,
                n: int, work: Path) -> dict:
    result = work / f"fairseq.b{batch}.json"
    out = _run([sys.executable, __file__, "--worker", "fairseq", "--result", str(result), "--", str(bin_dir),
                "--path", str(export / "checkpoint.pt"), "--user-dir", str(export / "hat_fairseq_plugin"),
                "--source-lang", src_lang, "--target-lang", tgt_lang, "--gen-subset", "test", "--beam", str(a.beam),
                "--lenpen", str(a.lenpen), "--max-len-a", str(a.max_len_a), "--max-len-b", str(a.max_len_b),
                "--batch-size", str(batch), "--max-tokens", str(10**9), "--required-batch-size-multiple", "1",
                "--post-process", "sentencepiece", "--cpu", "--num-workers", "0"], a.threads)
    hyps = {}
    for line in out.splitlines():
        if line.startswith("D-"):
            k, _, h = line.split("\t")
            hyps[int(k[2:])] = h
    m = re.search(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s", out)
    if not m or len(hyps) != n:
        raise RuntimeError(f"fairseq-generate: unexpected output ({len(hyps)} of {n} hypotheses, "
                           f"{'a' if m else 'no'} timing line)")
    return {"seconds": float(m.group(3)), "tokens": int(m.group(2).replace(",", "")),
            "hyps": [hyps[i] for i in range(n)], **json.loads(result.read_text(encoding="utf-8"))}


def fairseq_bin(export: Path, tr, src: list[str], refs: list[str], work: Path, threads: int) -> Path:
    """The test sentences as fairseq binarized data (SentencePiece pieces, the export's dictionaries),
    reused by later runs on the same sentences."""
    digest = hashlib.sha256("\n".join(src + ["\0"] + refs).encode("utf-8")).hexdigest()[:12]
    bin_dir = work / f"fairseq-bin-{digest}"
    if (bin_dir / f"test.{tr.src_lang}-{tr.tgt_lang}.{tr.src_lang}.bin").is_file():
        return bin_dir
    for lang, lines, tok in ((tr.src_lang, src, tr.tokenizer), (tr.tgt_lang, refs, tr.tgt_tokenizer)):
        (work / f"test.pcs.{lang}").write_text("".join(" ".join(tok.pieces(s)) + "\n" for s in lines), "utf-8")
    _run([sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", tr.src_lang, "--target-lang",
                tr.tgt_lang, "--testpref", str(work / "test.pcs"), "--srcdict", str(export / f"dict.{tr.src_lang}.txt"),
          "--tgtdict", str(export / f"dict.{tr.tgt_lang}.txt"), "--destdir", str(bin_dir), "--workers", "1"], threads)
    return bin_dir


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and p.suffix in (".pt", ".onnx", ".bin")]
    return sum(p.stat().st_size for p in files) / 2**20


def prepare_exports(a: argparse.Namespace, engines: list[str], work: Path) -> tuple[dict[str, Path], dict[str, str]]:
    from hat.cli import main as hat_main

    paths, skipped = {"hat": Path(a.model)}, {}
    for engine in engines:
        if engine == "hat":
            continue
        sub, flags = EXPORTS[engine]
        out = work / sub
        marker = out / ("model.pt" if engine == "hat-int8" else "checkpoint.pt" if engine == "fairseq" else
                        "onnx.json" if "onnx" in engine else "hat-ctranslate2.json")
        if not marker.is_file():
            with contextlib.redirect_stdout(io.StringIO()):
                rc = hat_main(["export", "--checkpoint", str(a.model), *flags, "--out", str(out), "--json"])
            if rc != 0:
                skipped[engine] = "export refused (see the line above)"
                continue
        paths[engine] = out / "model.pt" if engine == "hat-int8" else out
    return paths, skipped


def available(engine: str) -> str | None:
    import importlib.util

    need = {"hat-onnx": "onnxruntime", "hat-onnx-int8": "onnxruntime", "fairseq": "fairseq", "ct2": "ctranslate2",
            "ct2-int8": "ctranslate2"}.get(engine)
    if need and importlib.util.find_spec(need) is None:
        return f"{need} is not installed"
    return None


def main() -> None:
    if sys.argv[1:3] == ["--worker", "fairseq"]:  # --worker fairseq --result FILE -- FAIRSEQ-GENERATE ARGS
        worker_fairseq(sys.argv[4], sys.argv[6:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="standalone model.pt (float32) of the subnet to benchmark")
    p.add_argument("--data", help="prepared data directory (raw/SUBSET.SRC and raw/SUBSET.TGT are read)")
    p.add_argument("--subset", default="test")
    p.add_argument("--n", type=int, default=1000, help="sentences (the first N of the subset)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--lenpen", type=float, default=0.6)
    p.add_argument("--max-len-a", type=float, default=1.2)
    p.add_argument("--max-len-b", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (every engine once per round)")
    p.add_argument("--batch", type=int, default=32, help="the large batch size (batch 1 is always run)")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {','.join(ENGINES)}")
    p.add_argument("--work", default="bench_decode.work", help="exports, inputs and per-run results (reused)")
    p.add_argument("--out", help="write all results as JSON here")
    p.add_argument("--quick", action="store_true", help="smoke test: 40 sentences, batch 8")
    p.add_argument("--worker", choices=["hat", "ct2"], help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        (worker_hat if a.worker == "hat" else worker_ct2)(a)
        return
    if not a.data:
        p.error("--data is required")
    if a.quick:
        a.n, a.batch, a.repeats = min(a.n, 40), min(a.batch, 8), min(a.repeats, 1)
    run(a)


def run(a: argparse.Namespace) -> None:
    import platform

    import hat

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    tr = hat.load(a.model)
    raw = Path(a.data) / "raw"
    src = (raw / f"{a.subset}.{tr.src_lang}").read_text(encoding="utf-8").splitlines()[: a.n]
    refs = (raw / f"{a.subset}.{tr.tgt_lang}").read_text(encoding="utf-8").splitlines()[: a.n]
    src_file = work / f"input.{tr.src_lang}"
    src_file.write_text("".join(s + "\n" for s in src), encoding="utf-8")
    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise SystemExit(f"unknown engine(s) {unknown} (choose from {ENGINES})")
    skipped = {e: why for e in engines if (why := available(e))}
    engines = [e for e in engines if e not in skipped]
    paths, refused = prepare_exports(a, engines, work)
    skipped.update(refused)
    runnable = [e for e in engines if e in paths]
    runs: dict[tuple[str, int], list[dict]] = {}
    for rep in range(a.repeats):  # interleaved: every engine once per round, the order rotated each round
        order = runnable[rep % len(runnable):] + runnable[: rep % len(runnable)] if runnable else []
        for batch in (1, a.batch):
            for engine in order:
                if engine in skipped:
                    continue
                print(f"[round {rep + 1}/{a.repeats}] {engine} batch {batch} ...", file=sys.stderr, flush=True)
                try:
                    if engine == "fairseq":
                        bin_dir = fairseq_bin(paths[engine], tr, src, refs, work, a.threads)
                        r = run_fairseq(paths[engine], bin_dir, batch, a, tr.src_lang, tr.tgt_lang, len(src), work)
                    else:
                        r = run_worker(engine, paths[engine], src_file, batch, a, work)
                except RuntimeError as e:
                    skipped[engine] = str(e).splitlines()[0]
                    continue
                runs.setdefault((engine, batch), []).append(r)
    rows = summarize(runs, [e for e in runnable if e not in skipped], paths, refs, a.batch, len(src))
    result = {"model": str(a.model), "config": tr.config.to_dict(), "n": len(src), "beam": a.beam,
              "lenpen": a.lenpen, "max_len_a": a.max_len_a, "max_len_b": a.max_len_b, "threads": a.threads,
              "batch": a.batch, "repeats": a.repeats,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "engines": rows, "skipped": skipped}
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(table(result))


def _stats(values: list[float]) -> dict:
    """Median and spread (min, max) of repeated measurements."""
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def summarize(runs: dict[tuple[str, int], list[dict]], engines: list[str], paths: dict[str, Path], refs: list[str],
              big: int, n: int) -> dict[str, dict]:
    """Per engine: median and spread over the rounds of ms/sentence and tokens/s at each batch size,
    peak RSS (the largest seen), BLEU of the batch-1 hypotheses and their agreement with hat's."""
    from hat.evaluate import score

    base = runs[("hat", 1)][0]["hyps"] if ("hat", 1) in runs else None
    rows: dict[str, dict] = {}
    for engine in engines:
        row: dict = {"size_mb": round(_size_mb(paths[engine]), 2)}
        for batch in (1, big):
            rs = runs[(engine, batch)]
            row[f"b{batch}"] = {"rounds": len(rs), "tokens": rs[0]["tokens"],
                                "ms_per_sentence": _stats([1000 * r["seconds"] / n for r in rs]),
                                "tokens_per_s": _stats([r["tokens"] / r["seconds"] for r in rs]),
                                "cpu_ms_per_sentence": _stats([1000 * r["cpu_seconds"] / n for r in rs]),
                                "cpu_tokens_per_s": _stats([r["tokens"] / r["cpu_seconds"] for r in rs]),
                                "rss_mb": round(max(r["rss_mb"] for r in rs), 1)}
        hyps = runs[(engine, 1)][0]["hyps"]
        row["bleu"] = score(hyps, refs)["bleu"]
        row["same_hyps_every_round"] = all(r["hyps"] == hyps for r in runs[(engine, 1)])
        if base is not None:
            row["same_as_hat_b1"] = round(sum(x == y for x, y in zip(hyps, base)) / n, 4)
        rows[engine] = row
    return rows


def _cell(s: dict, fmt: str) -> str:
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"


def table(res: dict) -> str:
    b = res["batch"]
    lines = [f"{res['n']} sentences, beam {res['beam']}, lenpen {res['lenpen']}, {res['threads']} thread(s), "
             f"{res['repeats']} interleaved round(s): median (min-max); CPU = the worker's process CPU time, "
             f"wall = elapsed", "",
             f"| engine | CPU ms/sentence (b=1) | CPU tokens/s (b=1) | CPU tokens/s (b={b}) | wall ms/sentence (b=1) | "
             f"wall tokens/s (b={b}) | peak RSS MB (b={b}) | BLEU | same as hat (b=1) | model MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in res["engines"].items():
        b1, bb = r["b1"], r[f"b{b}"]
        lines.append(f"| {name} | {_cell(b1['cpu_ms_per_sentence'], '.1f')} | {_cell(b1['cpu_tokens_per_s'], '.0f')} | "
                     f"{_cell(bb['cpu_tokens_per_s'], '.0f')} | {_cell(b1['ms_per_sentence'], '.1f')} | "
                     f"{_cell(bb['tokens_per_s'], '.0f')} | {bb['rss_mb']:.0f} | {r['bleu']:.2f} | "
                     f"{r.get('same_as_hat_b1', float('nan')):.1%} | {r['size_mb']:.2f} |")
    for name, why in res["skipped"].items():
        lines.append(f"| {name} | skipped: {why} |||||||||")
    return "\n".join(lines)

if __name__ == "__main__":
    main()
