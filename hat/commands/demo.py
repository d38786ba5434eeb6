"""`hat demo [--quick] [--with-baselines]`: the whole HAT pipeline on the Debian de-en corpus, on
this CPU, compared with what a user would otherwise train. `--quick` runs it on the sample corpus
bundled with hat (no download, no apt) with tiny budgets: a first look at the pipeline in about
2 minutes, not at model quality.

prepare -> train the tiny SuperTransformer (uniform sampling, a wall-clock budget) -> measure
latency of sampled subnets -> fit the predictor -> search under N latency constraints, each a share
of a reference model's latency measured against it (the largest subnet; the tightest: faster than
the hand-shrunk design of its class) -> fine-tune each found
subnet from inherited weights -> BLEU and latency measured in interleaved rounds -> summary
table + plot.

The cost of one delivered model is B = (SuperTransformer training + searches + fine-tuning) / N.
`--with-baselines` trains, each alone from scratch with budget B, the largest config
(`dedicated`), a uniformly shrunk config of the tightest constraint's latency class (`hand`) and
the tightest searched architecture (`searched-scratch`), so the summary answers "is the searched
model better than the one I would have trained anyway, at the same cost?"; and it puts `hand`'s
architecture and the largest subnet through the pipeline (`uniform`, `largest`).

Each stage writes its output under `--out` and is skipped when that output exists (stage times
are kept in `ledger.json`), so an interrupted demo resumes where it stopped. Stages run the same
`hat` commands a user would (through `hat.cli.main`), which is why the demo is a command itself.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hat.commands.demo_classes import LatencyClass, hand_design, latency_classes, latency_constraints
from hat.commands.demo_report import write_summary
from hat.commands.demo_state import Ledger, bleu_check, json_problem, spreads_problem, stage_needed
from hat.errors import HatError
from hat.files import atomic_write_text, read_json
from hat.latency.devices import resolve_device
from hat.model.generate import Decoding
from hat.space import (DesignSpace, describe, load_space, load_subconfig, load_subconfig_metadata, num_params,
                       save_subconfig)


@dataclass(frozen=True)
class Budget:
    super_minutes: float  # SuperTransformer training (its LR anneals within this wall-clock budget)
    finetune_minutes: float  # per searched subnet
    max_tokens: int
    super_warmup: int
    latency_samples: int
    latency_runs: int
    search_population: int
    search_parents: int
    search_children: int
    search_iterations: int
    valid_sentences: int
    constraints: tuple[float, ...]  # fractions of the largest subnet's predicted latency
    test_sentences: int
    beam: int
    rounds: int  # interleaved latency rounds in the final table
    max_updates: int  # a bound only: the wall-clock budgets end the runs
    # each search holds its share less this; the final table checks the share itself. The quick
    # demo times in one round and searches a handful of candidates: no room to spare, so none.
    search_margin: float = 0.0


# Sized for a 2-core CPU: the pipeline in about 45 minutes, the baselines about 40 more. Four
# constraints from one SuperTransformer: its cost is shared four ways (HAT's amortization). Each
# search 3 % inside its share: the ratio of two models re-timed 45-60 minutes later moved by up to
# 1.7 % (RESULTS 5b) and 4.3 % (5a, absorbed by that subnet's own room) on the shared 2-core VM.
FULL = Budget(20, 3, 2048, 300, 150, 10, 28, 8, 10, 6, 300, (0.45, 0.52, 0.59, 0.67), 1000, 4, 5, 100_000,
              search_margin=0.03)
# A first look on the bundled sample in about 2 minutes on 2 cores: the wall-clock budgets bound
# the training stages, so a slower or busier machine trains less rather than running long.
QUICK = Budget(0.5, 0.15, 1024, 5, 24, 3, 8, 2, 3, 2, 32, (0.5, 0.7), 50, 1, 2, 100_000)
QUICK_VALID = 64  # validation sentences of the quick demo's training stages
SCRATCH_WARMUP = 200  # the tiny-cpu recipe's warm-up, for every model trained from scratch
FASTER_BY = 0.05  # the tightest search: this much faster than the hand design, beyond the spread
# The tightest class starts at least this far above the fastest subnet: its hand design must leave
# room for designs FASTER_BY (and the search margin) faster (uniform designs crowd the bottom of the
# latency range; at 1.12 the search's only room was the smallest subnet itself).
HAND_ROOM = 1.2
# Fine-tuning: twice the recipe's peak LR, no distillation. A teacher forward per step halves the
# updates a wall-clock budget buys, and on this budget the updates are worth more than the teacher
# (benchmarks/RESULTS.md, "fine-tuning"); `sampling.distill=true` stays an option for long runs.
FINETUNE = ["lr=2.0e-3", "warmup_updates=20"]
CORPORA = {"sample": "the bundled sample (LibreOffice help de-en)", "debian": "Debian de-en"}  # by meta.json's corpus

EXAMPLES = """examples:
  hat demo --quick                    # bundled sample, tiny budgets: the pipeline in about 2 minutes
  hat demo                            # Debian corpus (needs apt), the real demo
  hat demo --with-baselines           # also models trained alone from scratch at the same cost
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run (or resume) the end-to-end pipeline (Debian de-en; --quick: bundled sample)",
                       description="prepare -> train -> measure -> fit predictor -> search (N constraints) -> "
                       "fine-tune -> BLEU + measured latency; --with-baselines adds models trained alone from "
                       "scratch with the same budget per model. Each stage is skipped when its output exists, "
                       "so a rerun resumes.", epilog=EXAMPLES)
    p.add_argument("--quick", action="store_true", help="tiny budgets on the bundled sample corpus: the pipeline "
                   "in about 2 minutes with no download (shows it runs, not model quality)")
    p.add_argument("--with-baselines", action="store_true",
                   help="also train dedicated / hand / searched-scratch baselines alone with budget B each")
    p.add_argument("--out", default=None, help="output directory (default runs/demo or runs/demo-quick)")
    p.add_argument("--data", default=None, help="corpus directory, built when missing (default data/debian.de-en; "
                   "with --quick data/sample.de-en, from the sample bundled with hat: no download)")
    p.add_argument("--device", default="cpu-2core", help="device for latency measurement (hat/configs/device)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = args.out or ("runs/demo-quick" if args.quick else "runs/demo")
    data = args.data or ("data/sample.de-en" if args.quick else "data/debian.de-en")
    run_demo(out, data, quick=args.quick, device=args.device, baselines=args.with_baselines)
    return 0


def _hat(argv: list[str]) -> None:
    from hat.cli import main  # noqa: PLC0415  (cli imports every command)

    print(f"\n$ hat {' '.join(argv)}", flush=True)
    rc = main(argv)
    if rc:
        raise HatError(f"stage `hat {argv[0]}` failed with exit code {rc}")


@dataclass
class Entry:
    """One model of the final table."""

    name: str
    kind: str
    cfg_path: Path
    save_dir: Path
    constraint_ms: float | None = None  # the predicted-latency limit its search held
    klass: LatencyClass | None = None  # searched rows: the share of a reference it must measure within

    @property
    def slug(self) -> str:
        return self.save_dir.name


def run_demo(out: str | Path = "runs/demo", data: str | Path = "data/debian.de-en", quick: bool = False,
             device: str = "cpu-2core", baselines: bool = False) -> Path:
    """Run (or resume) the demo; returns the path of the summary markdown."""
    b = QUICK if quick else FULL
    out, data = Path(out), Path(data)
    resolve_device(device)  # a bad --device is refused before any stage runs, not after the training
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out / "ledger.json")
    t_demo = time.time()
    small_valid = [f"max_valid_sentences={QUICK_VALID}"] if quick else []
    common = ["--config", "tiny-cpu", f"data={data}", f"max_tokens={b.max_tokens}", f"max_updates={b.max_updates}",
              "keep_interval_checkpoints=0", "progress=false" if quick else "progress=true"] + small_valid

    def timed(key: str, fn, *a) -> Any:
        t = time.time()
        try:
            return fn(*a)
        finally:
            ledger.add_time(key, time.time() - t)

    # 1. corpus: the quick demo's comes from the package, the full demo's from Debian
    if quick and stage_needed("prepare the bundled sample corpus", data / "meta.json"):
        timed("prepare", _hat, ["prepare", "sample", "--out", str(data)])
    if not quick and stage_needed("prepare the Debian de-en corpus", data / "meta.json"):
        timed("prepare", _hat, ["prepare", "debian", "--pair", "de-en", "--out", str(data)])
    # the demo reads checkpoint_last.pt; the quick one deletes checkpoint_best.pt, a copy it never reads
    finished = (lambda d: (d / "checkpoint_best.pt").unlink(missing_ok=True)) if quick else (lambda d: None)

    # 2. SuperTransformer: HAT's uniform sampling under a wall-clock budget
    super_dir = out / "supertransformer"
    if stage_needed("train the tiny SuperTransformer", super_dir / "DONE"):
        timed("super", _hat, ["train", *common, f"save_dir={super_dir}", "sampling.policy=uniform",
                              f"budget_minutes={b.super_minutes}", f"warmup_updates={b.super_warmup}",
                              "validate_interval=400", "save_interval=400", "save_interval_minutes=1"])
        (super_dir / "DONE").touch()
        finished(super_dir)
    ledger.record_run("super", super_dir)
    ckpt = super_dir / "checkpoint_last.pt"

    # 3-4. latency dataset on this machine, predictor
    lat_csv, lat_pt = out / "latency.csv", out / "latency.pt"
    if stage_needed("measure latency of sampled subnets on this machine", out / "latency.DONE"):
        timed("latency", _hat, ["measure", "--device", device, "--space", "tiny", "--samples", str(b.latency_samples),
                                "--runs", str(b.latency_runs), "--warmup", "2", "--out", str(lat_csv)])
        (out / "latency.DONE").touch()
    if stage_needed("fit the latency predictor", lat_pt):
        timed("latency", _hat, ["fit-predictor", "--data", str(lat_csv), "--out", str(lat_pt), "--space", "tiny",
                                "--device", device])
    from hat.latency.predictors import load_predictor  # noqa: PLC0415

    space = load_space("tiny")
    predictor = load_predictor(lat_pt, space)
    top, low = float(predictor.predict_one(space.largest())), float(predictor.predict_one(space.smallest()))
    constraints, rule = latency_constraints(b.constraints, top, low, room=HAND_ROOM)

    # 5. the hand design of the tightest class, then one search per class: a share of the largest
    # subnet's latency, the tightest "faster than hand by FASTER_BY", each measured against its
    # reference in the same rounds (`--faster-than`)
    base_dir = out / "baselines"
    base_dir.mkdir(exist_ok=True)
    hand_yml, largest_yml = base_dir / "hand.yml", base_dir / "largest.yml"
    if not hand_yml.exists():
        save_subconfig(hand_design(space, predictor, constraints[0]), hand_yml)
    if not largest_yml.exists():
        save_subconfig(space.largest(), largest_yml)
    classes = latency_classes(constraints, top, float(predictor.predict_one(load_subconfig(hand_yml))), low, FASTER_BY,
                              b.search_margin)
    rule += ("; each search holds its share of a reference model's latency (the largest subnet's; the tightest: "
             "the hand-shrunk design's), measured against it in the same rounds, so a drift both share cancels")
    if b.search_margin:
        rule += (f"; searches hold {1 - b.search_margin:g} x the share, room for re-measuring, and the final table "
                 "checks the share itself")
    refs = {"largest": largest_yml, "hand": hand_yml}
    entries: list[Entry] = []
    for i, k in enumerate(classes):
        subnet = out / k.slug / "subnet.yml"
        if stage_needed(f"evolutionary search under {k.label}", subnet):
            timed("search", _hat, ["search", "--checkpoint", str(ckpt), "--predictor", str(lat_pt),
                                   "--faster-than", str(refs[k.reference]), "--faster-by", f"{1 - k.search_share:g}",
                                   "--constraint-quantile", "0.5", "--data", str(data), "--out", str(subnet),
                                   "--population", str(b.search_population), "--parents", str(b.search_parents),
                                   "--mutations", str(b.search_children), "--crossovers", str(b.search_children),
                                   "--iterations", str(b.search_iterations),
                                   "--valid-sentences", str(b.valid_sentences), "--no-progress",
                                   "--device", device, "--verify", "3", "--verify-rounds", str(b.rounds),
                                   "--verify-batches", "5"])
        c = constraints[i] = round(float(load_subconfig_metadata(subnet)["latency"]["constraint_ms"]), 1)
        entries.append(Entry(f"searched, {k.label}", "searched", subnet, out / "finetune" / k.slug, c, k))

    if baselines:  # hand's architecture through the same pipeline: separates architecture from training
        entries.append(Entry("uniformly shrunk, fine-tuned", "uniform", hand_yml, out / "finetune" / "uniform"))
        entries.append(Entry("largest subnet, fine-tuned", "largest", largest_yml, out / "finetune" / "largest"))

    # 6. fine-tune from inherited weights
    for e in entries:
        if stage_needed(f"fine-tune {e.name}", e.save_dir / "DONE"):
            key = "finetune" if e.kind == "searched" else "finetune-extra"
            timed(key, _hat, ["train", *common, f"save_dir={e.save_dir}", "sampling.policy=fixed",
                              f"sampling.subnet={e.cfg_path}", f"init_from={ckpt}", *FINETUNE,
                              f"budget_minutes={b.finetune_minutes}", "validate_interval=100000",
                              "save_interval=100000", "save_interval_minutes=1"])
            (e.save_dir / "DONE").touch()
            finished(e.save_dir)
        ledger.record_run(e.slug, e.save_dir)

    # the budget per delivered model, from the stages' own clocks
    n = len(constraints)
    searched = [e for e in entries if e.kind == "searched"]
    ft = sum(ledger.record_run(e.slug, e.save_dir)["seconds"] for e in searched)
    budget = {"super_s": ledger.record_run("super", super_dir)["seconds"], "search_s": ledger.seconds("search"),
              "finetune_s": ft, "n_constraints": n}
    budget["per_model_s"] = (budget["super_s"] + budget["search_s"] + budget["finetune_s"]) / n

    # 7. baselines alone from scratch, budget B each
    if baselines:
        tight = searched[0]
        scratch = [("dedicated", "largest config, alone from scratch", largest_yml),
                   ("hand", "uniformly shrunk, alone from scratch", hand_yml),
                   ("searched-scratch", f"{tight.name} arch, alone from scratch", tight.cfg_path)]
        for kind, name, cfg_path in scratch:
            e = Entry(name, kind, cfg_path, out / "scratch" / kind)
            if stage_needed(f"train {name} ({budget['per_model_s']:.0f} s)", e.save_dir / "DONE"):
                timed("baselines", _hat, ["train", *common, f"save_dir={e.save_dir}", "sampling.policy=fixed",
                                          f"sampling.subnet={cfg_path}", f"warmup_updates={SCRATCH_WARMUP}",
                                          f"budget_minutes={budget['per_model_s'] / 60:.4f}",
                                          "validate_interval=100000", "save_interval=100000",
                                          "save_interval_minutes=1"])
                (e.save_dir / "DONE").touch()
                finished(e.save_dir)
            ledger.record_run(e.slug, e.save_dir)
            entries.append(e)

    # 8. export, BLEU, latency in interleaved rounds
    rows, references = timed("evaluate", _evaluate, out, data, entries, b, space, device, ledger, budget, refs)
    stages = [{"name": "SuperTransformer (uniform sampling)", **ledger.record_run("super", super_dir)}]
    stages += [{"name": f"{e.kind}: {e.name}", **ledger.record_run(e.slug, e.save_dir)} for e in entries]
    from hat.latency.measure import cpu_description  # noqa: PLC0415

    proto = _protocol(device, space, b)
    corpus = json.loads((data / "meta.json").read_text(encoding="utf-8")).get("corpus")
    meta = {
        "quick": quick, "corpus": CORPORA.get(corpus, str(data)), "machine": cpu_description(), "budget": budget,
        "stages": stages, "constraints": constraints, "constraint_rule": rule, "references": references,
        "protocol": f"batch {proto.batch}, beam {proto.beam}, {proto.src_len}+{proto.tgt_len} tokens, "
                    f"{proto.warmup} warm-ups + {proto.runs} runs",
        "rounds": b.rounds, "test_sentences": b.test_sentences, "beam": b.beam, "lenpen": Decoding.lenpen,
        "timings": dict(ledger.data["seconds"]), "wall_s": time.time() - t_demo,
    }
    return write_summary(out, rows, meta)


