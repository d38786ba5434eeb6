"""`hat search --task lm`: LiteTransformerSearch's training-free Pareto search of decoder-only LMs.

    hat search --task lm --space lm-tiny --predictor lm.pt --out search/front.csv
    hat search --task lm --space lm-tiny --predictor measure --device cpu-2core --prompt-len 16 --gen-len 16 \\
        --latency-constraint 40 --out front.csv

NSGA-II (hat.search.lm_nsga2) over (decoder parameters, latency, peak memory): latency and memory
from an `lm-cost` predictor (`hat fit-predictor` on `hat measure --space LM_SPACE` rows), or
`--predictor measure`: timed on this machine for every new candidate. The constraints hold the
point prediction. Writes the front (OUT.csv, fastest first), its plot (OUT.png), the member with the
most decoder parameters (LTS's pick within the constraints) as an LM config (OUT.best.yml, for `hat
train --task lm subnet=...`; any other row: `hat info OUT.csv --row N --save`) and a state file
(OUT.state.json; a rerun resumes, `--no-resume` starts over); prints the search time and the share
spent predicting or measuring. Translation-only inputs (checkpoint, data, verify, ...) and a
translation space or predictor are refused in one line, before anything is written.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from hat.errors import HatError
from hat.files import files_digest
from hat.latency.devices import resolve_device
from hat.search.lm_front import best_member, plot_lm_front, write_lm_front_csv
from hat.search.lm_nsga2 import LMObjectives, LMSearchSettings, lm_nsga2_search
from hat.space import LMSpace, load_any_space, save_lm_config

TASKS = ("translation", "lm")


def add_lm_arguments(p: argparse.ArgumentParser) -> None:
    """`hat search`'s task switch and the decoder-only LM search's own flags."""
    g = p.add_argument_group("decoder-only LMs (--task lm)")
    g.add_argument("--task", choices=TASKS, default="translation",
                   help="lm: LiteTransformerSearch's NSGA-II over (decoder params, latency, memory) of an LM space; "
                        "--predictor is an lm-cost file or `measure` (time each candidate here)")
    g.add_argument("--memory-constraint", type=float, help="--task lm: max predicted peak memory in MiB")
    g.add_argument("--prompt-len", type=int, help="--task lm with --predictor measure: prompt tokens (default 32)")
    g.add_argument("--gen-len", type=int, help="--task lm with --predictor measure: generated tokens (default 32)")


def refuse_lm_space(args: argparse.Namespace) -> None:
    """A translation search given an LM space: one line saying to add --task lm."""
    if args.space and isinstance(load_any_space(args.space), LMSpace):
        raise HatError(f"--space {args.space}: a decoder-only LM space (task: lm); search it with --task lm")


def _check_inputs(args: argparse.Namespace) -> None:
    for flag, value in (("--checkpoint", args.checkpoint), ("--data", args.data), ("--faster-than", args.faster_than),
                        ("--verify", args.verify), ("--include", args.include), ("--select-keep", args.select_keep),
                        ("--constraint-quantile", args.constraint_quantile)):
        if value:
            raise HatError(f"{flag} is for translation searches; --task lm searches without training or selection")
    if args.select != "score":
        raise HatError(f"--select {args.select} is for translation searches")
    if args.hat_predictor:
        raise HatError("a HAT settings file with a latency predictor is for translation searches")
    for flag, v in (("--latency-constraint", args.latency_constraint), ("--memory-constraint", args.memory_constraint)):
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise HatError(f"{flag} {v:g}: must be positive")
    if not args.space:
        raise HatError("--task lm needs --space (an LM space, e.g. lm-tiny)")
    if not args.predictor:
        raise HatError("--task lm needs --predictor LM.pt (hat fit-predictor on LM rows) or --predictor measure")
    if args.predictor != "measure" and (args.prompt_len is not None or args.gen_len is not None):
        raise HatError("--prompt-len/--gen-len set the lengths --predictor measure times; a predictor file keeps "
                       "the lengths it was fit on")
    if Path(args.out).is_dir():
        raise HatError(f"--out {args.out} is a directory; give the front CSV to write, e.g. {Path(args.out, 'front.csv')}")


def _objectives(args: argparse.Namespace, space: LMSpace) -> tuple[LMObjectives, dict[str, Any]]:
    """Latency/memory from the predictor file, or measured here; and what the saved state depends on."""
    if args.predictor == "measure":
        from hat.latency.lm_measure import LMMeasurer, LMProtocol  # noqa: PLC0415

        if not args.device:
            raise HatError("--predictor measure needs --device NAME (its protocol: threads, runs, backend)")
        keys = {"prompt_len": args.prompt_len, "gen_len": args.gen_len, "threads": args.threads or None}
        protocol = LMProtocol.from_device(resolve_device(args.device), space, **keys)
        measurer = LMMeasurer(space, protocol)

        def measured(cfgs: list) -> tuple[list[float], list[float]]:
            rows = [measurer.measure(c) for c in cfgs]
            return [r["latency_ms"] for r in rows], [r["peak_memory_bytes"] for r in rows]

        return LMObjectives(measured, f"measured on {args.device}"), {"measure": protocol.to_dict()}
    from hat.latency.predictors import LMCost, load_predictor  # noqa: PLC0415

    pred = load_predictor(args.predictor)
    if not isinstance(pred, LMCost):
        raise HatError(f"{args.predictor}: a translation latency predictor ({pred.name}); --task lm needs an lm-cost "
                       "predictor (hat fit-predictor on `hat measure --space LM_SPACE` rows)")
    pred.check_space(space)
    pred.predict_memory([space.smallest()])  # a file without a memory fit: refused before the search
    return (LMObjectives(lambda cfgs: (pred.predict(cfgs), pred.predict_memory(cfgs)), str(args.predictor)),
            {"predictor_file": files_digest([args.predictor])})


def run_lm_search(args: argparse.Namespace) -> int:
    _check_inputs(args)
    space = load_any_space(args.space)
    if not isinstance(space, LMSpace):
        raise HatError(f"--space {args.space}: a translation space; --task lm searches a decoder-only LM space "
                       "(e.g. lm-tiny)")
    if args.threads and args.threads > 0:
        import torch  # noqa: PLC0415

        torch.set_num_threads(args.threads)
    objectives, fp = _objectives(args, space)
    mem_cap = None if args.memory_constraint is None else args.memory_constraint * 2**20
    (lat0, mem0), = objectives.many([space.smallest()])
    if (args.latency_constraint is not None and lat0 > args.latency_constraint) or (mem_cap is not None and mem0 > mem_cap):
        raise HatError(f"no config can meet the constraints: the smallest ({space.smallest().describe()}) is predicted "
                       f"{lat0:.4g} ms and {mem0 / 2**20:.4g} MiB")
    out = Path(args.out)
    stem = out.with_suffix("") if out.suffix else out
    png, state = Path(f"{stem}.png"), Path(args.state) if args.state else Path(f"{stem}.state.json")
    settings = LMSearchSettings(args.population, args.mutations + args.crossovers, args.iterations, args.seed)
    result = lm_nsga2_search(space, objectives, settings, args.latency_constraint, mem_cap, state,
                             resume=not args.no_resume, fingerprint=fp, progress=not args.no_progress)
    write_lm_front_csv(out, result, space)
    best = result.evaluated[best_member(result)]
    best_yml = Path(f"{stem}.best.yml")
    save_lm_config(best.cfg, best_yml, {
        "space": space.name, "front": str(out), "latency_ms": round(best.latency_ms, 4),
        "memory_mib": round(best.memory_bytes / 2**20, 4), "decoder_params": best.decoder_params,
        "objectives": objectives.name, "latency_constraint": args.latency_constraint,
        "memory_constraint_mib": args.memory_constraint})
    try:
        plot_lm_front(png, result, title=f"{space.name}: NSGA-II, {len(result.evaluated)} candidates, {objectives.name}")
    except Exception as e:  # noqa: BLE001  (a plotting problem must not lose the front)
        print(f"warning: could not plot the Pareto front ({type(e).__name__}: {e})")
    share = result.objective_seconds / result.elapsed if result.elapsed > 0 else 0.0
    doing = "measuring" if args.predictor == "measure" else "predicting"
    print(f"front: {len(result.front)} configs of {len(result.evaluated)} evaluated ({result.generations} generations); "
          f"search {result.elapsed:.2f} s, {share:.0%} of it {doing} latency and memory")
    for i in result.front[:3] + result.front[-3:] if len(result.front) > 6 else result.front:
        c = result.evaluated[i]
        print(f"  {c.latency_ms:8.3f} ms {c.memory_bytes / 2**20:8.2f} MiB {c.decoder_params / 1e6:7.3f} M  {c.cfg.describe()}")
    print(f"most decoder parameters within the constraints: {best.cfg.describe()} ({best.latency_ms:.3f} ms, "
          f"{best.memory_bytes / 2**20:.2f} MiB, {best.decoder_params / 1e6:.3f} M)")
    print(f"wrote {out}, {png}, {best_yml}, {state}")
    print(json.dumps({"front": len(result.front), "evaluated": len(result.evaluated), "elapsed_s": round(result.elapsed, 3),
                      "objective_s": round(result.objective_seconds, 3), "objective_share": round(share, 4)}))
    return 0
