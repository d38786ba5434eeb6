"""The demo's final step: export each model, its BLEU, and every model's latency in interleaved
rounds with the references, so each searched row is checked against its share of a reference
timed in the same rounds."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hat.commands.demo_report import BASES, uniform_of
from hat.commands.demo_state import Ledger, bleu_check, json_problem, spreads_problem, stage_needed
from hat.files import atomic_write_text, read_json
from hat.latency.devices import resolve_device
from hat.model.generate import Decoding
from hat.space import DesignSpace, describe, load_subconfig, num_params


def protocol(device: str, space: DesignSpace, b: Any, few_runs: bool) -> Any:
    """The device's latency protocol; the quick demo (`few_runs`) times the final table with its own few runs."""
    from hat.latency.measure import Protocol  # noqa: PLC0415

    few = {"runs": b.latency_runs, "warmup": 2} if few_runs else {}
    return Protocol.from_device(resolve_device(device), space, **few)


def evaluate_entries(out: Path, data: Path, entries: list[Any], b: Any, space: DesignSpace, device: str,
                     ledger: Ledger, budget: dict, refs: dict[str, Path],
                     few_runs: bool = False) -> tuple[list[dict], dict[str, dict]]:
    """Rows of the final table, and the reference models' spreads: the references are timed in the
    same rounds as the rows, so each searched row is checked against its share of them."""
    import hat  # noqa: PLC0415
    from hat.commands.demo import hat_stage  # noqa: PLC0415  (the demo imports this module)
    from hat.evaluate import evaluate, paired_bleu_pvalue  # noqa: PLC0415
    from hat.latency.compare import measure_interleaved  # noqa: PLC0415
    from hat.latency.measure import Measurer  # noqa: PLC0415

    rows, hyps = [], {}
    for e in entries:
        edir = out / "export" / e.slug
        if stage_needed(f"export {e.name}", edir / "model.pt"):
            hat_stage(["export", "--checkpoint", str(e.save_dir / "checkpoint_last.pt"), "--config", str(e.cfg_path),
                       "--data", str(data), "--format", "standalone", "--out", str(edir)])
        res_path, hyp_path = edir / "bleu.json", edir / "test.hyp"
        translator = hat.load(edir / "model.pt")
        if stage_needed(f"BLEU of {e.name}", res_path, json_problem("BLEU result", bleu_check(hyp_path))):
            res, h = evaluate(translator, data, "test", beam=b.beam, lenpen=Decoding.lenpen,
                              limit=b.test_sentences)
            atomic_write_text(hyp_path, "\n".join(h) + "\n")
            atomic_write_text(res_path, json.dumps(res, indent=1))
        hyps[e.name] = hyp_path.read_text(encoding="utf-8").split("\n")[:-1]
        res = read_json(res_path, "BLEU result")
        run = ledger.record_run(e.slug, e.save_dir)
        cfg = load_subconfig(e.cfg_path)
        how = (f"inherited + fine-tuned {run['seconds']:.0f} s" if e.kind in ("searched", "largest", "uniform")
               else f"from scratch {run['seconds']:.0f} s")
        total = sum(p.numel() for p in translator.model.parameters())  # the shared embedding once
        rows.append({"name": e.name, "kind": e.kind, "config": describe(cfg), "params_M": num_params(cfg, space) / 1e6,
                     "total_params_M": total / 1e6,
                     "constraint_ms": e.constraint_ms, "bleu": res["bleu"], "chrf": res.get("chrf"),
                     "bleu_by_origin": {k: v["bleu"] for k, v in res.get("per_origin", {}).items()},
                     "model_path": str((edir / "model.pt").relative_to(out)), "budget_s": budget["per_model_s"],
                     "same_as": e.same_as, "kept": e.kept,
                     "updates": run["updates"], "tokens": run["tokens"], "train_s": run["seconds"],
                     "training": f"{how}, {run['updates']} updates"})

    lat_path = out / "latency_final.json"
    configs = {r["name"]: load_subconfig(e.cfg_path) for r, e in zip(rows, entries)}
    configs.update({f"reference: {k}": load_subconfig(p) for k, p in refs.items()})
    lat_problem = json_problem("latency result", spreads_problem(list(configs)))
    if stage_needed(f"measure every model's latency in {b.rounds} interleaved rounds", lat_path, lat_problem):
        measurer = Measurer(space, protocol(device, space, b, few_runs))
        spreads = measure_interleaved(measurer.measure, configs, rounds=b.rounds,
                                      log=lambda s: print(f"[demo] latency {s}", flush=True))
        atomic_write_text(lat_path, json.dumps({k: v.to_dict() for k, v in spreads.items()}, indent=1))
    lat = pool_references(read_json(lat_path, "latency result"), configs)
    refs_text = test_references(data, b.test_sentences)
    bases = {r["name"]: hyps[r["name"]] for r in rows if r["kind"] in BASES}
    for r, e in zip(rows, entries):
        r.update(measured_fields(lat, r["name"], e.klass))
    for r in rows:
        if r["kind"] == "searched":  # against every baseline and its own class's uniform row
            u = uniform_of(r, rows)
            mine = {**bases, **({u["name"]: hyps[u["name"]]} if u else {})}
            r["p_vs"] = {name: paired_bleu_pvalue(h, hyps[r["name"]], refs_text) for name, h in mine.items()}
    return rows, {k: lat[f"reference: {k}"] for k in refs}


def measured_fields(lat: dict[str, dict], name: str, klass: Any = None) -> dict[str, Any]:
    """A row's measured latency from the final rounds (`lat`, references pooled) and, for a row
    searched under a `LatencyClass`, its limit there: the share x its reference's median, timed in
    the same rounds, and whether the row's median is within it."""
    s = lat[name]
    out = {"measured_ms": s["median"], "measured_low_ms": s["low"], "measured_high_ms": s["high"],
           "measured_rounds": s["rounds"]}
    if klass is not None:
        ref = lat[f"reference: {klass.reference}"]
        limit = klass.share * ref["median"]
        out.update(constraint=klass.label, reference=klass.reference, share=klass.share,
                   search_share=klass.search_share, limit_ms=limit, within_limit=s["median"] <= limit,
                   ratio_to_reference=s["median"] / ref["median"])
    return out


def pool_references(lat: dict[str, dict], configs: dict[str, Any]) -> dict[str, dict]:
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


def test_references(data: Path, n: int) -> list[str]:
    from hat.data.dataset import ParallelDataset  # noqa: PLC0415
    from hat.evaluate import read_references  # noqa: PLC0415

    ds = ParallelDataset(data, "test")
    return read_references(data, "test", ds.tgt_lang, len(ds))[:n]
