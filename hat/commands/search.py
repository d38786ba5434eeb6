"""`hat search`: latency-constrained architecture search over a trained SuperTransformer.

    hat search --checkpoint SUPER.pt --device cpu-2core --latency-constraint 60 \
        --data data/debian.de-en --out search/subnet.yml

Writes the best subnet (our YAML, with the latency it was chosen by under `metadata:`, and HAT's
`.hat.yml`), a per-generation log CSV, the Pareto front of all evaluated candidates (CSV + PNG),
TensorBoard scalars, and a state file that lets a killed search resume (`--no-resume` starts
over). The constraint holds the upper bound of the predictor's 90 % interval, not its point
estimate (`--constraint-quantile`); `--verify N` times the N best candidates on this machine
when it is the device, and writes what it measured to `.verify.csv`. `--faster-than REF.yml`
makes the constraint relative to a model the user has (a hand-shrunk baseline, the model in
production): predicted below (1 - `--faster-by`) x REF's prediction, and with `--verify` measured
faster than REF, timed in the same rounds, by that margin and beyond the spread. `--select halving`
chooses among the finalists by short fine-tunes from inherited weights instead of by score, and
`--include OTHER.yml` adds another search's pick to the candidates (hat.commands.search_select).
Under torchrun
(`torchrun --nproc_per_node 2 search.py ...`, gloo on CPU) every rank runs the same seeded
search and scores a share of each generation; rank 0 writes the files. `--task lm` searches a
decoder-only LM space instead (hat.commands.search_lm).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from hat.commands.search_select import (
    SELECT_OPTIONS,
    add_select_arguments,
    check_select_args,
    include_candidates,
    select_final,
)
from hat.commands.search_lm import add_lm_arguments, refuse_lm_space, run_lm_search
from hat.commands.settings import Option, add_option, apply_settings, compute_device, dataclass_options
from hat.errors import CheckpointError, DataError, HatError
from hat.files import file_digest, files_digest
from hat.latency.devices import resolve_device
from hat.search import ALGORITHMS, SCORERS, EvolutionSettings, LossSettings

SEARCH_OPTIONS = {
    "device": Option(str), "predictor": Option(str), "latency_constraint": Option(float), "space": Option(str),
    "algorithm": Option(str, "evolution"), "scorer": Option(str, "loss"),
    **dataclass_options(EvolutionSettings, skip=("feasibility_samples",)),
    **dataclass_options(LossSettings),
    "threads": Option(int, 0), "compute": Option(str, "auto"), "constraint_quantile": Option(float),
    "verify": Option(int, 0), "verify_rounds": Option(int, 5), "verify_batches": Option(int, 3),
    "faster_than": Option(str), "faster_by": Option(float, 0.05),
    **SELECT_OPTIONS,
}


# HAT's evolution: a first population of random feasible candidates is scored; each iteration
# keeps the best `parents`, breeds `mutations` + `crossovers` new ones, and the next generation is
# parents + children, so population = parents + mutations + crossovers (HAT: 125 = 25 + 50 + 50).
EVOLUTION_HELP = {
    "population": "candidates per generation; must equal parents + mutations + crossovers (HAT: 125)",
    "parents": "best candidates kept from each generation as parents of the next (HAT: 25)",
    "mutations": "children per generation made by mutating a parent (HAT: 50)",
    "crossovers": "children per generation made by crossing two parents (HAT: 50)",
    "iterations": "generations after the first (HAT: 30); scored candidates = population + iterations x "
                  "(mutations + crossovers)",
    "mutate_prob": "probability that a mutation resamples each architecture choice (HAT: 0.3)",
    "seed": "search RNG seed",
}
EXAMPLES = """examples:
  hat search --checkpoint checkpoints/tiny-debian/checkpoint_best.pt --device cpu-2core \\
      --latency-constraint 60 --data data/debian.de-en --out search/subnet.yml
  hat search --config tiny@cpu-2core --checkpoint SUPER.pt --data data/debian.de-en --out subnet.yml
  hat search --scorer params --space tiny --device cpu-2core --latency-constraint 60 --out subnet.yml
  # the final choice by short fine-tunes; a looser constraint that may deliver the tighter one's pick
  hat search --checkpoint SUPER.pt --device cpu-2core --latency-constraint 70 --data data/debian.de-en \\
      --out loose.yml --select halving --include tight.yml
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="latency-constrained architecture search (HAT's evolution)",
                       description="Search a SubTransformer that meets a latency constraint on a device. "
                                   "Values: defaults < --config settings file < flags.", epilog=EXAMPLES)
    g = p.add_argument_group("inputs")
    g.add_argument("--config", help="search settings: a shipped name (hat/configs/search, e.g. tiny@cpu-2core), a "
                                    "YAML file whose keys are the options below (with _ for -), or HAT's "
                                    "evo_search/*.yml (its predictor in ckpt-path, its subnet in write-config-path)")
    g.add_argument("--checkpoint", help="SuperTransformer checkpoint from `hat train` (needed by --scorer loss)")
    g.add_argument("--device", help="device name (hat/configs/device) or device YAML; gives the latency predictor")
    g.add_argument("--predictor", help="latency predictor file (overrides the device's), or macs[:MS_PER_GMAC] "
                                       "for a device-free MACs proxy")
    g.add_argument("--latency-constraint", type=float, help="max predicted latency in ms (required except nsga2, "
                                                               "or give --faster-than)")
    add_option(g, SEARCH_OPTIONS, "faster_than", "a subnet YAML to beat instead of a number: the constraint is "
               "(1 - --faster-by) x its predicted latency; with --verify, measured against it in the same rounds")
    add_option(g, SEARCH_OPTIONS, "faster_by", "with --faster-than: the margin, a fraction of the reference's latency")
    add_option(g, SEARCH_OPTIONS, "constraint_quantile", "which prediction must meet the constraint: this quantile of "
               "the device's latency by the predictor's calibrated interval (default: the 90%% interval's upper bound, "
               "0.95; 0.5: the median)")
    g.add_argument("--data", help="data directory from `hat prepare` (needed by --scorer loss)")
    g.add_argument("--space", help="design space name or YAML (default: the checkpoint's)")
    g.add_argument("--out", help="best subnet YAML (required unless a HAT settings file gives write-config-path); "
                                 "siblings get .hat.yml, .log.csv, .pareto.csv/.png")
    a = p.add_argument_group("algorithm (HAT's defaults)")
    add_option(a, SEARCH_OPTIONS, "algorithm", choices=ALGORITHMS.names())
    add_option(a, SEARCH_OPTIONS, "scorer", "loss: inherited-weight validation loss; params: -decoder non-embedding "
               "params (no training)", choices=SCORERS.names())
    for name, text in EVOLUTION_HELP.items():
        add_option(a, SEARCH_OPTIONS, name, text)
    add_option(a, SEARCH_OPTIONS, "max_tries", "resampling guard per candidate")
    s = p.add_argument_group("loss scorer")
    add_option(s, SEARCH_OPTIONS, "valid_subset")
    add_option(s, SEARCH_OPTIONS, "valid_sentences", "fixed seeded subset size (0: all)")
    add_option(s, SEARCH_OPTIONS, "max_tokens")
    add_option(s, SEARCH_OPTIONS, "label_smoothing")
    s.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    s.add_argument("--compute", help="where the loss scorer runs: auto (the rank's GPU if any; default), cpu, cuda[:N]")
    v = p.add_argument_group("measured constraint (when the device is this machine)")
    add_option(v, SEARCH_OPTIONS, "verify", "re-measure the N best feasible candidates at the end with the device's "
               "full protocol and return the best whose measured median meets the constraint (0: off)")
    add_option(v, SEARCH_OPTIONS, "verify_rounds", "interleaved rounds of --verify (A B C, A B C, ...)")
    add_option(v, SEARCH_OPTIONS, "verify_batches", "when none of the N meets it, time the next N, up to this many "
               "batches of N")
    add_select_arguments(p.add_argument_group("final choice"), SEARCH_OPTIONS)
    add_lm_arguments(p)
    o = p.add_argument_group("outputs")
    o.add_argument("--state", help="state file (default OUT_STEM.state.json)")
    o.add_argument("--no-resume", action="store_true", help="ignore an existing state file")
    o.add_argument("--log-csv", help="per-generation log (default OUT_STEM.log.csv)")
    o.add_argument("--tensorboard-dir", help="TensorBoard dir (default OUT_STEM.tb; 'none' disables)")
    o.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def out_paths(out: str | Path) -> dict[str, Path]:
    """`dir/subnet.yml` -> `dir/subnet.hat.yml`, `.log.csv`, `.pareto.csv`, `.pareto.png`, `.state.json`, `.tb`,
    `.verify.csv`, `.select/`, `.select.csv`."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".yml", ".yaml") else out
    s = str(stem)
    return {"out": out, "hat": Path(s + ".hat.yml"), "log": Path(s + ".log.csv"), "pareto_csv": Path(s + ".pareto.csv"),
            "pareto_png": Path(s + ".pareto.png"), "state": Path(s + ".state.json"), "tb": Path(s + ".tb"),
            "verify": Path(s + ".verify.csv"), "select": Path(s + ".select"), "select_csv": Path(s + ".select.csv")}


def run(args: argparse.Namespace) -> int:
    from hat.commands.hat_settings import apply_hat_settings, read_hat_settings

    hat_values = read_hat_settings(args.config) if args.config else None
    args.hat_predictor = None
    if hat_values is not None:  # HAT's evo_search file: its keys are its flags
        apply_hat_settings(args, hat_values, Path(args.config))
        args.hat_settings, args.config = args.config, None
    apply_settings(args, SEARCH_OPTIONS, "search", "search settings")
    if not args.out:
        raise HatError("--out SUBNET.yml is required (or write-config-path in a HAT settings file)")
    if args.task == "lm":  # decoder-only LMs: LiteTransformerSearch's front (hat.commands.search_lm)
        return run_lm_search(args)
    refuse_lm_space(args)
    # ---- cheap input checks first: bad input fails in milliseconds with one line -------
    scorer_cls = SCORERS.get(args.scorer)
    algorithm = ALGORITHMS.get(args.algorithm)
    if scorer_cls.needs_model:
        if not args.checkpoint:
            raise HatError(f"--scorer {args.scorer} needs --checkpoint (or use --scorer params)")
        if not args.data:
            raise HatError(f"--scorer {args.scorer} needs --data (a `hat prepare` directory)")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise CheckpointError(f"{args.checkpoint}: no such checkpoint file")
    if args.data and not Path(args.data, "meta.json").is_file():
        raise DataError(f"{args.data}: not a `hat prepare` data directory (no meta.json)")
    if not args.device and not args.predictor and not args.hat_predictor:
        raise HatError("give --device NAME (its latency predictor) or --predictor FILE")
    if args.device and not args.predictor and not args.hat_predictor:
        resolve_device(args.device)  # unknown device -> one-line ConfigError
    if args.faster_than is not None and args.latency_constraint is not None:
        raise HatError("give --latency-constraint MS or --faster-than REF.yml, not both")
    if args.latency_constraint is None and args.faster_than is None and args.algorithm != "nsga2":
        raise HatError("--latency-constraint MS (or --faster-than REF.yml) is required (nsga2 may omit it for the "
                       "unconstrained front)")
    if not 0 <= args.faster_by < 1:
        raise HatError(f"--faster-by {args.faster_by:g}: must be a fraction in [0, 1), e.g. 0.05")
    if args.latency_constraint is not None and args.latency_constraint <= 0:
        raise HatError(f"--latency-constraint {args.latency_constraint:g}: must be positive")
    if args.constraint_quantile is not None and not 0 < args.constraint_quantile < 1:
        raise HatError(f"--constraint-quantile {args.constraint_quantile:g}: must be between 0 and 1 (e.g. 0.95)")
    if args.verify < 0 or args.verify_rounds < 1 or args.verify_batches < 1:
        raise HatError(f"--verify {args.verify} / --verify-rounds {args.verify_rounds} / --verify-batches "
                       f"{args.verify_batches}: need >= 0, >= 1 and >= 1")
    check_select_args(args)
    if args.space is None and not args.checkpoint:
        raise HatError("--space is required without --checkpoint")
    if Path(args.out).is_dir():
        raise HatError(f"--out {args.out} is a directory; give the subnet file to write, e.g. {Path(args.out, 'subnet.yml')}")
    device = compute_device(args.compute)

    import torch

    from hat.latency.estimate import Latency, select_predictor
    from hat.latency.verify import latency_metadata, verify_search
    from hat.model import load_super_checkpoint
    from hat.search import GenerationLog
    from hat.space import load_space, load_subconfig

    reference = load_subconfig(args.faster_than) if args.faster_than else None

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    started_dist = _maybe_init_distributed()
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    try:
        model = None
        if args.checkpoint and scorer_cls.needs_model or (args.checkpoint and args.space is None):
            model, _ = load_super_checkpoint(args.checkpoint, map_location="cpu")
            model.to(device)
        space = load_space(args.space) if args.space else model.space
        if model is not None and args.space:
            if space.to_dict()["super"] != model.space.to_dict()["super"]:
                raise HatError(f"--space {args.space}: super dims differ from the checkpoint's space {model.space.name}")
            model.space = space  # search a sub-space of the trained one (validate() uses it)
        predictor, pred_name = _hat_predictor(args, space) if args.hat_predictor else \
            select_predictor(args.predictor, args.device, space)
        target = _verify_target(args, predictor) if args.verify else None
        if reference is not None:
            args.latency_constraint = _relative_constraint(space, predictor, reference, args)
        predictor, held = _held_against_constraint(predictor, pred_name, args.constraint_quantile)
        latency = Latency(predictor, pred_name)
        loss_settings = LossSettings(args.valid_subset, args.valid_sentences, args.max_tokens, args.label_smoothing)
        scorer = scorer_cls.build(space, model, args.data, args.seed, loss_settings)
        settings = EvolutionSettings(args.population, args.parents, args.mutations, args.crossovers, args.iterations,
                                     args.mutate_prob, args.max_tries, args.seed)
        paths = out_paths(args.out)
        state_path = Path(args.state) if args.state else paths["state"]
        tb = None if (args.tensorboard_dir or "").lower() == "none" else (args.tensorboard_dir or paths["tb"])
        log = GenerationLog(args.log_csv or paths["log"], tb, settings.iterations + 1,
                            progress=not args.no_progress, enabled=rank == 0, desc=f"search {args.algorithm}")
        # what the saved scores depend on, by content: a checkpoint, predictor or validation split
        # replaced at the same path must not resume with the old scores
        fp = {"checkpoint": file_digest(args.checkpoint) if args.checkpoint else None,
              "predictor": pred_name, "constraint_quantile": getattr(predictor, "quantile", None),
              "predictor_file": files_digest([getattr(predictor, "source", "")]),
              "data": files_digest(sorted(Path(args.data).glob(f"{args.valid_subset}.*"))) if args.data else None,
              "valid_subset": args.valid_subset,
              "valid_sentences": args.valid_sentences, "max_tokens": args.max_tokens,
              "label_smoothing": args.label_smoothing}
        t0 = time.perf_counter()
        result = algorithm(
            space, scorer, latency, args.latency_constraint, settings, state_path=state_path,
            resume=not args.no_resume, log=log, fingerprint_extra=fp, device_name=str(args.device or pred_name),
        )
        wall = time.perf_counter() - t0
        if rank == 0:
            dev = str(args.device or latency.name)
            result, included = include_candidates(args.include or [], result, scorer, latency, space)
            order, chosen, selection = None, {"rule": "the best score", "included": sorted(included.values())}, None
            if args.select == "halving":
                result, order, chosen, selection = select_final(args, result, scorer, latency, included,
                                                                Path(args.select_dir or paths["select"]),
                                                                paths["select_csv"])
            if target is not None:
                result, meta = verify_search(result, latency, space, target, device=dev, held=held, count=args.verify,
                                             rounds=args.verify_rounds, batches=args.verify_batches,
                                             csv_path=paths["verify"], reference=reference,
                                             reference_name=str(args.faster_than), faster_by=args.faster_by,
                                             order=order)
            else:
                meta = latency_metadata(result, latency, dev, held)
            chosen["from_include"] = included.get(result.best)
            if order and result.best != order[0]:  # the final choice measured over the constraint
                chosen["verify_moved_to"] = order.index(result.best) + 1 if result.best in order else "by score"
            if selection is not None and args.select_keep:
                chosen["kept"] = selection.keep(result.best, args.select_keep)
            _write_outputs(result, space, paths, args, scorer.name, latency, meta, chosen)
            _print_summary(result, paths, args, wall, scorer, space, meta)
    finally:
        if started_dist:
            torch.distributed.destroy_process_group()
    return 0


def _hat_predictor(args: argparse.Namespace, space):
    """HAT's predictor named by a HAT settings file's ckpt-path, imported in memory with its norms."""
    from hat.commands.hat_settings import check_layout
    from hat.latency.predictors.hat_import import import_hat
    from hat.space import HAT_FEATURE_NORM

    path, feature_norm, lat_norm, layout = args.hat_predictor
    dev = resolve_device(args.device).name if args.device else ""
    pred = import_hat(path, lat_norm, feature_norm or HAT_FEATURE_NORM, None, dev)
    check_layout(pred, layout, args.hat_settings)
    return pred, str(path)


def _held_against_constraint(predictor, name: str, quantile: float | None):
    """(the predictor the search holds against the constraint, what that means in words): a quantile
    of the calibrated interval when the predictor has one, else its point estimate."""
    from hat.latency.estimate import ConstraintBound

    if hasattr(predictor, "quantile_factor") and getattr(predictor, "has_interval", True):
        bound = ConstraintBound(predictor, quantile)
        return bound, bound.describe(name)
    if quantile is not None:
        why = predictor._no_interval() if hasattr(predictor, "_no_interval") else \
            f"predictor {name} has no calibrated interval (use a fitted predictor)"
        raise HatError(f"--constraint-quantile: {why}")
    if getattr(predictor, "state", {}).get("imported"):
        return predictor, (f"the point estimate of {name}, as HAT holds it (imported from HAT without calibration "
                           "rows: no interval; `hat import-predictor --calibrate-on CSV` gives one)")
    return predictor, f"the point estimate of {name} (it has no interval)"


def _relative_constraint(space, predictor, reference, args: argparse.Namespace) -> float:
    """--faster-than: (1 - --faster-by) x the reference's point prediction, in the predictor's ms.
    Predicted against predicted, so an offset the predictor shares across designs cancels."""
    space.validate(reference, args.faster_than)
    ref_ms = float(predictor.predict([reference])[0])
    constraint = round((1.0 - args.faster_by) * ref_ms, 4)
    print(f"--faster-than {args.faster_than}: predicted {ref_ms:.4g} ms; constraint {1 - args.faster_by:g} x that = "
          f"{constraint:g} ms", flush=True)
    return constraint


def _verify_target(args: argparse.Namespace, predictor):
    """The device `--verify` times: --device, else the device the predictor file was fit for."""
    name = args.device or getattr(predictor, "device", "")
    if not name:
        raise HatError(f"--verify {args.verify}: needs the target device (--device NAME, or a predictor fit with "
                       "`hat fit-predictor --device NAME`)")
    return resolve_device(name)


def _maybe_init_distributed() -> bool:
    """Join the torchrun group (gloo: CPU) when launched with WORLD_SIZE > 1."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    dist.init_process_group("gloo")
    return True


