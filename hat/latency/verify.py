"""Keep a latency constraint on the device, not only in the predictor (`hat search --verify N`).

A predictor's point estimate is wrong by ~10 % on a shared machine, so a subnet searched under
60 ms can measure 67 ms. When the target device is this machine, the N best candidates the
search found feasible are timed with the device's full protocol in interleaved rounds
(`hat.latency.compare.measure_interleaved`: A B C, A B C, ..., so drift hits them alike) and the
best-scored one whose median meets the constraint is returned. With a reference model (`hat search
--faster-than REF.yml`) the constraint is relative: the reference is timed in the same rounds and a
candidate must be faster than it by the margin and beyond the spread, which is what a comparison
made later on the same machine will see. A device elsewhere (a Raspberry Pi searched on a
workstation) cannot be timed here: its guarantee is the predictor's interval.
`verify_search` is all of this for a search result (`hat search --verify` calls it).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hat.errors import HatError
from hat.latency.compare import Spread, measure_interleaved
from hat.latency.devices import DeviceSpec
from hat.latency.measure import cpu_description
from hat.space import SubConfig


def this_machine() -> str:
    """What identifies this machine: CPU model, board model (ARM boards) and CUDA device names."""
    parts = [cpu_description()]
    board = Path("/proc/device-tree/model")
    if board.is_file():
        parts.append(board.read_bytes().rstrip(b"\0").decode("utf-8", "replace"))
    import torch  # noqa: PLC0415

    if torch.cuda.is_available():
        parts += [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return "; ".join(p for p in parts if p)


def runs_here(spec: DeviceSpec) -> tuple[bool, str]:
    """(whether `spec` can be timed on this machine, why not): its backend runs here and, when the
    device names its `hardware`, this machine has it."""
    backend = spec.protocol.get("backend") or "torch"
    if backend == "cuda":
        import torch  # noqa: PLC0415

        if not torch.cuda.is_available():
            return False, "its backend is cuda and this machine has no CUDA device"
    if backend == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401, PLC0415
        except ImportError:
            return False, "its backend is onnxruntime, which is not installed here"
    here = this_machine()
    if spec.hardware and spec.hardware.lower() not in here.lower():
        return False, f"it is {spec.hardware!r} and this machine is {here!r}"
    return True, ""


@dataclass
class Candidate:
    """One subnet the search found feasible, with what was predicted and (after `verify`) measured."""

    cfg: SubConfig
    score: float
    predicted_ms: float
    lower_ms: float | None = None
    upper_ms: float | None = None
    measured: Spread | None = None
    limit_ms: float | None = None  # the measured median it had to meet (set by `verify`)
    reference: Spread | None = None  # the reference timed in the same rounds, if any

    def meets(self, constraint: float | None = None) -> bool:
        """Measured within `constraint` (default: the limit `verify` set); with a reference, also
        faster than it beyond the spread."""
        limit = self.limit_ms if constraint is None else constraint
        if self.measured is None or limit is None or self.measured.median > limit:
            return False
        return self.reference is None or self.measured.faster_than(self.reference)


def verify(candidates: Sequence[Candidate], constraint: float, measure: Callable[[SubConfig], Mapping[str, Any]],
           rounds: int = 5, log: Callable[[str], None] | None = None, reference: SubConfig | None = None,
           faster_by: float = 0.0) -> Candidate | None:
    """Time `candidates` (best score first) in `rounds` interleaved rounds; the first that meets
    `constraint`, or None when none does. Each candidate gets its `measured` spread.

    With `reference`, it is timed in the same rounds and the limit is (1 - faster_by) x its median
    (not `constraint`), plus "faster beyond the spread" (`Spread.faster_than`)."""
    names = {f"#{i + 1}": c for i, c in enumerate(candidates)}
    configs = {n: c.cfg for n, c in names.items()}
    if reference is not None:
        configs["reference"] = reference
    spreads = measure_interleaved(measure, configs, rounds=rounds, log=log)
    ref = spreads.get("reference")
    for n, c in names.items():
        c.measured, c.reference = spreads[n], ref
        c.limit_ms = constraint if ref is None else (1.0 - faster_by) * ref.median
    return next((c for c in candidates if c.meets()), None)


def write_verify_csv(path: str | Path, candidates: Sequence[Candidate], chosen: Candidate | None) -> None:
    """One row per verified candidate: predicted interval, measured median and range, the rounds,
    the limit it had to meet and the reference's spread (when the constraint was relative)."""
    import csv  # noqa: PLC0415
    import json  # noqa: PLC0415

    from hat.files import atomic_open  # noqa: PLC0415
    from hat.space import describe  # noqa: PLC0415

    def ms(v: float | None) -> str:
        return "" if v is None else f"{v:.4f}"

    with atomic_open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "score", "predicted_ms", "lower_ms", "upper_ms", "measured_median_ms", "measured_low_ms",
                    "measured_high_ms", "measured_rounds_ms", "limit_ms", "reference_median_ms", "reference_low_ms",
                    "reference_high_ms", "meets_constraint", "chosen", "summary", "config_json"])
        for i, c in enumerate(candidates, start=1):
            m = c.measured
            w.writerow([i, f"{c.score:.6g}", ms(c.predicted_ms), ms(c.lower_ms), ms(c.upper_ms),
                        ms(m and m.median), ms(m and m.low), ms(m and m.high),
                        " ".join(f"{v:.3f}" for v in (m.rounds if m else ())), ms(c.limit_ms),
                        ms(c.reference and c.reference.median), ms(c.reference and c.reference.low),
                        ms(c.reference and c.reference.high), int(c.meets()),
                        int(c is chosen), describe(c.cfg), json.dumps(c.cfg.to_dict(), separators=(",", ":"))])


