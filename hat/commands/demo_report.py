"""The demo's summary: one row per delivered or baseline model, the compute each got, and
comparisons that claim a win only where it holds beyond the measurement spread.

Row kinds: `searched` (found under a latency constraint, inherited weights + fine-tuning),
`largest` / `uniform` (the largest subnet / a uniformly shrunk one, same pipeline),
`dedicated` (the largest config trained alone from scratch), `hand` (a uniformly shrunk config of
a constraint's latency class, alone from scratch; `hand-max` the same class's by another rule, the
sensitivity of the comparison to that choice), `searched-scratch` (a searched architecture alone
from scratch). Baselines get the budget per delivered model, B, and one recipe.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hat.files import atomic_write_text, save_figure
from hat.latency.compare import Spread

QUICK_WARNING = ("**Quick budget: this run shows the pipeline, not model quality** (BLEU near 0 is expected); "
                 "`make demo` trains for real.")
KIND_ORDER = ("searched", "searched-scratch", "largest", "uniform", "dedicated", "hand", "hand-max")
MARKERS = {"searched": "*", "searched-scratch": "P", "largest": "s", "uniform": "D", "dedicated": "o", "hand": "v",
           "hand-max": "^"}
BASES = ("dedicated", "hand", "hand-max")  # what each searched row is compared with


def _spread(row: dict) -> Spread:
    return Spread(row["measured_ms"], row["measured_low_ms"], row["measured_high_ms"], tuple(row.get("measured_rounds", ())))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def compare(row: dict, base: dict) -> str:
    """`row` against `base` in one phrase: latency ratio, BLEU difference and what holds."""
    a, b = _spread(row), _spread(base)
    ratio = a.median / b.median
    d = row["bleu"] - base["bleu"]
    faster, slower = a.faster_than(b), b.faster_than(a)
    speed = "faster" if faster else "slower" if slower else "same speed within the spread"
    from hat.evaluate import pvalue_text  # noqa: PLC0415

    p = row.get("p_vs", {}).get(base["name"])
    sig = "" if p is None else (f", {pvalue_text(p)}" + (" significant" if p < 0.05 else " not significant"))
    verdict = ""
    if faster and d > 0:
        verdict = " -> beats it on both axes"
    elif slower and d < 0:
        verdict = " -> loses on both axes"
    return f"{ratio:.2f}x its latency ({speed}), BLEU {d:+.2f}{sig}{verdict}"


def summary_lines(rows: list[dict], meta: dict[str, Any]) -> list[str]:
    b = meta["budget"]
    lines = [
        f"# hat demo: tiny SuperTransformer on {meta.get('corpus', 'Debian de-en')}, this CPU",
        "",
    ]
    if meta.get("quick"):
        lines += [QUICK_WARNING, ""]
    lines += [
        f"Machine: {meta.get('machine', '?')}. Latency: {meta.get('protocol', '')}, measured in "
        f"{meta['rounds']} interleaved rounds (median [min-max]). BLEU/chrF: sacrebleu on the first "
        f"{meta['test_sentences']} test sentences, beam {meta['beam']}, lenpen {meta.get('lenpen', 0.6):g}.",
        f"Constraints (predicted ms at search): {', '.join(f'{c:g} ms' for c in meta['constraints'])} "
        f"({meta.get('constraint_rule', '')}).",
        "",
        f"Budget per delivered model B = (SuperTransformer training {b['super_s']:.0f} s"
        + (f" + latency measurement and predictor {b['latency_s']:.0f} s" if "latency_s" in b else "")
        + f" + search {b['search_s']:.0f} s + fine-tuning {b['finetune_s']:.0f} s) / {b['n_constraints']} constraints"
        f" = **{b['per_model_s']:.0f} s**; every baseline trained alone from scratch gets B.",
    ]
    if meta.get("recipes"):
        lines.append("Recipes (on top of the tiny-cpu training recipe): " + "; ".join(
            f"{k}: `{v}`" for k, v in meta["recipes"].items()) + ".")
    for st in meta.get("stages", []):
        cut = " (stopped by its wall-clock budget)" if st.get("stopped_by_budget") else ""
        lines.append(f"- {st['name']}: {st['updates']} updates, {st['tokens'] / 1e6:.2f} M target tokens, "
                     f"{st['seconds']:.0f} s ({st['tokens'] / max(st['seconds'], 1e-9):.0f} tokens/s){cut}")
    lines += [
        "",
        "Params: HAT's count (without the embeddings and the output projection) / every parameter of the exported "
        "model (the shared embedding counted once).",
        "",
        "| kind | model | params (M) | constraint | measured ms [min-max] | BLEU | chrF | training | architecture |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (KIND_ORDER.index(r["kind"]), r["measured_ms"])):
        con = _constraint_cell(r)
        chrf = f"{r['chrf']:.1f}" if r.get("chrf") is not None else "-"
        params = f"{r['params_M']:.2f}" + (f" / {r['total_params_M']:.2f}" if r.get("total_params_M") else "")
        training = r.get("training", "") + (f"; the same model as `{r['same_as']}`" if r.get("same_as") else "")
        lines.append(f"| {r['kind']} | {_cell(r['name'])} | {params} | {con} | {_spread(r)} | "
                     f"{r['bleu']:.2f} | {chrf} | {_cell(training)} | {_cell(r['config'])} |")
    searched = [r for r in rows if r["kind"] == "searched"]
    lines += _limits(searched, meta)
    lines += front_lines(rows, meta)
    by_kind = {k: r for k in BASES for r in rows if r["kind"] == k}
    if searched and (by_kind or uniform_of(searched[0], rows)):
        lines += ["", "Searched subnets against their class's uniformly scaled design (the same pipeline) and the "
                  "baselines trained alone with budget B:"]
        for r in sorted(searched, key=lambda r: r["constraint_ms"]):
            u = uniform_of(r, rows)
            parts = [f"vs {u['name']}: {compare(r, u)}"] if u else []
            parts += [f"vs {k}: {compare(r, base)}" for k, base in by_kind.items()]
            scratch = next((s for s in rows if s["kind"] == "searched-scratch" and s["config"] == r["config"]), None)
            if scratch:
                parts.append(f"vs its own architecture from scratch: BLEU {r['bleu'] - scratch['bleu']:+.2f}")
            lines.append(f"- {r['name']}: " + "; ".join(parts))
    lines += _by_origin(rows)
    lines += ["", "Stage wall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in meta["timings"].items())
              + f"; total {sum(meta['timings'].values()):.0f} (this invocation {meta['wall_s']:.0f}; a resumed demo "
              "counts the earlier ones' stages too)"]
    return lines


def uniform_of(r: dict, rows: list[dict]) -> dict | None:
    """The `uniform` row of `r`'s latency class."""
    return next((u for u in rows if u["kind"] == "uniform" and u.get("constraint") is not None
                 and u.get("constraint") == r.get("constraint")), None)


