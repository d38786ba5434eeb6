"""Which cheap signal ranks subnets like the model the pipeline finally delivers?

On one demo's SuperTransformer, N subnets spread over the whole latency range (the demo's searched
ones, its hand / hand-max / largest designs and, to fill the range, uniform and sampled subnets at
evenly spaced predicted latencies) each go through the pipeline's own last step: inherited weights
+ the demo's fine-tuning recipe and budget. Their final validation loss and BLEU (first 1,000
valid pairs, beam 4) are the truth; each candidate signal is scored against it with Kendall tau
and Spearman:

- inherited validation loss on n sentences, for several n, each on several seeded subsets (the
  spread over subsets is reported);
- the loss after a short fine-tune of a few dozen updates from inherited weights;
- the loss after a fine-tune of T minutes of wall clock from inherited weights, the demo's recipe
  (what `hat search --select halving` measures at each rung, through the same code);
- the decoder-parameter proxy (LiteTransformerSearch) and HAT's parameter count.

Every training run and every score is cached under --out, so a killed run resumes.

    python benchmarks/bench_ranking.py --demo runs/demo --data data/debian.de-en --out runs/bench_ranking
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np


# ---- pure helpers (tested in tests/test_bench_ranking.py) ------------------------------------
def spread_over_latency(pool: Sequence[Any], latency: Sequence[float], n: int, keep: Sequence[Any] = ()) -> list[Any]:
    """`keep` plus pool members nearest to evenly spaced latencies between the pool's fastest and
    slowest, until there are `n` distinct ones (fewer when the pool runs out)."""
    chosen = list(dict.fromkeys(keep))
    lat = dict(zip(pool, latency))
    if not pool or len(chosen) >= n:
        return chosen
    lo, hi = min(latency), max(latency)
    for t in np.linspace(lo, hi, n - len(chosen)):
        free = [c for c in pool if c not in chosen]
        if not free:
            break
        chosen.append(min(free, key=lambda c: abs(lat[c] - t)))
    return chosen


def rank_agreement(signal: Sequence[float], truth: Sequence[float]) -> dict[str, float]:
    """Kendall tau-b and Spearman rho between a signal and the truth, both 'lower is better'."""
    from scipy.stats import kendalltau, spearmanr

    if len(signal) != len(truth) or len(signal) < 3:
        raise ValueError(f"need two equally long series of at least 3 values (got {len(signal)} and {len(truth)})")
    return {"kendall": float(kendalltau(signal, truth).statistic), "spearman": float(spearmanr(signal, truth).statistic)}


def agreement_table(signals: dict[str, list[list[float]]], truths: dict[str, list[float]]) -> list[dict]:
    """One row per signal: median, min and max of its agreement with each truth over its repeats
    (seeds or subsets; one repeat gives min = median = max)."""
    rows = []
    for name, repeats in signals.items():
        row: dict[str, Any] = {"signal": name, "repeats": len(repeats)}
        for tname, truth in truths.items():
            for stat in ("kendall", "spearman"):
                vals = [rank_agreement(r, truth)[stat] for r in repeats]
                row[f"{tname}_{stat}"] = (float(np.median(vals)), min(vals), max(vals))
        rows.append(row)
    return rows


# ---- the benchmark -----------------------------------------------------------------------------
def _save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _train(demo_dir: Path, data: Path, cfg_path: Path, save_dir: Path, *budget: str) -> None:
    from hat.cli import main
    from hat.commands.demo import FINETUNE, FULL

    if (save_dir / "DONE").exists():
        return
    argv = ["train", "--config", "tiny-cpu", f"data={data}", f"max_tokens={FULL.max_tokens}", "progress=false",
            "keep_interval_checkpoints=0", f"save_dir={save_dir}", "sampling.policy=fixed",
            f"sampling.subnet={cfg_path}", f"init_from={demo_dir / 'supertransformer' / 'checkpoint_last.pt'}",
            *FINETUNE, *budget, "validate_interval=100000", "save_interval=100000", "save_interval_minutes=1"]
    print("$ hat " + " ".join(argv), flush=True)
    if main(argv):
        sys.exit(f"training {save_dir} failed")
    (save_dir / "DONE").touch()


def _candidates(demo_dir: Path, space: Any, predictor: Any, n: int, seed: int) -> list[tuple[str, Any]]:
    from hat.commands.demo_classes import uniform_configs
    from hat.space import load_subconfig

    named = {}
    for p in sorted(demo_dir.glob("search-*/subnet.yml")):
        named[load_subconfig(p)] = f"searched {p.parent.name}"
    for name in ("hand", "hand-max", "largest"):
        p = demo_dir / "baselines" / f"{name}.yml"
        if p.exists():
            named.setdefault(load_subconfig(p), name)
    rng = random.Random(seed)
    pool = list(dict.fromkeys(uniform_configs(space) + [space.sample(rng) for _ in range(300)]))
    lat = [float(x) for x in predictor.predict(pool)]
    picked = spread_over_latency(pool, lat, n, keep=list(named))
    uniform = set(uniform_configs(space))
    return [(named.get(c) or ("uniform" if c in uniform else "sampled"), c) for c in picked]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, required=True, help="a `hat demo` output folder (its SuperTransformer, "
                    "predictor, searched subnets and baselines)")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=14, help="subnets (at least 12)")
    ap.add_argument("--finetune-minutes", type=float, default=3.0, help="the demo's fine-tuning budget")
    ap.add_argument("--short-updates", type=int, default=40, help="updates of the short fine-tune signal")
    ap.add_argument("--valid-sizes", default="100,300,1000", help="sentences of the inherited-loss signal")
    ap.add_argument("--seeds", default="1,2,3", help="subsets drawn for each inherited-loss size")
    ap.add_argument("--ft-minutes", default="0.5,1", help="wall-clock fine-tunes of the halving signal ('' for none)")
    ap.add_argument("--bleu-sentences", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    import hat
    from hat.cli import main as hat_main
    from hat.commands.search_select import FineTuneSignal, SelectSettings
    from hat.evaluate import evaluate
    from hat.latency.predictors import load_predictor
    from hat.model import load_super_checkpoint
    from hat.model.checkpoint import load_checkpoint
    from hat.model.generate import Decoding
    from hat.search import LossScorer
    from hat.search.scorers import decoder_params
    from hat.space import describe, num_params, save_subconfig

    a.out.mkdir(parents=True, exist_ok=True)
    res_path = a.out / "results.json"
    res = json.loads(res_path.read_text()) if res_path.exists() else {"subnets": {}}
    model, ck = load_super_checkpoint(a.demo / "supertransformer" / "checkpoint_last.pt")
    space = model.space
    predictor = load_predictor(a.demo / "latency.pt", space)
    cands = _candidates(a.demo, space, predictor, a.n, a.seed)
    sizes, seeds = [int(x) for x in a.valid_sizes.split(",")], [int(x) for x in a.seeds.split(",")]
    scorers = {(n, s): LossScorer(model, a.data, valid_sentences=n, seed=s) for n in sizes for s in seeds}
    ft_minutes = [float(x) for x in a.ft_minutes.split(",") if x.strip()]
    ft = {m: FineTuneSignal(a.demo / "supertransformer" / "checkpoint_last.pt", a.data, a.out / "select",
                            SelectSettings(minutes=m)) for m in ft_minutes}
    t0 = time.time()
    for i, (label, cfg) in enumerate(cands):
        key, d = describe(cfg), a.out / f"subnet-{i:02d}"
        r = res["subnets"].setdefault(key, {"label": label, "dir": d.name})
        d.mkdir(exist_ok=True)
        save_subconfig(cfg, d / "subnet.yml")
        r.update(predicted_ms=float(predictor.predict_one(cfg)), decoder_params=decoder_params(cfg, space),
                 params=num_params(cfg, space))
        if "inherited" not in r:
            r["inherited"] = {f"{n}/{s}": sc.score([cfg])[0] for (n, s), sc in scorers.items()}
            _save(res_path, res)
        if "short_loss" not in r:
            _train(a.demo, a.data, d / "subnet.yml", d / "short", f"max_updates={a.short_updates}")
            short, _ = load_super_checkpoint(d / "short" / "checkpoint_last.pt")
            r["short_loss"] = LossScorer(short, a.data, valid_sentences=max(sizes), seed=seeds[0]).score([cfg])[0]
            _save(res_path, res)
        if "final_bleu" not in r:
            _train(a.demo, a.data, d / "subnet.yml", d / "final", f"budget_minutes={a.finetune_minutes}",
                   "max_updates=100000")
            fin = load_checkpoint(d / "final" / "checkpoint_last.pt")
            if not (d / "export" / "model.pt").exists() and hat_main(
                    ["export", "--checkpoint", str(d / "final" / "checkpoint_last.pt"), "--config",
                     str(d / "subnet.yml"), "--data", str(a.data), "--format", "standalone", "--out", str(d / "export")]):
                sys.exit(f"export of {d} failed")
            out, _ = evaluate(hat.load(d / "export" / "model.pt"), a.data, "valid", beam=4, lenpen=Decoding.lenpen,
                              limit=a.bleu_sentences, progress=False)
            r.update(final_loss=float(fin["valid"][-1]["subnet"]["loss"]), final_bleu=out["bleu"],
                     final_updates=int(fin["update"]))
            _save(res_path, res)
        for m, sig in ft.items():
            if f"{m:g}" not in r.setdefault("ft", {}):
                r["ft"][f"{m:g}"] = sig(cfg, 0)
                _save(res_path, res)
        print(f"[{i + 1}/{len(cands)}] {label}: {key} ({time.time() - t0:.0f} s)", flush=True)
    report(res, sizes, seeds, ck.get("update"), [f"{m:g}" for m in ft_minutes])


def report(res: dict, sizes: list[int], seeds: list[int], super_update: Any, ft_minutes: Sequence[str] = ()) -> None:
    rows = list(res["subnets"].values())
    truths = {"final loss": [r["final_loss"] for r in rows], "final -BLEU": [-r["final_bleu"] for r in rows]}
    signals = {f"inherited loss, {n} sentences": [[r["inherited"][f"{n}/{s}"] for r in rows] for s in seeds]
               for n in sizes}
    signals["loss after a short fine-tune"] = [[r["short_loss"] for r in rows]]
    for m in ft_minutes:
        signals[f"loss after a {m}-min fine-tune (halving rung)"] = [[r["ft"][m] for r in rows]]
    signals["-decoder params (LTS proxy)"] = [[-r["decoder_params"] for r in rows]]
    signals["-params (HAT's count)"] = [[-r["params"] for r in rows]]
    signals["predicted latency"] = [[-r["predicted_ms"] for r in rows]]
    table = agreement_table(signals, truths)
    print(f"\n{len(rows)} subnets, SuperTransformer at update {super_update}; median [min-max] over repeats\n")
    print("| signal | repeats | tau vs final loss | rho vs final loss | tau vs final BLEU | rho vs final BLEU |\n"
          "|---|---:|---:|---:|---:|---:|")
    fmt = lambda x: f"{x[0]:.2f}" + (f" [{x[1]:.2f}, {x[2]:.2f}]" if x[1] != x[2] else "")  # noqa: E731
    for t in table:
        print(f"| {t['signal']} | {t['repeats']} | {fmt(t['final loss_kendall'])} | {fmt(t['final loss_spearman'])} | "
              f"{fmt(t['final -BLEU_kendall'])} | {fmt(t['final -BLEU_spearman'])} |")
    print("\n| subnet | kind | predicted ms | final loss | final BLEU | updates |\n|---|---|---:|---:|---:|---:|")
    for key, r in sorted(res["subnets"].items(), key=lambda x: x[1]["predicted_ms"]):
        cell = key.replace("|", "\\|")
        print(f"| `{cell}` | {r['label']} | {r['predicted_ms']:.1f} | {r['final_loss']:.3f} | {r['final_bleu']:.2f} | "
              f"{r['final_updates']} |")


if __name__ == "__main__":
    main()
