"""Search benchmarks on the tiny SuperTransformer (see benchmarks/RESULTS.md, section 4).

    python benchmarks/bench_search.py scratch   --n 10 --updates 60     # train subnets from scratch
    python benchmarks/bench_search.py inherited --checkpoint CKPT       # inherited vs scratch Kendall tau
    python benchmarks/bench_search.py proxy     --checkpoint CKPT --n 50  # params proxy vs inherited loss
    python benchmarks/bench_search.py search    --checkpoint CKPT        # evolution vs random, 3 constraints

Every part appends its numbers to --json (default benchmarks/out/bench_search.json) and
prints a markdown table. Sizes are small on purpose: 2 shared CPU cores.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hat.latency.estimate import Latency, select_predictor  # noqa: E402
from hat.search import (EvolutionSettings, LossScorer, ParamsScorer, evolution_search, kendall_tau,  # noqa: E402
                        random_search)
from hat.space import describe, load_space, load_subconfig, save_subconfig  # noqa: E402


def _save(path: Path, key: str, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    d = json.loads(path.read_text()) if path.is_file() else {}
    d[key] = value
    path.write_text(json.dumps(d, indent=2))


def _subnets(space, n: int, seed: int):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        c = space.sample(rng)
        if c not in out:
            out.append(c)
    return out


def part_scratch(args) -> None:
    """Train each sampled subnet from scratch (`hat train` sampling.policy=fixed), same budget."""
    space = load_space("tiny")
    work = Path(args.work)
    rows = []
    for i, cfg in enumerate(_subnets(space, args.n, args.seed)):
        d = work / f"subnet{i:02d}"
        yml = d / "subnet.yml"
        save_subconfig(cfg, yml)
        ck = d / "checkpoint_last.pt"
        t0 = time.time()
        if not ck.is_file():
            cmd = [sys.executable, "-m", "hat.cli", "train", "--config", "tiny-cpu", "sampling.policy=fixed",
                   f"sampling.subnet={yml}", f"save_dir={d}", f"max_updates={args.updates}",
                   f"warmup_updates={max(1, args.updates // 5)}", f"validate_interval={args.updates}",
                   f"save_interval={args.updates}", "max_valid_sentences=50", "progress=false", "tensorboard=false",
                   f"max_tokens={args.max_tokens}", "stop_time_minutes=null", "keep_interval_checkpoints=0",
                   f"num_threads={args.threads}", f"amp={args.amp}"]
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        rows.append({"i": i, "config": cfg.to_dict(), "dir": str(d), "train_s": round(time.time() - t0, 1)})
        print(f"subnet {i}: {describe(cfg)}  {rows[-1]['train_s']} s", flush=True)
    _save(Path(args.json), "scratch", {"n": args.n, "updates": args.updates, "max_tokens": args.max_tokens, "amp": args.amp,
                                       "subnets": rows})


def _loss_scorer(model, args) -> LossScorer:
    return LossScorer(model, args.data, valid_sentences=args.valid_sentences, max_tokens=args.score_max_tokens, seed=1)


def part_inherited(args) -> None:
    """Kendall tau between inherited-weight valid loss and trained-from-scratch valid loss."""
    from hat.model import load_super_checkpoint

    res = json.loads(Path(args.json).read_text())["scratch"]
    model, ck = load_super_checkpoint(args.checkpoint)
    inh = _loss_scorer(model, args)
    rows = []
    for r in res["subnets"]:
        cfg = load_subconfig(Path(r["dir"]) / "subnet.yml")
        sm, _ = load_super_checkpoint(Path(r["dir"]) / "checkpoint_last.pt")
        scratch = _loss_scorer(sm, args).score([cfg])[0]
        rows.append({"inherited": inh.score([cfg])[0], "scratch": scratch, "params": -ParamsScorer(model.space).score([cfg])[0]})
    tau = kendall_tau([r["inherited"] for r in rows], [r["scratch"] for r in rows])
    tau_p = kendall_tau([-r["params"] for r in rows], [r["scratch"] for r in rows])
    print("| subnet | inherited loss | scratch loss | decoder params |\n|---|---|---|---|")
    for i, r in enumerate(rows):
        print(f"| {i} | {r['inherited']:.3f} | {r['scratch']:.3f} | {r['params'] / 1e6:.2f} M |")
    print(f"Kendall tau(inherited, scratch) = {tau:.3f}; tau(-params, scratch) = {tau_p:.3f} over {len(rows)} subnets; "
          f"super checkpoint update {ck.get('update')}")
    _save(Path(args.json), "inherited", {"rows": rows, "tau": tau, "tau_params": tau_p, "super_update": ck.get("update"),
                                         "valid_sentences": args.valid_sentences})


def part_proxy(args) -> None:
    """Kendall tau between the params proxy and the inherited-weight loss over sampled subnets."""
    from hat.model import load_super_checkpoint

    model, _ = load_super_checkpoint(args.checkpoint)
    cfgs = _subnets(model.space, args.n, args.seed + 1)
    loss = _loss_scorer(model, args)
    t0 = time.perf_counter()
    lv = loss.score(cfgs)
    dt = time.perf_counter() - t0
    t1 = time.perf_counter()
    pv = ParamsScorer(model.space).score(cfgs)
    dtp = time.perf_counter() - t1
    tau = kendall_tau(pv, lv)
    print(f"Kendall tau(params proxy, inherited loss) = {tau:.3f} over {len(cfgs)} subnets; loss scorer "
          f"{len(cfgs) / dt:.2f} configs/s, params scorer {len(cfgs) / max(dtp, 1e-9):.0f} configs/s")
    _save(Path(args.json), "proxy", {"n": len(cfgs), "tau": tau, "loss_configs_per_s": len(cfgs) / dt,
                                     "params_configs_per_s": len(cfgs) / max(dtp, 1e-9),
                                     "valid_sentences": args.valid_sentences})


def part_search(args) -> None:
    """Evolution vs random search at equal evaluations, 3 latency constraints, inherited loss, over
    several seeds (median and range of each algorithm's best loss and of their paired difference)."""
    from hat.model import load_super_checkpoint

    model, _ = load_super_checkpoint(args.checkpoint)
    space = model.space
    lat = Latency(*select_predictor(args.predictor or "macs", None, space))
    sample = lat.many(_subnets(space, 500, 7))
    cons = [float(np.percentile(sample, q)) for q in (10, 30, 60)]
    seeds = [int(x) for x in args.seeds.split(",")]
    scorer = _loss_scorer(model, args)  # one cache: both algorithms see identical scores
    rows = []
    for c in cons:
        for seed in seeds:
            s = EvolutionSettings(population=args.population, parents=args.parents, mutations=args.mutations,
                                  crossovers=args.crossovers, iterations=args.iterations, seed=seed)
            for name, fn in (("evolution", evolution_search), ("random", random_search)):
                calls0, sec0 = scorer.calls, scorer.seconds
                t0 = time.perf_counter()
                r = fn(space, scorer, lat, c, s)
                wall = time.perf_counter() - t0
                rows.append({"constraint_ms": c, "seed": seed, "algorithm": name, "best_loss": r.best_score,
                             "best_latency_ms": r.best_latency, "evaluations": r.evaluations,
                             "unique": len(r.evaluated), "new_scored": scorer.calls - calls0,
                             "wall_s": wall, "scoring_s": scorer.seconds - sec0, "best": describe(r.best)})
                print(f"{c:8.2f} ms seed {seed} {name:9s} best loss {r.best_score:.4f} at {r.best_latency:.2f} ms, "
                      f"{r.evaluations} evals ({len(r.evaluated)} unique), {wall:.1f} s", flush=True)
            _save(Path(args.json), "search", {"predictor": lat.name, "rows": rows, "seeds": seeds,
                                              "valid_sentences": args.valid_sentences})

    def spread(v):
        return f"{np.median(v):.4f} [{min(v):.4f}, {max(v):.4f}]"

    print(f"\n{len(seeds)} seeds; median [min, max]\n\n| constraint (ms) | evolution best loss | random best loss | "
          "evolution - random | evolution lower | evaluations each |\n|---|---|---|---|---:|---:|")
    for c in cons:
        ev = [r["best_loss"] for r in rows if r["constraint_ms"] == c and r["algorithm"] == "evolution"]
        rd = [r["best_loss"] for r in rows if r["constraint_ms"] == c and r["algorithm"] == "random"]
        d = [a - b for a, b in zip(ev, rd)]
        n = next(r["evaluations"] for r in rows if r["constraint_ms"] == c)
        print(f"| {c:.2f} | {spread(ev)} | {spread(rd)} | {spread(d)} | {sum(x < 0 for x in d)}/{len(d)} | {n} |")
    new = sum(r["new_scored"] for r in rows)
    secs = sum(r["scoring_s"] for r in rows)
    print(f"loss scorer: {new} configs in {secs:.1f} s = {new / max(secs, 1e-9):.2f} configs/s "
          f"({args.valid_sentences} valid sentences, torch threads {torch.get_num_threads()})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["scratch", "inherited", "proxy", "search"])
    p.add_argument("--checkpoint", default="checkpoints/tiny-debian/checkpoint_best.pt")
    p.add_argument("--data", default="data/debian.de-en")
    p.add_argument("--predictor", default="macs", help="predictor file, macs or macs:MS_PER_GMAC")
    p.add_argument("--json", default="benchmarks/out/bench_search.json")
    p.add_argument("--work", default="benchmarks/out/scratch")
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--updates", type=int, default=60)
    p.add_argument("--max-tokens", type=int, default=2048)
    p.add_argument("--valid-sentences", type=int, default=200)
    p.add_argument("--score-max-tokens", type=int, default=4096)
    p.add_argument("--population", type=int, default=20)
    p.add_argument("--parents", type=int, default=5)
    p.add_argument("--mutations", type=int, default=8)
    p.add_argument("--crossovers", type=int, default=7)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seeds", default="1,2,3,4,5", help="search: the seeds each algorithm runs with")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--amp", default="bf16", help="scratch training precision (bf16 is ~1.6x faster on this CPU)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    {"scratch": part_scratch, "inherited": part_inherited, "proxy": part_proxy, "search": part_search}[args.part](args)


if __name__ == "__main__":
    main()