def _front(rows: list[dict], kind: str, by: str) -> list[dict]:
    """The rows of `kind` that belong to a latency class, sorted by `by`."""
    return sorted((r for r in rows if r["kind"] == kind and r.get("constraint_ms") is not None), key=lambda r: r[by])


def front_lines(rows: list[dict], meta: dict[str, Any]) -> list[str]:
    """The delivered front, tightest class first: BLEU at each class, what each looser class buys
    over the next tighter one, and the classes that deliver a tighter class's model again."""
    out = []
    for kind, what in (("searched", "searched"), ("uniform", "uniformly scaled")):
        front = _front(rows, kind, "constraint_ms")
        if len(front) < 2:
            continue
        gains = [b["bleu"] - a["bleu"] for a, b in zip(front, front[1:])]
        out.append(f"- {what}: " + " -> ".join(f"{r['bleu']:.2f} ({r.get('constraint') or r['name']})" for r in front)
                   + f"; each looser class over the next tighter: {', '.join(f'{g:+.2f}' for g in gains)} BLEU ("
                   + ("monotone" if all(g >= 0 for g in gains) else "**not monotone**") + ")")
        out += [f"  - {r['name']} delivers the model of `{r['same_as']}` (its selection chose a tighter class's pick)"
                for r in front if r.get("same_as")]
    if not out:
        return []
    return ["", "Fronts (BLEU by latency class, tightest first; final choice of each search: "
            f"{meta.get('select', 'the best inherited loss')}):"] + out