def _write_outputs(result, space, paths: dict[str, Path], args: argparse.Namespace, score_name: str, latency,
                   meta: dict, chosen: dict) -> None:
    from hat.search.pareto import non_dominated, plot_front, write_front_csv
    from hat.space import save_subconfig

    save_subconfig(result.best, paths["out"], metadata={"latency": meta, "selection": chosen})
    save_subconfig(result.best, paths["hat"], hat_format=True, space=space)
    ev = result.evaluated
    feas = [i for i, e in enumerate(ev) if e.latency <= result.constraint]
    lats = [ev[i].latency for i in feas]
    scores = [ev[i].score for i in feas]
    front = non_dominated(list(zip(lats, scores)))
    write_front_csv(paths["pareto_csv"], [ev[i].cfg for i in feas], lats, scores, front,
                    [latency.interval(ev[i].cfg) for i in feas])
    best = next((i for i, e in enumerate(ev) if e.cfg == result.best), None)
    try:
        plot_front(paths["pareto_png"], [e.latency for e in ev], [e.score for e in ev], [feas[i] for i in front],
                   constraint=result.constraint, best=best, score_name=score_name,
                   title=f"{args.algorithm}, {len(ev)} unique candidates")
    except Exception as e:  # a plotting problem must not lose the search result
        print(f"warning: could not plot the Pareto front ({type(e).__name__}: {e})")