def _protocol(device: str, space: DesignSpace, b: Budget) -> Any:
    """The device's latency protocol; the quick demo times the final table with its own few runs."""
    from hat.latency.measure import Protocol  # noqa: PLC0415

    few = {"runs": b.latency_runs, "warmup": 2} if b == QUICK else {}
    return Protocol.from_device(resolve_device(device), space, **few)


def _evaluate(out: Path, data: Path, entries: list[Entry], b: Budget, space: DesignSpace, device: str,
              ledger: Ledger, budget: dict, refs: dict[str, Path]) -> tuple[list[dict], dict[str, dict]]:
    """Rows of the final table, and the reference models' spreads: the references are timed in the
    same rounds as the rows, so each searched row is checked against its share of them."""
    import hat  # noqa: PLC0415
    from hat.evaluate import evaluate, paired_bleu_pvalue  # noqa: PLC0415
    from hat.latency.compare import measure_interleaved  # noqa: PLC0415
    from hat.latency.measure import Measurer  # noqa: PLC0415

    rows, hyps = [], {}
    for e in entries:
        edir = out / "export" / e.slug
        if stage_needed(f"export {e.name}", edir / "model.pt"):
            _hat(["export", "--checkpoint", str(e.save_dir / "checkpoint_last.pt"), "--config", str(e.cfg_path),
                  "--data", str(data), "--format", "standalone", "--out", str(edir)])
        res_path, hyp_path = edir / "bleu.json", edir / "test.hyp"
        if stage_needed(f"BLEU of {e.name}", res_path, json_problem("BLEU result", bleu_check(hyp_path))):
            res, h = evaluate(hat.load(edir / "model.pt"), data, "test", beam=b.beam, lenpen=Decoding.lenpen,
                              limit=b.test_sentences)
            atomic_write_text(hyp_path, "\n".join(h) + "\n")
            atomic_write_text(res_path, json.dumps(res, indent=1))
        hyps[e.name] = hyp_path.read_text(encoding="utf-8").split("\n")[:-1]
        res = read_json(res_path, "BLEU result")
        run = ledger.record_run(e.slug, e.save_dir)
        cfg = load_subconfig(e.cfg_path)
        how = (f"inherited + fine-tuned {run['seconds']:.0f} s" if e.kind in ("searched", "largest", "uniform")
               else f"from scratch {run['seconds']:.0f} s")
        rows.append({"name": e.name, "kind": e.kind, "config": describe(cfg), "params_M": num_params(cfg, space) / 1e6,
                     "constraint_ms": e.constraint_ms, "bleu": res["bleu"], "chrf": res.get("chrf"),
                     "bleu_by_origin": {k: v["bleu"] for k, v in res.get("per_origin", {}).items()},
                     "model_path": str((edir / "model.pt").relative_to(out)), "budget_s": budget["per_model_s"],
                     "updates": run["updates"], "tokens": run["tokens"], "train_s": run["seconds"],
                     "training": f"{how}, {run['updates']} updates"})

    lat_path = out / "latency_final.json"
    configs = {r["name"]: load_subconfig(e.cfg_path) for r, e in zip(rows, entries)}
    configs.update({f"reference: {k}": load_subconfig(p) for k, p in refs.items()})
    lat_problem = json_problem("latency result", spreads_problem(list(configs)))
    if stage_needed(f"measure every model's latency in {b.rounds} interleaved rounds", lat_path, lat_problem):
        measurer = Measurer(space, _protocol(device, space, b))
        spreads = measure_interleaved(measurer.measure, configs, rounds=b.rounds,
                                      log=lambda s: print(f"[demo] latency {s}", flush=True))
        atomic_write_text(lat_path, json.dumps({k: v.to_dict() for k, v in spreads.items()}, indent=1))
    lat = _pool_references(read_json(lat_path, "latency result"), configs)
    refs_text = _references(data, b.test_sentences)
    bases = {r["name"]: hyps[r["name"]] for r in rows if r["kind"] in ("dedicated", "hand")}
    for r, e in zip(rows, entries):
        s = lat[r["name"]]
        r.update(measured_ms=s["median"], measured_low_ms=s["low"], measured_high_ms=s["high"],
                 measured_rounds=s["rounds"])
        if e.klass is not None:  # its constraint, in the same rounds: share x the reference's median
            ref = lat[f"reference: {e.klass.reference}"]
            limit = e.klass.share * ref["median"]
            r.update(constraint=e.klass.label, reference=e.klass.reference, share=e.klass.share,
                     search_share=e.klass.search_share, limit_ms=limit,
                     within_limit=s["median"] <= limit, ratio_to_reference=s["median"] / ref["median"])
        if r["kind"] == "searched":
            r["p_vs"] = {name: paired_bleu_pvalue(h, hyps[r["name"]], refs_text) for name, h in bases.items()}
    return rows, {k: lat[f"reference: {k}"] for k in refs}


def _pool_references(lat: dict[str, dict], configs: dict[str, Any]) -> dict[str, dict]:
    """Each `reference: X` spread over every round of every row with X's architecture (the largest
    subnet, `dedicated`, `hand`, `uniform` share one): in one run the same config's medians differed
    by 1.8 %, and a limit set from one of the three copies moves with it."""
    from hat.latency.compare import Spread  # noqa: PLC0415

    out = dict(lat)
    for name, cfg in configs.items():
        if name.startswith("reference: "):
            same = [v for n, c in configs.items() if c == cfg for v in lat[n].get("rounds", ())]
            out[name] = Spread.of(same).to_dict() if same else lat[name]
    return out


def _references(data: Path, n: int) -> list[str]:
    from hat.data.dataset import ParallelDataset  # noqa: PLC0415
    from hat.evaluate import read_references  # noqa: PLC0415

    ds = ParallelDataset(data, "test")
    return read_references(data, "test", ds.tgt_lang, len(ds))[:n]