def _constraint_cell(r: dict) -> str:
    """`0.45 x largest = 40.3 ms, met` where the row has a measured limit, else its ms (older runs)."""
    if r.get("limit_ms") is not None:
        return f"{r['constraint']} = {r['limit_ms']:.1f} ms, {'met' if r['within_limit'] else '**missed**'}"
    return f"{r['constraint_ms']:g} ms" if r.get("constraint_ms") else "-"


def _limits(searched: list[dict], meta: dict[str, Any]) -> list[str]:
    """Each searched subnet against its constraint, both timed in the same rounds."""
    refs = meta.get("references") or {}
    checked = [r for r in searched if r.get("limit_ms") is not None]
    if not checked:
        return []
    met = sum(r["within_limit"] for r in checked)
    return ["", f"Constraints on this machine, in the same rounds: {met} of {len(checked)} searched subnets "
            "measured within their share of the reference (each reference's rounds pooled with every row of its "
            "architecture: " + ", ".join(
                f"reference {k} {Spread.from_dict(v)}" for k, v in refs.items()) + "):"] + [
        f"- {r['name']}: {r['measured_ms']:.1f} ms = {r['ratio_to_reference']:.3f} x the reference, limit "
        f"{r['limit_ms']:.1f} ms -> {'met' if r['within_limit'] else 'MISSED'}"
        + (f" (searched at {r['search_share']:g})" if r.get("search_share") not in (None, r.get("share")) else "")
        for r in checked]


def _by_origin(rows: list[dict]) -> list[str]:
    """BLEU per origin of the test set: each origin is its own domain (package descriptions, a
    dictionary, software help, a game), so a model that wins only on one shows it here."""
    tags = sorted({t for r in rows for t in r.get("bleu_by_origin") or {}})
    if not tags:
        return []
    lines = ["", "BLEU by origin of the test sentences (domains):", "",
             "| kind | model | " + " | ".join(tags) + " |", "|---|---|" + "---:|" * len(tags)]
    for r in sorted(rows, key=lambda r: (KIND_ORDER.index(r["kind"]), r["measured_ms"])):
        got = r.get("bleu_by_origin") or {}
        lines.append(f"| {r['kind']} | {_cell(r['name'])} | "
                     + " | ".join(f"{got[t]:.2f}" if t in got else "-" for t in tags) + " |")
    return lines


def write_summary(out: Path, rows: list[dict], meta: dict[str, Any]) -> Path:
    """summary.md, summary.json and latency_vs_bleu.png under `out`; prints the summary."""
    lines = summary_lines(rows, meta)
    summary = out / "summary.md"
    atomic_write_text(summary, "\n".join(lines) + "\n")
    atomic_write_text(out / "summary.json", json.dumps({"rows": rows, **meta}, indent=1))
    limits = [r["limit_ms"] for r in rows if r.get("limit_ms") is not None]
    plot(out / "latency_vs_bleu.png", rows, limits or meta["constraints"])
    print("\n" + "\n".join(lines))
    print(f"\n[demo] summary: {summary}\n[demo] plot: {out / 'latency_vs_bleu.png'}")
    return summary


def plot(path: Path, rows: list[dict], constraints: list[float]) -> None:
    """Latency (median, min-max bars) against BLEU, one marker shape per kind."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for kind, color in (("searched", "C0"), ("uniform", "C3")):  # the two fronts, as lines
        front = _front(rows, kind, "measured_ms")
        if len(front) > 1:
            ax.plot([r["measured_ms"] for r in front], [r["bleu"] for r in front], "-", color=color, lw=1.2, alpha=0.6,
                    label=f"{kind} front")
    for r in sorted(rows, key=lambda r: KIND_ORDER.index(r["kind"])):
        s = _spread(r)
        ax.errorbar(s.median, r["bleu"], xerr=[[s.median - s.low], [s.high - s.median]], fmt=MARKERS[r["kind"]],
                    ms=11 if r["kind"] == "searched" else 7, capsize=3, label=f"{r['kind']}: {r['name']}")
    for c in constraints:
        ax.axvline(c, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("measured latency on this CPU (ms; median and min-max of interleaved rounds)")
    ax.set_ylabel("BLEU (test)")
    ax.set_title("Searched front vs the uniformly scaled front (same pipeline) and models trained alone with the "
                 "same budget", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