def _print_summary(result, paths, args, wall: float, scorer, space, meta: dict) -> None:
    from hat.space import describe, num_params

    interval = f", {meta['interval_level']:.0%} interval {meta['lower_ms']:.4g}-{meta['upper_ms']:.4g} ms" \
        if "lower_ms" in meta else ""
    print(f"best ({args.algorithm}, {scorer.name} scorer): score {result.best_score:.6g}, predicted latency "
          f"{meta['predicted_ms']:.4g} ms{interval} (constraint {result.constraint:g} ms)")
    print(f"  guarantee: {meta['guarantee']}")
    print(f"  {describe(result.best)}")
    print(f"  {num_params(result.best, space) / 1e6:.2f} M params")
    rate = scorer.calls / scorer.seconds if scorer.seconds > 0 else float("nan")
    print(f"evaluations {result.evaluations} ({len(result.evaluated)} unique), {len(result.front)} on the Pareto front; "
          f"{wall:.1f} s this run, {result.elapsed:.1f} s total; scorer {rate:.1f} configs/s")
    wrote = ("out", "hat", "log", "pareto_csv", "pareto_png") + (("verify",) if "measured" in meta else ())
    print("wrote " + ", ".join(str(paths[k]) for k in wrote))
    print(json.dumps({"best_score": result.best_score, "best_latency_ms": result.best_latency,
                      "evaluations": result.evaluations, "elapsed_s": round(result.elapsed, 2)}))