def measure_function(spec: DeviceSpec, space: Any) -> tuple[Callable[[SubConfig], Mapping[str, Any]], dict]:
    """`Measurer.measure` with the device's full protocol (HAT's warm-ups and runs), and that protocol."""
    from hat.latency.measure import Measurer, Protocol  # noqa: PLC0415

    protocol = Protocol.from_device(spec, space)
    measurer = Measurer(space, protocol)
    return measurer.measure, protocol.to_dict()


def prediction_bias(candidates: Sequence[Candidate], reference_ms: float | None = None) -> float:
    """How far timed candidates measured over their predictions: the largest measured / predicted
    (with a reference: measured share of the reference's time in the same rounds / predicted share,
    `reference_ms` being its prediction). Near the constraint a predictor's error is systematic (the
    best-scoring candidates are alike), so the next candidates worth timing are those this factor
    still keeps within it."""
    ratios = []
    for c in candidates:
        if c.measured is None or c.predicted_ms <= 0:
            continue
        if c.reference is not None and reference_ms:
            ratios.append((c.measured.median / c.reference.median) / (c.predicted_ms / reference_ms))
        else:
            ratios.append(c.measured.median / c.predicted_ms)
    return max(ratios, default=1.0)


def latency_metadata(result: Any, latency: Any, device: str, held: str) -> dict:
    """What the output YAML says about a search result's chosen subnet (`result.best`, a
    `hat.search.SearchResult`) and its latency under `latency` (a `hat.latency.estimate.Latency`),
    and which guarantee applies; `held` says what was held against the constraint."""
    p, lo, hi = latency.interval(result.best)
    meta = {"device": device, "predictor": latency.name, "constraint_ms": result.constraint,
            "held_against_constraint": held, "bound_ms": round(result.best_latency, 4), "predicted_ms": round(p, 4)}
    if lo is not None:
        meta.update(interval_level=latency.predictor.level, lower_ms=round(lo, 4), upper_ms=round(hi, 4))
    meta["guarantee"] = f"predicted: {held} <= {result.constraint:g} ms"
    return meta


