"""`hat demo [--quick] [--with-baselines | --with-uniform]`: the whole HAT pipeline on the Debian de-en corpus, on
this CPU, compared with what a user would otherwise train. `--quick` runs it on the sample corpus
bundled with hat (no download, no apt) with tiny budgets: a first look at the pipeline in about
2 minutes, not at model quality.

prepare -> train the tiny SuperTransformer (uniform sampling, a wall-clock budget) -> measure
latency of sampled subnets -> fit the predictor -> search under N latency constraints, each a share
of a reference model's latency measured against it (the largest subnet; the tightest: faster than
the hand-shrunk design of its class), each choosing its subnet by successive halving over its
finalists and the tighter classes' picks -> fine-tune each found subnet from inherited weights ->
BLEU and latency measured in interleaved rounds -> summary table + plot.

The cost of one delivered model is B = (SuperTransformer training + latency measurement and
predictor + searches + fine-tuning) / N.
`--with-baselines` trains, each alone from scratch with budget B and one recipe (`SCRATCH`), the
largest config (`dedicated`), a uniformly shrunk config of the tightest constraint's latency class
(`hand`; `hand-max` by the earlier rule, when it differs: the comparison's sensitivity to that
choice) and the tightest searched architecture (`searched-scratch`), so the summary answers "is the
searched model better than the one I would have trained anyway, at the same cost?"; and it puts
each class's uniformly scaled design (`uniform`: HAT's baseline front) and the largest subnet
(`largest`) through the pipeline, which is all `--with-uniform` adds.

Each stage writes its output under `--out` and is skipped when that output exists (stage times
are kept in `ledger.json`), so an interrupted demo resumes where it stopped. Stages run the same
`hat` commands a user would (through `hat.cli.main`), which is why the demo is a command itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hat.commands.demo_classes import (
    HAND_BAND,
    LatencyClass,
    hand_design,
    latency_classes,
    latency_constraints,
    uniform_design,
)
from hat.commands.demo_evaluate import evaluate_entries, protocol
from hat.commands.demo_report import write_summary
from hat.commands.demo_state import Ledger, stage_needed
from hat.errors import HatError
from hat.latency.devices import resolve_device
from hat.model.generate import Decoding
from hat.space import load_space, load_subconfig, load_subconfig_metadata, save_subconfig


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
    # the tightest search: this much faster than the hand design, beyond the spread. The quick demo's
    # few noisy timings leave no room for 5 %: it searches at hand's latency (no slower than it).
    faster_by: float = 0.05
    # each search's final choice: successive halving over this many finalists (plus the tighter
    # classes' picks) by fine-tunes of `select_minutes` x 2^rung (`hat search --select halving`);
    # 0: the best inherited loss (HAT's choice)
    select_candidates: int = 0
    select_minutes: float = 0.5
    select_rungs: int = 0  # 0: halve until one is left
    # the selection's fine-tune is the delivered one (`--select-keep`): one rung at the full
    # fine-tuning budget chooses by the final model's own validation loss, and needs no second run
    select_keep: bool = False

    def __post_init__(self) -> None:
        if self.select_keep and (self.select_rungs != 1 or self.select_minutes != self.finetune_minutes):
            raise ValueError("select_keep delivers the selection's fine-tune: one rung of finetune_minutes, so the "
                             "searched and uniform rows are fine-tuned alike")


# Sized for a 2-core CPU: the pipeline in about an hour (RESULTS 5a3), the baselines about 40 more. Four
# constraints from one SuperTransformer: its cost is shared four ways (HAT's amortization). Each
# search 3 % inside its share: the ratio of two models re-timed 45-60 minutes later moved by up to
# 1.7 % (RESULTS 5c) and 4.3 % (5b, absorbed by that subnet's own room) on the shared 2-core VM.
FULL = Budget(20, 3, 2048, 300, 150, 10, 28, 8, 10, 6, 300, (0.45, 0.52, 0.59, 0.67), 1000, 4, 5, 100_000,
              search_margin=0.03, select_candidates=2, select_minutes=3, select_rungs=1, select_keep=True)
# A first look on the bundled sample in about 2 minutes on 2 cores: the wall-clock budgets bound
# the training stages, so a slower or busier machine trains less rather than running long.
QUICK = Budget(0.5, 0.15, 1024, 5, 24, 3, 8, 2, 3, 2, 32, (0.5, 0.7), 50, 1, 2, 100_000, faster_by=0.0,
               select_candidates=2, select_minutes=0.15, select_rungs=1, select_keep=True)
QUICK_VALID = 64  # validation sentences of the quick demo's training stages
# Every model trained alone from scratch with budget B: warm-up over a share of the budget (200
# updates, the recipe's, were 38 % of one baseline's run and 16 % of another's) and the peak LR of a
# three-value sweep at B on the demo's data: 5e-4 / 1e-3 / 2e-3 gave valid loss 5.40 / 4.98 / 5.06
# (benchmarks/sweep_scratch_lr.py, RESULTS 5a).
SCRATCH = ["lr=1.0e-3", "warmup_updates=0", "warmup_share=0.1"]
# The tightest class starts at least this far above the fastest subnet: its hand design must leave
# room for designs `faster_by` (and the search margin) faster (uniform designs crowd the bottom of the
# latency range; at 1.12 the search's only room was the smallest subnet itself).
HAND_ROOM = 1.2
# Fine-tuning: twice the recipe's peak LR, no distillation. A teacher forward per step halves the
# updates a wall-clock budget buys, and on this budget the updates are worth more than the teacher
# (benchmarks/RESULTS.md, "fine-tuning"); `sampling.distill=true` stays an option for long runs.
FINETUNE = ["lr=2.0e-3", "warmup_updates=20"]
RECIPES = {"fine-tuning": FINETUNE, "from scratch": SCRATCH}  # printed in the summary
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
                   help="also train dedicated / hand / searched-scratch baselines alone with budget B each, and put "
                   "each class's uniformly scaled design and the largest subnet through the pipeline")
    p.add_argument("--with-uniform", action="store_true",
                   help="only the pipeline baselines of --with-baselines: each class's uniformly scaled design and "
                   "the largest subnet, inherited + fine-tuned like the searched subnets (no training from scratch)")
    p.add_argument("--out", default=None, help="output directory (default runs/demo or runs/demo-quick)")
    p.add_argument("--data", default=None, help="corpus directory, built when missing (default data/debian.de-en; "
                   "with --quick data/sample.de-en, from the sample bundled with hat: no download)")
    p.add_argument("--device", default="cpu-2core", help="device for latency measurement (hat/configs/device)")
    p.add_argument("--faster-by", type=float, default=None, help="the tightest class: this much faster than the "
                   "hand-shrunk design (default 0.05; 0.0 for --quick). Lower it when no subnet of the space measures "
                   "that much faster than hand on your machine (the search's --verify then fails)")
    p.add_argument("--no-verify", action="store_true", help="searches hold their predicted constraint only, not "
                   "timed at search time (for a machine too noisy for --verify to decide); the final table still "
                   "checks every share against its reference, timed in the same rounds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = args.out or ("runs/demo-quick" if args.quick else "runs/demo")
    data = args.data or ("data/sample.de-en" if args.quick else "data/debian.de-en")
    if args.faster_by is not None and not 0 <= args.faster_by < 0.5:
        raise HatError(f"--faster-by {args.faster_by:g}: must be a fraction in [0, 0.5), e.g. 0.05")
    run_demo(out, data, quick=args.quick, device=args.device, baselines=args.with_baselines,
             uniform=args.with_uniform, faster_by=args.faster_by, verify=not args.no_verify)
    return 0


def hat_stage(argv: list[str]) -> None:
    from hat.cli import main  # noqa: PLC0415  (cli imports every command)

    print(f"\n$ hat {' '.join(argv)}", flush=True)
    rc = main(argv)
    if rc:
        hint = ("; rerun `hat demo` to time the candidates again (the search and its selection resume from their "
                "files), or lower --faster-by when no subnet measures that much faster than hand here"
                if argv[0] == "search" and "--verify" in argv else "")
        raise HatError(f"stage `hat {argv[0]}` failed with exit code {rc}{hint}")


@dataclass
class Entry:
    """One model of the final table."""

    name: str
    kind: str
    cfg_path: Path
    save_dir: Path
    constraint_ms: float | None = None  # the predicted-latency limit its search held
    klass: LatencyClass | None = None  # searched and uniform rows: the share of a reference it must measure within
    same_as: str | None = None  # a tighter class's row with the same architecture: its model is delivered again
    kept: bool = False  # its fine-tune ran inside its search's selection (`--select-keep`), timed with the search

    @property
    def slug(self) -> str:
        return self.save_dir.name


def _entry(name: str, kind: str, cfg_path: Path, save_dir: Path, constraint: float, klass: LatencyClass,
           entries: list[Entry], kept: bool = False) -> Entry:
    """A row of a latency class; when an earlier row of its kind has the same architecture, its
    fine-tuned model is delivered again (and the summary says so) rather than trained twice."""
    cfg = load_subconfig(cfg_path)
    twin = next((e for e in entries if e.kind == kind and load_subconfig(e.cfg_path) == cfg), None)
    return Entry(name, kind, cfg_path, twin.save_dir if twin else save_dir, constraint, klass,
                 twin.name if twin else None, kept)


def run_demo(out: str | Path = "runs/demo", data: str | Path = "data/debian.de-en", quick: bool = False,
             device: str = "cpu-2core", baselines: bool = False, uniform: bool = False,
             faster_by: float | None = None, verify: bool = True) -> Path:
    """Run (or resume) the demo; returns the path of the summary markdown."""
    b = QUICK if quick else FULL
    b = b if faster_by is None else dataclasses.replace(b, faster_by=faster_by)
    out, data = Path(out), Path(data)
    uniform = uniform or baselines
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
        timed("prepare", hat_stage, ["prepare", "sample", "--out", str(data)])
    if not quick and stage_needed("prepare the Debian de-en corpus", data / "meta.json"):
        timed("prepare", hat_stage, ["prepare", "debian", "--pair", "de-en", "--out", str(data)])
    # the demo reads checkpoint_last.pt; the quick one deletes checkpoint_best.pt, a copy it never reads
    finished = (lambda d: (d / "checkpoint_best.pt").unlink(missing_ok=True)) if quick else (lambda d: None)

    # 2. SuperTransformer: HAT's uniform sampling under a wall-clock budget
    super_dir = out / "supertransformer"
    if stage_needed("train the tiny SuperTransformer", super_dir / "DONE"):
        timed("super", hat_stage, ["train", *common, f"save_dir={super_dir}", "sampling.policy=uniform",
                              f"budget_minutes={b.super_minutes}", f"warmup_updates={b.super_warmup}",
                              "validate_interval=400", "save_interval=400", "save_interval_minutes=1"])
        (super_dir / "DONE").touch()
        finished(super_dir)
    ledger.record_run("super", super_dir)
    ckpt = super_dir / "checkpoint_last.pt"

    # 3-4. latency dataset on this machine, predictor
    lat_csv, lat_pt = out / "latency.csv", out / "latency.pt"
    if stage_needed("measure latency of sampled subnets on this machine", out / "latency.DONE"):
        timed("latency", hat_stage, ["measure", "--device", device, "--space", "tiny", "--samples", str(b.latency_samples),
                                "--runs", str(b.latency_runs), "--warmup", "2", "--out", str(lat_csv)])
        (out / "latency.DONE").touch()
    if stage_needed("fit the latency predictor", lat_pt):
        timed("latency", hat_stage, ["fit-predictor", "--data", str(lat_csv), "--out", str(lat_pt), "--space", "tiny",
                                "--device", device])
    from hat.latency.predictors import load_predictor  # noqa: PLC0415

    space = load_space("tiny")
    predictor = load_predictor(lat_pt, space)
    top, low = float(predictor.predict_one(space.largest())), float(predictor.predict_one(space.smallest()))
    constraints, rule = latency_constraints(b.constraints, top, low, room=HAND_ROOM)

    # 5. the hand design of the tightest class (and, as its sensitivity, the earlier rule's), then
    # one search per class: a share of the largest subnet's latency, the tightest "faster than hand
    # by `faster_by`", each measured against its reference in the same rounds (`--faster-than`)
    base_dir = out / "baselines"
    base_dir.mkdir(exist_ok=True)
    hand_yml, hand_max_yml, largest_yml = base_dir / "hand.yml", base_dir / "hand-max.yml", base_dir / "largest.yml"
    if not hand_yml.exists():
        save_subconfig(hand_design(space, predictor, constraints[0]), hand_yml)
    if not hand_max_yml.exists():
        save_subconfig(hand_design(space, predictor, constraints[0], rule="most"), hand_max_yml)
    if not largest_yml.exists():
        save_subconfig(space.largest(), largest_yml)
    classes = latency_classes(constraints, top, float(predictor.predict_one(load_subconfig(hand_yml))), low, b.faster_by,
                              b.search_margin)
    rule += (f"; `hand`: of the uniform designs predicted within {HAND_BAND:g}-1x the tightest constraint, the "
             "fewest parameters (`hand-max`: the most parameters under it)")
    rule += ("; each search holds its share of a reference model's latency (the largest subnet's; the tightest: "
             "the hand-shrunk design's), measured against it in the same rounds, so a drift both share cancels")
    if b.search_margin:
        rule += (f"; searches hold {1 - b.search_margin:g} x the share, room for re-measuring, and the final table "
                 "checks the share itself")
    refs = {"largest": largest_yml, "hand": hand_yml}
    # the final choice of each search: successive halving by short fine-tunes, over its finalists and
    # the tighter classes' picks (a looser class can always deliver what a tighter one did)
    select = ["--select", "halving", "--select-candidates", str(b.select_candidates), "--select-minutes",
              f"{b.select_minutes:g}", "--select-rungs", str(b.select_rungs), "--select-train", " ".join(FINETUNE),
              "--select-dir", str(out / "select")] if b.select_candidates else []
    timing = ["--verify", "3", "--verify-rounds", str(b.rounds), "--verify-batches", "5"] if verify else []
    entries: list[Entry] = []
    for i, k in enumerate(classes):
        subnet, ft_dir = out / k.slug / "subnet.yml", out / "finetune" / k.slug
        include = [x for e in entries for x in ("--include", str(e.cfg_path))] if select else []
        keep = ["--select-keep", str(ft_dir)] if select and b.select_keep else []
        if stage_needed(f"evolutionary search under {k.label}", subnet):
            timed("search", hat_stage, ["search", "--checkpoint", str(ckpt), "--predictor", str(lat_pt),
                                        "--faster-than", str(refs[k.reference]), "--faster-by",
                                        f"{1 - k.search_share:g}", "--constraint-quantile", "0.5",
                                        "--data", str(data), "--out", str(subnet),
                                        "--population", str(b.search_population), "--parents", str(b.search_parents),
                                        "--mutations", str(b.search_children), "--crossovers", str(b.search_children),
                                        "--iterations", str(b.search_iterations),
                                        "--valid-sentences", str(b.valid_sentences), "--no-progress",
                                        "--device", device, *timing, *select, *include, *keep])
        if keep and (ft_dir / "checkpoint_last.pt").is_file():  # the selection fine-tuned the pick already
            (ft_dir / "DONE").touch()
        c = constraints[i] = round(float(load_subconfig_metadata(subnet)["latency"]["constraint_ms"]), 1)
        entries.append(_entry(f"searched, {k.label}", "searched", subnet, ft_dir, c, k, entries, bool(keep)))

    if uniform:  # each class's uniformly scaled design, and the largest subnet, through the same pipeline
        for i, k in enumerate(classes):
            yml = base_dir / f"uniform-{k.slug.removeprefix('search-')}.yml"
            if not yml.exists():
                save_subconfig(uniform_design(space, predictor, constraints[i]), yml)
            entries.append(_entry(f"uniform, {k.label}", "uniform", yml, out / "finetune" / yml.stem, constraints[i],
                                  k, entries))
        entries.append(Entry("largest subnet, fine-tuned", "largest", largest_yml, out / "finetune" / "largest"))

    # 6. fine-tune from inherited weights
    for e in entries:
        if stage_needed(f"fine-tune {e.name}", e.save_dir / "DONE"):
            key = "finetune" if e.kind == "searched" else "finetune-extra"
            timed(key, hat_stage, ["train", *common, f"save_dir={e.save_dir}", "sampling.policy=fixed",
                              f"sampling.subnet={e.cfg_path}", f"init_from={ckpt}", *FINETUNE,
                              f"budget_minutes={b.finetune_minutes}", "validate_interval=100000",
                              "save_interval=100000", "save_interval_minutes=1"])
            (e.save_dir / "DONE").touch()
            finished(e.save_dir)
        ledger.record_run(e.slug, e.save_dir)

    # the budget per delivered model, from the stages' own clocks
    n = len(constraints)
    searched = [e for e in entries if e.kind == "searched"]
    ft = sum(ledger.record_run(e.slug, e.save_dir)["seconds"] for e in {e.slug: e for e in searched}.values()
             if not e.kept)  # a kept fine-tune is inside its search's time
    budget = {"super_s": ledger.record_run("super", super_dir)["seconds"], "latency_s": ledger.seconds("latency"),
              "search_s": ledger.seconds("search"), "finetune_s": ft, "n_constraints": n}
    budget["per_model_s"] = (budget["super_s"] + budget["latency_s"] + budget["search_s"] + budget["finetune_s"]) / n

    # 7. baselines alone from scratch, budget B each
    if baselines:
        tight = searched[0]
        scratch = [("dedicated", "largest config, alone from scratch", largest_yml),
                   ("hand", "uniformly shrunk, alone from scratch", hand_yml),
                   ("hand-max", "uniformly shrunk, most params, alone from scratch", hand_max_yml),
                   ("searched-scratch", f"{tight.name} arch, alone from scratch", tight.cfg_path)]
        if load_subconfig(hand_max_yml) == load_subconfig(hand_yml):  # the two rules agree: one row
            scratch = [x for x in scratch if x[0] != "hand-max"]
        for kind, name, cfg_path in scratch:
            e = Entry(name, kind, cfg_path, out / "scratch" / kind)
            if stage_needed(f"train {name} ({budget['per_model_s']:.0f} s)", e.save_dir / "DONE"):
                timed("baselines", hat_stage, ["train", *common, f"save_dir={e.save_dir}", "sampling.policy=fixed",
                                          f"sampling.subnet={cfg_path}", *SCRATCH,
                                          f"budget_minutes={budget['per_model_s'] / 60:.4f}",
                                          "validate_interval=100000", "save_interval=100000",
                                          "save_interval_minutes=1"])
                (e.save_dir / "DONE").touch()
                finished(e.save_dir)
            ledger.record_run(e.slug, e.save_dir)
            entries.append(e)

    # 8. export, BLEU, latency in interleaved rounds
    rows, references = timed("evaluate", evaluate_entries, out, data, entries, b, space, device, ledger, budget, refs,
                             quick)
    stages = [{"name": "SuperTransformer (uniform sampling)", **ledger.record_run("super", super_dir)}]
    stages += [{"name": f"{e.kind}: {e.name}", **ledger.record_run(e.slug, e.save_dir)} for e in entries
               if not e.same_as]
    from hat.latency.measure import cpu_description  # noqa: PLC0415

    proto = protocol(device, space, b, quick)
    corpus = json.loads((data / "meta.json").read_text(encoding="utf-8")).get("corpus")
    meta = {
        "select": _select_rule(b),
        "quick": quick, "corpus": CORPORA.get(corpus, str(data)), "machine": cpu_description(), "budget": budget,
        "stages": stages, "constraints": constraints, "constraint_rule": rule, "references": references,
        "protocol": f"batch {proto.batch}, beam {proto.beam}, {proto.src_len}+{proto.tgt_len} tokens, "
                    f"{proto.warmup} warm-ups + {proto.runs} runs",
        "rounds": b.rounds, "test_sentences": b.test_sentences, "beam": b.beam, "lenpen": Decoding.lenpen,
        "timings": dict(ledger.data["seconds"]), "wall_s": time.time() - t_demo,
        "recipes": {k: " ".join(v) for k, v in RECIPES.items()},
    }
    return write_summary(out, rows, meta)


def _select_rule(b: Budget) -> str:
    """How each search made its final choice, in the summary's words."""
    if not b.select_candidates:
        return "the best inherited loss"
    if b.select_keep:
        return (f"the lowest validation loss after the full {b.select_minutes:g}-min fine-tune of {b.select_candidates} "
                "finalists + the tighter classes' picks; the chosen fine-tune is the delivered model")
    return (f"successive halving over {b.select_candidates} finalists + the tighter classes' picks, fine-tunes of "
            f"{b.select_minutes:g} min x 2^rung")
