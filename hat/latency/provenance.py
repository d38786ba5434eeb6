"""How a predictor's training latencies were timed, and whether that matches a measurement.

A predictor file records the measurement protocol of its training CSV (from the CSV's
`.meta.json`; empty = unknown, e.g. HAT's published CSVs or files fit before it was recorded). A
predictor fit on CPU-time latencies predicts CPU time; comparing it with wall-clock measurements
(`hat search --verify`, `hat measure` on its device) compares two clocks, which on a shared
machine differ several-fold. `mismatch_warning` names the difference in one line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

# recorded from the CSV's meta (`hat.latency.measure.Protocol` fields)
RECORDED = ("timer", "backend", "threads", "src_len", "tgt_len", "beam", "batch", "warmup", "runs", "drop_frac",
            "vocab_size", "quantize")
# fields that change what a latency means (warm-ups and runs change only its noise)
COMPARED = ("timer", "backend", "threads", "src_len", "tgt_len", "beam", "batch", "vocab_size", "quantize")
CLOCKS = {"wall": "wall clock", "cpu": "CPU time of the measuring thread"}


def training_protocol(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The protocol a latency CSV's meta records ({} when it records none), plus `drift_corrected`."""
    proto = meta.get("protocol")
    if not isinstance(proto, Mapping):
        return {}
    out = {k: proto[k] for k in RECORDED if k in proto}
    if out and meta.get("drift_corrected"):
        out["drift_corrected"] = True
    return out


def describe(protocol: Mapping[str, Any]) -> str:
    """One phrase, e.g. 'timer cpu (CPU time of the measuring thread), backend torch, 1 thread, ...'."""
    if not protocol:
        return "unknown (the training CSV recorded no protocol)"
    p = dict(protocol)
    parts = []
    if "timer" in p:
        parts.append(f"timer {p['timer']} ({CLOCKS.get(p['timer'], 'unknown clock')})")
    else:
        parts.append("timer unknown")
    if "backend" in p:
        parts.append(f"backend {p['backend']}" + (f" {p['quantize']}" if p.get("quantize") else ""))
    if "threads" in p:
        parts.append("torch's default threads" if p["threads"] is None else f"{p['threads']} thread(s)")
    if "src_len" in p or "tgt_len" in p:
        parts.append(f"src_len {p.get('src_len', '?')} / tgt_len {p.get('tgt_len', '?')}")
    parts += [f"{k} {p[k]}" for k in ("beam", "batch", "vocab_size") if k in p]
    if "warmup" in p or "runs" in p:
        parts.append(f"{p.get('warmup', '?')} warm-ups / {p.get('runs', '?')} runs")
    if p.get("drift_corrected"):
        parts.append("drift-corrected")
    return ", ".join(parts)


def mismatch_warning(recorded: Mapping[str, Any] | None, used: Mapping[str, Any], predictor: str, what: str,
                     device: str) -> str | None:
    """One warning line when `used` (the protocol `what` measures with, device `device`'s) differs from
    the protocol a predictor was fit on in a field that changes what a latency means; None when they
    agree or the predictor's protocol is unknown."""
    if not recorded:
        return None
    keys = [k for k in COMPARED if k in recorded or k == "quantize"]
    diffs = [k for k in keys if recorded.get(k) != used.get(k)]
    if not diffs:
        return None
    name = Path(predictor).name if predictor else "the predictor"
    if "timer" in diffs:
        fit_on = f"{recorded['timer']}-timed latencies"
        uses = f"times {CLOCKS.get(str(used.get('timer')), used.get('timer'))}"
        consequence = "not the same clock"
        diffs.remove("timer")
    else:
        fit_on, uses, consequence = "latencies", "measures", "not comparable"
    if diffs:
        fit_on += " with " + ", ".join(f"{k} {recorded.get(k)}" for k in diffs)
        uses += (" with " if uses == "measures" else " and ") + ", ".join(f"{k} {used.get(k)}" for k in diffs)
    return (f"warning: predictor {name} was fit on {fit_on}; {what} {uses} (device {device}): predicted and "
            f"measured ms are {consequence}")


def predictor_warning(predictor: Any, used: Mapping[str, Any], what: str, device: str) -> str | None:
    """`mismatch_warning` for a loaded predictor (or a wrapper of one, e.g. `ConstraintBound`);
    None for predictors that record no protocol (the MACs proxy)."""
    inner = getattr(predictor, "predictor", predictor)
    return mismatch_warning(getattr(inner, "protocol", None), used, getattr(inner, "source", ""), what, device)


__all__ = ["COMPARED", "RECORDED", "describe", "mismatch_warning", "predictor_warning", "training_protocol"]
