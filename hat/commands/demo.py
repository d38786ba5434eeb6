"""`hat demo [--quick]`: the whole HAT pipeline on the Debian de-en corpus, on this CPU.

prepare -> train the tiny SuperTransformer -> measure latency of sampled subnets -> fit the
predictor -> search under two latency constraints -> fine-tune the two found subnets and two
hand-designed baselines (the largest subnet, and a uniformly shrunk one of similar latency)
-> BLEU and measured latency -> summary table + latency-vs-BLEU plot.

Each stage writes its output under `--out` and is skipped when that output exists, so an
interrupted demo resumes where it stopped. Stages run the same `hat` commands a user would
(through `hat.cli.main`), which is why the demo is a command itself.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

from hat.errors import HatError
from hat.files import atomic_write_text, save_figure
from hat.space import DesignSpace, SubConfig, describe, load_space, load_subconfig, num_params, save_subconfig


@dataclass(frozen=True)
class Budget:
    train_updates: int
    train_minutes: float  # wall-clock guard: the run stops (and checkpoints) here
    max_tokens: int
    latency_samples: int
    latency_runs: int
    search_population: int
    search_parents: int
    search_children: int
    search_iterations: int
    valid_sentences: int
    finetune_updates: int
    test_sentences: int
    beam: int


# Sized for a 2-core CPU in about 45 minutes: bf16 autocast trains ~1.6x faster than fp32 there
# (benchmarks/RESULTS.md), and small batches give more updates in a short budget.
FULL = Budget(2400, 22, 2048, 150, 10, 28, 8, 10, 6, 300, 100, 1000, 4)
QUICK = Budget(40, 3, 1024, 24, 3, 12, 4, 4, 2, 64, 10, 100, 1)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run (or resume) the end-to-end pipeline on the Debian de-en corpus",
                       description="prepare -> train -> measure -> fit predictor -> search (2 constraints) -> "
                       "fine-tune -> BLEU + measured latency vs two hand-designed baselines. Each stage is "
                       "skipped when its output exists, so a rerun resumes.")
    p.add_argument("--quick", action="store_true", help="tiny budgets: a first look in a few minutes")
    p.add_argument("--out", default=None, help="output directory (default runs/demo or runs/demo-quick)")
    p.add_argument("--data", default="data/debian.de-en", help="corpus directory (built when missing)")
    p.add_argument("--device", default="cpu-2core", help="device for latency measurement (hat/configs/device)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = args.out or ("runs/demo-quick" if args.quick else "runs/demo")
    run_demo(out, args.data, quick=args.quick, device=args.device)
    return 0


def _hat(argv: list[str]) -> None:
    from hat.cli import main  # noqa: PLC0415  (cli imports every command)

    print(f"\n$ hat {' '.join(argv)}", flush=True)
    rc = main(argv)
    if rc:
        raise HatError(f"stage `hat {argv[0]}` failed with exit code {rc}")


def _stage(name: str, done: Path) -> bool:
    """True when the stage must run; prints why it is skipped otherwise."""
    if done.exists():
        print(f"[demo] {name}: done already ({done})")
        return False
    print(f"\n[demo] {name} ...", flush=True)
    return True


def uniform_configs(space: DesignSpace) -> list[SubConfig]:
    """Hand-designed baselines: every layer the same width, as a person shrinking a model would."""
    c = space.choices
    out = []
    for de, nl_e, nl_d, f, h in itertools.product(
        c["encoder_embed_dim"], c["encoder_layer_num"], c["decoder_layer_num"], c["encoder_ffn_embed_dim"],
        c["encoder_self_attention_heads"],
    ):
        if de not in c["decoder_embed_dim"] or f not in c["decoder_ffn_embed_dim"] or h not in c["decoder_self_attention_heads"]:
            continue
        if h not in c["decoder_ende_attention_heads"]:
            continue
        out.append(SubConfig(de, de, nl_e, nl_d, [f] * nl_e, [h] * nl_e, [f] * nl_d, [h] * nl_d, [h] * nl_d, [-1] * nl_d))
    return out


def run_demo(out: str | Path = "runs/demo", data: str | Path = "data/debian.de-en", quick: bool = False,
             device: str = "cpu-2core") -> Path:
    """Run (or resume) the demo; returns the path of the summary markdown."""
    b = QUICK if quick else FULL
    out, data = Path(out), Path(data)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timings: dict[str, float] = {}

    def timed(name: str, t: float) -> None:
        timings[name] = timings.get(name, 0.0) + time.time() - t

    # 1. corpus
    t = time.time()
    if _stage("prepare the Debian de-en corpus", data / "meta.json"):
        _hat(["prepare", "debian", "--pair", "de-en", "--out", str(data)])
    timed("prepare", t)

    # 2. SuperTransformer
    t = time.time()
    super_dir = out / "supertransformer"
    if _stage("train the tiny SuperTransformer", super_dir / "DONE"):
        _hat(["train", "--config", "tiny-cpu", f"data={data}", f"save_dir={super_dir}", f"max_updates={b.train_updates}",
              f"max_tokens={b.max_tokens}", f"stop_time_minutes={b.train_minutes}", "amp=bf16",
              f"validate_interval={max(10, b.train_updates // 5)}", f"save_interval={max(10, b.train_updates // 10)}",
              f"warmup_updates={max(5, b.train_updates // 8)}"] + (["max_valid_sentences=200"] if quick else []))
        (super_dir / "DONE").touch()
    timed("train", t)
    ckpt = super_dir / "checkpoint_best.pt"
    if not ckpt.exists():
        ckpt = super_dir / "checkpoint_last.pt"

    # 3-4. latency dataset on this machine, predictor
    t = time.time()
    lat_csv, lat_pt = out / "latency.csv", out / "latency.pt"
    if _stage("measure latency of sampled subnets on this machine", out / "latency.DONE"):
        _hat(["measure", "--device", device, "--space", "tiny", "--samples", str(b.latency_samples),
              "--runs", str(b.latency_runs), "--warmup", "2", "--out", str(lat_csv)])
        (out / "latency.DONE").touch()
    if _stage("fit the latency predictor", lat_pt):
        _hat(["fit-predictor", "--data", str(lat_csv), "--out", str(lat_pt), "--space", "tiny", "--device", device])
    timed("latency", t)

    from hat.latency.dataset import read_latency_csv  # noqa: PLC0415
    from hat.latency.predictors import load_predictor  # noqa: PLC0415

    space = load_space("tiny")
    predictor = load_predictor(lat_pt, space)
    measured = sorted(read_latency_csv(lat_csv).latency_ms.tolist())
    # two constraints inside the measured range: a tight one and a loose one
    constraints = [round(measured[int(len(measured) * q)], 1) for q in (0.25, 0.6)]

    # 5. search
    t = time.time()
    models: dict[str, Path] = {}
    for c in constraints:
        sdir = out / f"search-{c:g}ms"
        subnet = sdir / "subnet.yml"
        if _stage(f"evolutionary search under {c:g} ms", subnet):
            _hat(["search", "--checkpoint", str(ckpt), "--predictor", str(lat_pt), "--latency-constraint", str(c),
                  "--data", str(data), "--out", str(subnet), "--population", str(b.search_population),
                  "--parents", str(b.search_parents), "--mutations", str(b.search_children),
                  "--crossovers", str(b.search_children), "--iterations", str(b.search_iterations),
                  "--valid-sentences", str(b.valid_sentences), "--no-progress"])
        models[f"HAT search @ {c:g} ms"] = subnet
    timed("search", t)

    # baselines
    base_dir = out / "baselines"
    base_dir.mkdir(exist_ok=True)
    largest = base_dir / "largest.yml"
    if not largest.exists():
        save_subconfig(space.largest(), largest)
    uniform = base_dir / "uniform.yml"
    if not uniform.exists():
        target = predictor.predict_one(load_subconfig(models[f"HAT search @ {constraints[0]:g} ms"]))
        cands = uniform_configs(space)
        preds = predictor.predict(cands)
        ok = [(num_params(cfg, space), cfg) for cfg, p in zip(cands, preds) if p <= target * 1.05]
        pick = max(ok, key=lambda x: x[0])[1] if ok else min(zip(preds, cands), key=lambda x: x[0])[1]
        save_subconfig(pick, uniform)
    models["largest subnet"] = largest
    models["uniformly shrunk"] = uniform

    # 6. fine-tune each briefly from inherited weights (same budget for all)
    t = time.time()
    finetuned: dict[str, Path] = {}
    for name, cfg_path in models.items():
        slug = cfg_path.parent.name if cfg_path.name == "subnet.yml" else cfg_path.stem
        fdir = out / "finetune" / slug
        if _stage(f"fine-tune {name}", fdir / "DONE"):
            _hat(["train", "--config", "tiny-cpu", f"data={data}", f"save_dir={fdir}", "sampling.policy=fixed",
                  f"sampling.subnet={cfg_path}", f"init_from={ckpt}", f"max_updates={b.finetune_updates}",
                  f"max_tokens={b.max_tokens}", "amp=bf16",
                  f"warmup_updates={max(2, b.finetune_updates // 10)}", "lr=5.0e-4",
                  f"validate_interval={b.finetune_updates}", f"save_interval={b.finetune_updates}"]
                 + (["max_valid_sentences=200"] if quick else []))
            (fdir / "DONE").touch()
        fck = fdir / "checkpoint_best.pt"
        finetuned[name] = fck if fck.exists() else fdir / "checkpoint_last.pt"
    timed("finetune", t)

    # 7. export + BLEU + measured latency
    t = time.time()
    rows = []
    from hat.latency.devices import resolve_device  # noqa: PLC0415
    from hat.latency.measure import Measurer, Protocol  # noqa: PLC0415

    dev = resolve_device(device)
    measurer = None
    for name, cfg_path in models.items():
        slug = cfg_path.parent.name if cfg_path.name == "subnet.yml" else cfg_path.stem
        edir = out / "export" / slug
        if _stage(f"export {name}", edir / "model.pt"):
            _hat(["export", "--checkpoint", str(finetuned[name]), "--config", str(cfg_path), "--data", str(data),
                  "--format", "standalone", "--out", str(edir)])
        res_path = edir / "bleu.json"
        if _stage(f"BLEU of {name}", res_path):
            import hat  # noqa: PLC0415
            from hat.evaluate import evaluate  # noqa: PLC0415

            res, hyps = evaluate(hat.load(edir / "model.pt"), data, "test", beam=b.beam, lenpen=0.6,
                                 limit=b.test_sentences)
            atomic_write_text(edir / "test.hyp.en", "\n".join(hyps) + "\n")
            atomic_write_text(res_path, json.dumps(res, indent=1))
        bleu = json.loads(res_path.read_text())
        lat_path = edir / "latency.json"
        cfg = load_subconfig(cfg_path)
        if _stage(f"measured latency of {name}", lat_path):
            if measurer is None:
                measurer = Measurer(space, Protocol.from_device(dev, space))
            m = measurer.measure(cfg)
            atomic_write_text(lat_path, json.dumps({"measured_ms": m["latency_mean_encoder"] + m["latency_mean_decoder"], **m}))
        rows.append({
            "model": name,
            "params_M": num_params(cfg, space) / 1e6,
            "predicted_ms": float(predictor.predict_one(cfg)),
            "measured_ms": json.loads(lat_path.read_text())["measured_ms"],
            "bleu": bleu["bleu"],
            "chrf": bleu.get("chrf"),
            "config": describe(cfg),
        })
    timed("evaluate", t)
    return write_summary(out, rows, constraints, b, timings, time.time() - t0)


def write_summary(out: Path, rows: list[dict], constraints: list[float], b: Budget, timings: dict[str, float],
                  wall: float) -> Path:
    lines = [
        "# hat demo: tiny SuperTransformer on Debian de-en, this CPU",
        "",
        f"Latency constraints: {', '.join(f'{c:g} ms' for c in constraints)} (25th and 60th percentile of the measured subnets).",
        f"BLEU: sacrebleu on the first {b.test_sentences} test sentences, beam {b.beam}; "
        f"every model fine-tuned {b.finetune_updates} updates from inherited weights.",
        "",
        "| model | params (M) | predicted ms | measured ms | BLEU | chrF | architecture |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        chrf = f"{r['chrf']:.1f}" if r.get("chrf") is not None else "-"
        lines.append(f"| {r['model']} | {r['params_M']:.2f} | {r['predicted_ms']:.1f} | {r['measured_ms']:.1f} | "
                     f"{r['bleu']:.2f} | {chrf} | {r['config']} |")
    lines += ["", "Stage wall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f"; total {wall:.0f}"]
    summary = out / "summary.md"
    atomic_write_text(summary, "\n".join(lines) + "\n")
    atomic_write_text(out / "summary.json", json.dumps({"rows": rows, "constraints": constraints, "timings": timings}, indent=1))
    _plot(out / "latency_vs_bleu.png", rows, constraints)
    print("\n" + "\n".join(lines))
    print(f"\n[demo] summary: {summary}\n[demo] plot: {out / 'latency_vs_bleu.png'}")
    return summary


def _plot(path: Path, rows: list[dict], constraints: list[float]) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        marker = "*" if r["model"].startswith("HAT") else "o"
        ax.scatter(r["measured_ms"], r["bleu"], s=120 if marker == "*" else 60, marker=marker, label=r["model"])
    for c in constraints:
        ax.axvline(c, color="grey", ls="--", lw=0.8)
        ax.annotate(f"{c:g} ms", (c, ax.get_ylim()[1]), fontsize=7, color="grey", ha="left", va="top")
    ax.set_xlabel("measured latency on this CPU (ms)")
    ax.set_ylabel("BLEU (test)")
    ax.set_title("Searched subnets vs hand-designed baselines", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
