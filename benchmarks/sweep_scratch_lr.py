"""The peak LR of the demo's from-scratch baselines: a small sweep at the budget B they get.

Each value trains the same architecture alone from scratch for `--budget-s` seconds of training
with the demo's from-scratch recipe (`hat.commands.demo.SCRATCH`, its LR replaced), then is scored
on the validation split (BLEU and chrF on the first `--valid-sentences` pairs, beam 4, the demo's
lenpen; never the test split the demo reports). Finished values are skipped, so a rerun resumes
and `--lrs` can add values to an earlier sweep.

    python benchmarks/sweep_scratch_lr.py --data data/debian.de-en --subnet runs/demo/baselines/hand.yml \\
        --budget-s 630 --lrs 1e-3,2e-3,4e-3 --out runs/sweep-scratch-lr
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def train(data: Path, subnet: Path, lr: str, budget_s: float, save_dir: Path) -> None:
    from hat.cli import main
    from hat.commands.demo import FULL, SCRATCH

    recipe = [x for x in SCRATCH if not x.startswith("lr=")] + [f"lr={lr}"]
    argv = ["train", "--config", "tiny-cpu", f"data={data}", f"max_tokens={FULL.max_tokens}",
            f"max_updates={FULL.max_updates}", "keep_interval_checkpoints=0", "progress=false",
            f"save_dir={save_dir}", "sampling.policy=fixed", f"sampling.subnet={subnet}", *recipe,
            f"budget_minutes={budget_s / 60:.4f}", "validate_interval=100000", "save_interval=100000",
            "save_interval_minutes=1"]
    print("$ hat " + " ".join(argv), flush=True)
    if main(argv):
        sys.exit(f"training lr={lr} failed")


def score(data: Path, subnet: Path, save_dir: Path, n: int) -> dict:
    import hat
    from hat.cli import main
    from hat.evaluate import evaluate
    from hat.model.checkpoint import load_checkpoint
    from hat.model.generate import Decoding

    exp = save_dir / "export"
    if not (exp / "model.pt").exists() and main(["export", "--checkpoint", str(save_dir / "checkpoint_last.pt"),
                                                   "--config", str(subnet), "--data", str(data), "--format",
                                                   "standalone", "--out", str(exp)]):
        sys.exit(f"export of {save_dir} failed")
    res, _ = evaluate(hat.load(exp / "model.pt"), data, "valid", beam=4, lenpen=Decoding.lenpen, limit=n,
                      progress=False)
    ck = load_checkpoint(save_dir / "checkpoint_last.pt")
    return {"valid_bleu": res["bleu"], "valid_chrf": res.get("chrf"), "valid_loss": valid_loss(save_dir),
            "updates": ck["update"],
            "train_s": ck["elapsed_s"], "tokens": ck.get("tokens_seen")}


def valid_loss(save_dir: Path) -> float:
    """The validation loss (label-smoothed, all valid pairs) the run ended with."""
    from hat.model.checkpoint import load_checkpoint

    return float(load_checkpoint(save_dir / "checkpoint_last.pt")["valid"][-1]["subnet"]["loss"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--subnet", type=Path, required=True, help="the architecture (a SubTransformer YAML)")
    ap.add_argument("--budget-s", type=float, required=True, help="training seconds per value (the demo's B)")
    ap.add_argument("--lrs", default="1e-3,2e-3,4e-3")
    ap.add_argument("--valid-sentences", type=int, default=1000)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    results_path = a.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for lr in a.lrs.split(","):
        d = a.out / f"lr-{lr}"
        if lr in results:
            continue
        if not (d / "DONE").exists():
            t = time.time()
            train(a.data, a.subnet, lr, a.budget_s, d)
            (d / "DONE").write_text(f"{time.time() - t:.0f}\n")
        results[lr] = {"lr": float(lr), **score(a.data, a.subnet, d, a.valid_sentences),
                       "finished": time.strftime("%H:%M:%S")}
        tmp = results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(results_path)
    print(f"\n{a.subnet}, budget {a.budget_s:.0f} s; BLEU/chrF on the first {a.valid_sentences} valid pairs, "
          "beam 4; loss on all valid pairs:\n")
    print("| peak lr | updates | M target tokens | valid loss | valid BLEU | valid chrF | finished |\n"
          "|---:|---:|---:|---:|---:|---:|---|")
    for lr, r in sorted(results.items(), key=lambda x: x[1]["lr"]):
        loss = r.get("valid_loss") or valid_loss(a.out / f"lr-{lr}")
        tok = f"{r['tokens'] / 1e6:.2f}" if r.get("tokens") else "-"
        print(f"| {r['lr']:g} | {r['updates']} | {tok} | {loss:.3f} | {r['valid_bleu']:.2f} | {r['valid_chrf']:.1f} | "
              f"{r['finished']} |")


if __name__ == "__main__":
    main()
