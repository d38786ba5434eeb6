"""Decoder-only LM benchmarks: LiteTransformerSearch's claims, measured on one corpus and this CPU.

    python benchmarks/bench_lm.py rank       --data data/debian.de-en   # decoder params vs trained perplexity
    python benchmarks/bench_lm.py front      --data data/debian.de-en --predictor P.pt   # front vs uniform designs
    python benchmarks/bench_lm.py searchtime                           # measure + fit + search, timed

rank: `--n` architectures spread over the space by decoder parameters (or by predicted latency with
--predictor): the smallest, the largest, some uniform designs, then samples at evenly spaced values.
Each is trained from scratch by `hat train --task lm` (the `lm-tiny` recipe: 16 x 128 tokens per
update, so equal updates are equal token budgets) to the largest of `--updates` for every seed,
validating at each budget of the list on the whole valid split. Reported: Kendall and Spearman
between decoder params and perplexity per budget (negative = more parameters, lower perplexity;
LTS's "Spearman above 0.9" is this with the sign flipped), median [min, max] over seeds, how each
budget's ranking agrees with the longest one's, and seed vs seed. The smaller budgets are read from
the longest run's validations, so their learning rate has not annealed; `--separate` trains one run
per budget instead (its own schedule), at the sum of the budgets' cost.
front: each member of an LM front (`--front CSV` of `hat search --task lm`, else that search is run with
--predictor) between two uniformly scaled GPT-style designs, trained alike (same runs as rank: budget,
seeds): the strongest within its predicted latency and memory, and the fastest with at least its
decoder parameters, latency and memory; reported: perplexity, and the member against the line between
the two at its latency. `--k` members spread over latency, among those with at least `--min-gain` times
the parameters of the uniform design below. `--measure R` also times every design on this machine, R
interleaved rounds (run it when nothing else runs: the training runs are read back, not retrained).
See bench_lm_front.py.
searchtime: `hat measure` of --samples configs, `hat fit-predictor`, `hat search --task lm` with its
default budget: wall time per stage, the share spent measuring, the front size; `--measure-search`
adds a search timing every candidate on this machine (`--predictor measure`, a smaller budget).

Every training run lives in --work/runs and is never retrained (a killed run resumes from its
checkpoint); every part appends to --json and prints markdown tables.

Time at the defaults on 2 CPU cores, from one update (16 x 128 tokens, forward, backward, AdamW) timed
on one core: 0.3 s for lm-tiny's smallest model, 1.1 s for its largest, so 600 updates take 3-11
minutes. rank: 12 architectures x 2 seeds = 24 runs, about 2.5 h; front: 4 members x 3 designs x 2 seeds (runs
shared with rank are reused), about 1.5 h; searchtime: 200 configs at about 1.1 s each (cpu-2core's
protocol, 5 + 20 generations of 32 + 32 tokens) and a search of seconds, about 4 min (+ about 3 min
for the 120 candidates of --measure-search).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from bench_ranking import agreement_table, rank_agreement, spread_over_latency  # noqa: E402
from hat.space import LMConfig, LMSpace, lm_decoder_params, lm_params, load_lm_space, save_lm_config  # noqa: E402

Runner = Callable[[list[str], Path], None]


# ---- pure helpers (tested in tests/test_bench_lm.py) ------------------------------------------
def uniform_configs(space: LMSpace) -> list[LMConfig]:
    """GPT-style designs: one FFN width and one head count in every layer; depth and width free."""
    c = space.choices
    return [LMConfig(n, d, (f,) * n, (h,) * n) for n in c["layer_num"] for d in c["embed_dim"]
            for f in c["ffn_embed_dim"] for h in c["attention_heads"]]


def pick_architectures(space: LMSpace, n: int, seed: int, key: Callable[[LMConfig], float] = lm_decoder_params,
                       uniform_share: float = 0.25, pool_size: int = 500) -> list[tuple[str, LMConfig]]:
    """(kind, config) of `n` distinct architectures spread over `key`: the smallest and largest,
    about `uniform_share` of uniform designs at evenly spaced values, then seeded samples at evenly
    spaced values."""
    uni = uniform_configs(space)
    ends = [space.smallest(), space.largest()]
    chosen = spread_over_latency(uni, [key(c) for c in uni], min(n, 2 + round(n * uniform_share)), keep=ends)
    rng = random.Random(seed)
    pool = list(dict.fromkeys(space.sample(rng) for _ in range(pool_size)))
    chosen = spread_over_latency(pool, [key(c) for c in pool], n, keep=chosen)[:n]
    kinds = {ends[0]: "smallest", ends[1]: "largest", **{c: "uniform" for c in uni if c not in ends}}
    return [(kinds.get(c, "sampled"), c) for c in chosen]


def validations(log: Path) -> dict[int, dict[str, Any]]:
    """The validation record (ppl, elapsed_s, ...) of each validated update of a `hat train --task lm`
    log (a resumed run's last)."""
    out: dict[int, dict[str, Any]] = {}
    for line in log.read_text().splitlines() if log.is_file() else []:
        rec = json.loads(line).get("valid")
        if rec:
            out[int(rec["update"])] = rec
    return out


def run_once(run_dir: Path, argv: list[str], fingerprint: dict[str, Any], runner: Runner,
             keep_checkpoints: bool = False) -> dict[str, Any]:
    """Train once: a finished run (its result.json) is read back, not retrained; one with other
    settings is refused. The weights are removed afterwards unless kept (they are large)."""
    res_path = run_dir / "result.json"
    if res_path.is_file():
        res = json.loads(res_path.read_text())
        if res["fingerprint"] != fingerprint:
            sys.exit(f"{run_dir}: trained with other settings ({res['fingerprint']}); use another --work")
        return res
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    runner(argv, run_dir / "train.out")
    valid = validations(run_dir / "train_log.jsonl")
    if not valid:
        sys.exit(f"{run_dir}: training logged no validation (see {run_dir / 'train.out'})")
    res = {"fingerprint": fingerprint, "ppl": {str(u): float(r["ppl"]) for u, r in sorted(valid.items())},
           "train_s": valid[max(valid)]["elapsed_s"], "wall_s": round(time.time() - t0, 1)}
    tmp = res_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(res_path)
    if not keep_checkpoints:
        for p in run_dir.glob("checkpoint_*.pt"):
            p.unlink()
    return res


def last_json(text: str) -> dict[str, Any]:
    """The last line of `text` that is a JSON object (`hat search --task lm` ends with its summary)."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON summary line in the output")


def config_key(cfg: LMConfig) -> str:
    return hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:10]


# ---- running hat ---------------------------------------------------------------------------
def hat_cli(argv: list[str], log: Path) -> None:
    """`hat ARGV` in a subprocess (its own threads and memory), output kept in `log`."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "-m", "hat", *argv], stdout=f, stderr=subprocess.STDOUT, env=env)
    if r.returncode:
        sys.exit(f"`hat {' '.join(argv)}` failed (exit {r.returncode}); see {log}")


def _save(path: Path, key: str, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    d = json.loads(path.read_text()) if path.is_file() else {}
    d[key] = value
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(d, indent=1))
    tmp.replace(path)


def _budgets(a: argparse.Namespace) -> list[int]:
    return sorted({int(x) for x in a.updates.split(",")})


def _seeds(a: argparse.Namespace) -> list[int]:
    return [int(x) for x in a.seeds.split(",")]


def train(a: argparse.Namespace, cfg: LMConfig, seed: int) -> dict[str, Any]:
    """Perplexity at every budget of --updates (and the training seconds) of `cfg` trained from scratch."""
    work, budgets = Path(a.work).resolve(), _budgets(a)
    cdir = work / "runs" / config_key(cfg)
    cdir.mkdir(parents=True, exist_ok=True)
    save_lm_config(cfg, cdir / "config.yml")
    plan = [(b, [b]) for b in budgets] if a.separate else [(budgets[-1], budgets)]
    out: dict[str, Any] = {"ppl": {}, "train_s": 0.0}
    for top, reads in plan:
        every = math.gcd(*reads)
        d = cdir / f"s{seed}-u{top}-v{every}"
        fp = {"data": str(Path(a.data).resolve()), "space": a.space, "recipe": a.recipe, "seed": seed, "updates": top,
              "set": a.set}
        argv = ["train", "--task", "lm", "--config", a.recipe, f"space={a.space}", f"subnet={cdir / 'config.yml'}",
                f"data={Path(a.data).resolve()}", f"save_dir={d}", f"seed={seed}", f"max_updates={top}",
                f"validate_interval={every}", f"save_interval={every}", "progress=false", f"num_threads={a.threads}",
                *a.set]
        print(f"  {cfg.describe()} seed {seed}: {top} updates -> {d}", flush=True)
        res = run_once(d, argv, fp, hat_cli, a.keep_checkpoints)
        out["ppl"].update({str(b): res["ppl"][str(b)] for b in reads})
        out["train_s"] += res["train_s"]
    return out


def _lm_predictor(a: argparse.Namespace, space: LMSpace) -> Any:
    from hat.latency.predictors import LMCost, load_predictor

    pred = load_predictor(a.predictor)
    if not isinstance(pred, LMCost):
        sys.exit(f"{a.predictor}: not an lm-cost predictor (hat fit-predictor on `hat measure --space {a.space}` rows)")
    pred.check_space(space)
    return pred


def _fmt(x: tuple[float, float, float]) -> str:
    return f"{x[0]:+.2f}" + (f" [{x[1]:+.2f}, {x[2]:+.2f}]" if x[1] != x[2] else "")


# ---- parts ------------------------------------------------------------------------------------
def part_rank(a: argparse.Namespace) -> None:
    """Decoder params (LTS's proxy) against trained perplexity, per token budget and seed."""
    space, budgets, seeds = load_lm_space(a.space), _budgets(a), _seeds(a)
    pred = _lm_predictor(a, space) if a.predictor else None
    key = (lambda c: float(pred.predict([c])[0])) if pred else lm_decoder_params
    rows = []
    shard, shards = _shard(a)
    for i, (kind, cfg) in enumerate(pick_architectures(space, a.n, a.seed, key)):
        if i % shards != shard:
            continue
        r = {"kind": kind, "config": cfg.to_dict(), "summary": cfg.describe(), "decoder_params": lm_decoder_params(cfg),
             "params": lm_params(cfg, space), "predicted_ms": key(cfg) if pred else None, "runs": {}}
        print(f"[{i + 1}/{a.n}] {kind}: {cfg.describe()}", flush=True)
        for s in seeds:
            r["runs"][str(s)] = train(a, cfg, s)
        rows.append(r)
        _save(Path(a.json), "rank", {"updates": budgets, "seeds": seeds, "separate": a.separate, "rows": rows})
    if shards == 1:
        report_rank(rows, budgets, seeds)
    else:
        print(f"shard {shard + 1}/{shards} trained; run without --shard for the table (it reads the finished runs)")


def _shard(a: argparse.Namespace) -> tuple[int, int]:
    """(k, n) of `--shard K/N` (1-based K), zero-based k: this process trains architectures k, k+n, ..."""
    if not a.shard:
        return 0, 1
    try:
        k, n = (int(x) for x in a.shard.split("/"))
    except ValueError:
        sys.exit(f"--shard {a.shard}: expected K/N, e.g. 1/2")
    if not 1 <= k <= n:
        sys.exit(f"--shard {a.shard}: need 1 <= K <= N")
    return k - 1, n


def report_rank(rows: list[dict], budgets: list[int], seeds: list[int]) -> None:
    ppl = {(b, s): [r["runs"][str(s)]["ppl"][str(b)] for r in rows] for b in budgets for s in seeds}
    dp, tp = [r["decoder_params"] for r in rows], [r["params"] for r in rows]
    print(f"\n{len(rows)} architectures, seeds {seeds}; correlation with validation perplexity, median [min, max] over "
          "seeds (negative: more parameters, lower perplexity)\n")
    print("| updates | Kendall, decoder params | Spearman, decoder params | Kendall, all params | Spearman, all params "
          f"| Kendall vs {budgets[-1]} updates | Kendall seed vs seed |\n|---:|---:|---:|---:|---:|---:|---:|")
    for b in budgets:
        (t,) = agreement_table({"ppl": [ppl[b, s] for s in seeds]}, {"dp": dp, "tp": tp})
        vs_last = [rank_agreement(ppl[b, s], ppl[budgets[-1], s])["kendall"] for s in seeds]
        pairs = [rank_agreement(ppl[b, s], ppl[b, s2])["kendall"] for s in seeds for s2 in seeds if s < s2]
        cell = lambda v: _fmt((statistics.median(v), min(v), max(v))) if v else "-"  # noqa: E731
        print(f"| {b} | {_fmt(t['dp_kendall'])} | {_fmt(t['dp_spearman'])} | {_fmt(t['tp_kendall'])} | "
              f"{_fmt(t['tp_spearman'])} | {cell(vs_last)} | {cell(pairs)} |")
    cols = [(b, s) for b in budgets for s in seeds]
    print("\n| kind | architecture | decoder params (M) | params (M) | "
          + " | ".join(f"ppl {b} u, seed {s}" for b, s in cols) + " | train s |\n|---|---|---:|---:|"
          + "---:|" * len(cols) + "---:|")
    for r in sorted(rows, key=lambda r: r["decoder_params"]):
        secs = statistics.median(r["runs"][str(s)]["train_s"] for s in seeds)
        print(f"| {r['kind']} | `{r['summary']}` | {r['decoder_params'] / 1e6:.2f} | {r['params'] / 1e6:.2f} | "
              + " | ".join(f"{r['runs'][str(s)]['ppl'][str(b)]:.1f}" for b, s in cols) + f" | {secs:.0f} |")


def part_searchtime(a: argparse.Namespace) -> None:
    """Wall time of measure -> fit -> search for the whole front, and the share spent measuring."""
    work = Path(a.work).resolve() / "searchtime"
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "stages.json"
    st = json.loads(state_path.read_text()) if state_path.is_file() else {}
    csv_, pt = work / "lm.csv", work / "lm.pt"
    stages = [("measure", ["measure", "--device", a.device, "--space", a.space, "--samples", str(a.samples),
                           "--out", str(csv_), "--no-progress"]),
              ("fit", ["fit-predictor", "--data", str(csv_), "--out", str(pt)]),
              ("search", ["search", "--task", "lm", "--space", a.space, "--predictor", str(pt), "--out",
                          str(work / "front.csv"), "--no-resume", "--no-progress"])]
    if a.measure_search:
        stages.append(("search-measured", ["search", "--task", "lm", "--space", a.space, "--predictor", "measure",
                                           "--device", a.device, "--population", str(a.population),
                                           "--mutations", str(a.offspring // 2), "--crossovers",
                                           str(a.offspring - a.offspring // 2), "--iterations", str(a.generations),
                                           "--out", str(work / "front-measured.csv"), "--no-resume", "--no-progress"]))
    for name, argv in stages:
        if name in st:
            continue
        if name == "measure" and csv_.exists():  # a killed measurement would time only its rest
            sys.exit(f"{csv_} exists without a recorded time: remove it (and its .meta.json) to time the measurement")
        t0 = time.time()
        hat_cli(argv, work / f"{name}.out")
        st[name] = {"wall_s": round(time.time() - t0, 2)}
        if name.startswith("search"):
            st[name].update(last_json((work / f"{name}.out").read_text()))
        state_path.write_text(json.dumps(st, indent=1))
    total = sum(st[n]["wall_s"] for n in ("measure", "fit", "search"))
    out = {"samples": a.samples, "device": a.device, "stages": st, "total_s": total,
           "measure_share": st["measure"]["wall_s"] / total}
    _save(Path(a.json), "searchtime", out)
    print("\n| stage | wall s | notes |\n|---|---:|---|")
    print(f"| hat measure ({a.samples} configs) | {st['measure']['wall_s']:.1f} | |")
    print(f"| hat fit-predictor | {st['fit']['wall_s']:.1f} | |")
    for n in [n for n in st if n.startswith("search")]:
        s, how = st[n], ("measured", "measuring") if n != "search" else ("predicted", "predicting")
        print(f"| hat search --task lm ({how[0]}) | {s['wall_s']:.1f} | front {s['front']} of {s['evaluated']} "
              f"evaluated; search itself {s['elapsed_s']:.1f} s, {s['objective_share']:.0%} of it {how[1]} |")
    print(f"\nwhole front with a predictor: {total:.1f} s, {out['measure_share']:.0%} of it measuring")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["rank", "front", "searchtime"])
    p.add_argument("--data", default="data/debian.de-en", help="prepared directory (its target side is the text)")
    p.add_argument("--space", default="lm-tiny")
    p.add_argument("--recipe", default="lm-tiny", help="hat train --task lm recipe")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra recipe overrides")
    p.add_argument("--updates", default="200,600", help="token budgets in updates (one run to the largest)")
    p.add_argument("--separate", action="store_true", help="rank: one run per budget, each with its own schedule")
    p.add_argument("--seeds", default="1,2", help="training seeds")
    p.add_argument("--n", type=int, default=12, help="rank: architectures")
    p.add_argument("--seed", type=int, default=1, help="rank: seed of the sampled architectures")
    p.add_argument("--shard", metavar="K/N", help="rank: train only every N-th architecture from the K-th (one "
                                                  "process per core); a run without it reports them all")
    p.add_argument("--predictor", help="lm-cost predictor file (front: required; rank: spread by its latency)")
    p.add_argument("--front", help="front: an LM front CSV (default: search one with --predictor)")
    p.add_argument("--k", type=int, default=4, help="front: members compared")
    p.add_argument("--min-gain", type=float, default=1.0,
                   help="front: only members with at least this ratio of decoder params over their uniform baseline")
    p.add_argument("--measure", type=int, default=0, metavar="R", help="front: time each pair in R interleaved rounds")
    p.add_argument("--device", default="cpu-2core", help="searchtime and front --measure: hat device")
    p.add_argument("--samples", type=int, default=200, help="searchtime: configs measured")
    p.add_argument("--measure-search", action="store_true", help="searchtime: also search with --predictor measure")
    p.add_argument("--population", type=int, default=20, help="--measure-search: NSGA-II population")
    p.add_argument("--offspring", type=int, default=20, help="--measure-search: new candidates per generation")
    p.add_argument("--generations", type=int, default=5, help="--measure-search: generations")
    p.add_argument("--threads", type=int, default=2, help="training threads")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each run's weights")
    p.add_argument("--work", default="benchmarks/out/lm")
    p.add_argument("--json", default="benchmarks/out/bench_lm.json")
    a = p.parse_args(argv)
    if a.part == "front":
        from bench_lm_front import part_front  # noqa: PLC0415  (its own module: the front against uniform designs)

        part_front(a)
    else:
        {"rank": part_rank, "searchtime": part_searchtime}[a.part](a)


if __name__ == "__main__":
    main()