def verify_search(result: Any, latency: Any, space: Any, target: DeviceSpec, *, device: str, held: str, count: int,
                  rounds: int, batches: int, csv_path: str | Path, reference: SubConfig | None = None,
                  reference_name: str = "", faster_by: float = 0.0, order: Sequence[SubConfig] | None = None,
                  log: Callable[[str], None] = lambda s: print(s, flush=True)) -> tuple[Any, dict]:
    """`hat search --verify`: time the search's best feasible candidates (`count` at a time, best
    score first, up to `batches` batches) here with `target`'s full protocol and return (the result
    with the best that meets the constraint when measured, its `latency_metadata` plus what was
    measured). After a batch that measured over its predictions, the next batch is the best-scoring
    candidates still within the constraint after that `prediction_bias`: re-ranking by the bias the
    device showed, not trying the next near-identical candidates at the limit. A device that cannot
    be timed here keeps the predicted guarantee. None measuring
    within the constraint is a HatError (one line). `order` (a final choice's ranking, e.g.
    `hat search --select halving`) goes first, the rest by score after it."""
    from hat.latency.provenance import predictor_warning  # noqa: PLC0415

    meta = latency_metadata(result, latency, device, held)
    ok, why = runs_here(target)
    if not ok:
        log(f"--verify: device {target.name} cannot be timed on this machine ({why}); the guarantee is the "
            f"predictor's: {meta['guarantee']}")
        return result, {**meta, "verify": f"not measured: device {target.name} is not this machine ({why})"}
    first = {c: i for i, c in enumerate(order or ())}
    feas = sorted((e for e in result.evaluated if e.latency <= result.constraint),
                  key=lambda e: (first.get(e.cfg, len(first)), e.score, e.latency))
    measure, protocol = measure_function(target, space)
    clash = predictor_warning(latency.predictor, protocol, "--verify", target.name)
    if clash:
        log(clash)
    against = (f"{1 - faster_by:g} x {reference_name}, timed in the same rounds" if reference is not None
               else f"{result.constraint:g} ms")
    ref_ms = latency.interval(reference)[0] if reference is not None else None
    left = [Candidate(e.cfg, e.score, *latency.interval(e.cfg)) for e in feas]
    cands: list[Candidate] = []
    chosen, bias = None, 1.0
    for _ in range(batches):
        # after a batch measured over its predictions, skip candidates that the same bias puts over the limit
        fit = [c for c in left if c.predicted_ms * bias <= result.constraint]
        batch = (fit or left)[:count]
        if not batch:
            break
        left = [c for c in left if all(c is not b for b in batch)]
        log(f"--verify: timing feasible candidates {len(cands) + 1}-{len(cands) + len(batch)} "
            f"({'the final choice' if order else 'best score'} first"
            f"{f', predicted within the constraint after a x{bias:.3f} correction' if fit and bias > 1 else ''}) on "
            f"this machine against {against} ({target.name}'s protocol, {rounds} interleaved rounds)")
        chosen = verify(batch, result.constraint, measure, rounds, log=lambda s: log(f"  {s}"),
                        reference=reference, faster_by=faster_by)
        cands += batch
        if chosen is not None:
            break
        bias = max(bias, prediction_bias(cands, ref_ms))
    write_verify_csv(csv_path, cands, chosen)
    if chosen is None:
        medians = ", ".join(f"{c.measured.median:.4g}" for c in cands)
        slow = "" if bias <= 1.5 else (
            f"; they ran up to {bias:.2f}x their predictions{' relative to the reference' if ref_ms else ''}, "
            "so this machine differs from the predictor's rows (load, clock, another device)")
        raise HatError(f"--verify {count}: none of the {len(cands)} best candidates measured within "
                       f"{against} (medians {medians} ms; {csv_path}){slow}; raise --verify or --verify-batches "
                       "or --constraint-quantile, or relax the constraint")
    result = dataclasses.replace(result, best=chosen.cfg, best_score=chosen.score, best_latency=latency(chosen.cfg))
    meta = latency_metadata(result, latency, device, held)
    m = chosen.measured
    meta["measured"] = {"median_ms": round(m.median, 4), "low_ms": round(m.low, 4), "high_ms": round(m.high, 4),
                        "rounds_ms": [round(v, 4) for v in m.rounds], "candidate_rank": cands.index(chosen) + 1,
                        "candidates_measured": len(cands), "prediction_bias": round(bias, 4),
                        "machine": this_machine(), "protocol": protocol,
                        "log": str(csv_path), **({"warning": clash} if clash else {})}
    meta["guarantee"] = (f"measured on this machine: median {m.median:.4g} ms (range {m.low:.4g}-{m.high:.4g}) of "
                         f"{len(m.rounds)} interleaved rounds <= {chosen.limit_ms:.4g} ms")
    if chosen.reference is not None:
        r = chosen.reference
        meta["measured"]["reference"] = {"path": reference_name, "median_ms": round(r.median, 4),
                                         "low_ms": round(r.low, 4), "high_ms": round(r.high, 4),
                                         "ratio": round(m.median / r.median, 4)}
        meta["guarantee"] += (f" = {1 - faster_by:g} x {reference_name}'s {r.median:.4g} ms "
                              f"(range {r.low:.4g}-{r.high:.4g}), faster beyond the spread")
    return result, meta


__all__ = ["Candidate", "latency_metadata", "measure_function", "prediction_bias", "runs_here", "this_machine",
           "verify", "verify_search", "write_verify_csv"]
