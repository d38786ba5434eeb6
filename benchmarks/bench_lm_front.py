"""`bench_lm.py front`: the searched LM front against uniformly scaled GPT-style designs.

Each member of an LM front is a budget: its own predicted latency and memory. Uniform designs
(one FFN width and head count in every layer) are coarse, so none costs exactly that; the member
is placed between two of them, both trained alike:
- below: the uniform design with the most decoder parameters within the member's latency AND
  memory (the strongest plain alternative that fits the budget);
- above: the fastest uniform design with at least the member's decoder parameters, latency and
  memory (the cheapest plain design that matches it on the proxy).
The member beats the uniform curve at its latency when its perplexity is below the line from
`below` to `above`, interpolated at its latency. The proxy's gain over `below` (a parameter
ratio) is reported over the whole front; `--min-gain` keeps the members where there is one.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Sequence

from bench_lm import _budgets, _lm_predictor, _save, _seeds, hat_cli, train, uniform_configs
from bench_ranking import spread_over_latency
from hat.search.lm_front import read_lm_front
from hat.space import LMConfig, LMSpace, lm_decoder_params, load_lm_space

DESIGNS = ("below", "front", "above")


def strongest_within(lat: float, mem: float, lats: Sequence[float], mems: Sequence[float],
                     params: Sequence[float]) -> int | None:
    """Index of the design with the most parameters whose latency and memory are both within
    (lat, mem) (ties: the lower latency, then the first); None when none fits."""
    ok = [i for i in range(len(lats)) if lats[i] <= lat and mems[i] <= mem]
    return max(ok, key=lambda i: (params[i], -lats[i], -i)) if ok else None


def cheapest_matching(lat: float, mem: float, dp: float, lats: Sequence[float], mems: Sequence[float],
                      params: Sequence[float]) -> int | None:
    """Index of the fastest design with at least `dp` parameters, `lat` latency and `mem` memory
    (ties: the less memory, then the first); None when none has all three."""
    ok = [i for i in range(len(lats)) if lats[i] >= lat and mems[i] >= mem and params[i] >= dp]
    return min(ok, key=lambda i: (lats[i], mems[i], i)) if ok else None


def on_the_line(x: float, x0: float, y0: float, x1: float, y1: float) -> float:
    """y at x on the line through (x0, y0) and (x1, y1); y0 when x0 == x1."""
    return y0 if x1 == x0 else y0 + (x - x0) / (x1 - x0) * (y1 - y0)


def part_front(a: argparse.Namespace) -> None:
    """Searched front members between the uniform designs below and above them, trained alike."""
    if not a.predictor:
        sys.exit("front needs --predictor (an lm-cost file): it predicts the uniform designs' latency and memory")
    space, seeds, top = load_lm_space(a.space), _seeds(a), _budgets(a)[-1]
    pred = _lm_predictor(a, space)
    front = Path(a.front) if a.front else Path(a.work).resolve() / "front" / "front.csv"
    if not front.is_file():
        front.parent.mkdir(parents=True, exist_ok=True)
        hat_cli(["search", "--task", "lm", "--space", a.space, "--predictor", a.predictor, "--out", str(front),
                 "--no-progress"], front.with_suffix(".out"))
    members = [c for c, _ in read_lm_front(front)]
    lat, mem = [float(x) for x in pred.predict(members)], [float(x) for x in pred.predict_memory(members)]
    dp = [lm_decoder_params(m) for m in members]
    uni = uniform_configs(space)
    ulat, umem = [float(x) for x in pred.predict(uni)], [float(x) for x in pred.predict_memory(uni)]
    udp = [lm_decoder_params(c) for c in uni]
    below = [strongest_within(lat[j], mem[j], ulat, umem, udp) for j in range(len(members))]
    gain = [dp[j] / udp[b] if b is not None else math.nan for j, b in enumerate(below)]
    known = [g for g in gain if not math.isnan(g)]
    summary = {"members": len(members), "no_uniform_within": len(members) - len(known),
               "median_gain": statistics.median(known), "max_gain": max(known),
               "more_params": sum(g > 1 for g in known), "fewer_params": sum(g < 1 for g in known)}
    print(f"{front}: {len(members)} members; a member has {summary['median_gain']:.2f}x the decoder parameters of "
          f"the strongest uniform design within its predicted latency and memory at the median (at most "
          f"{summary['max_gain']:.2f}x); more in {summary['more_params']}, as many in "
          f"{len(known) - summary['more_params'] - summary['fewer_params']}, fewer in {summary['fewer_params']}; "
          f"no uniform design fits {summary['no_uniform_within']}", flush=True)
    eligible = [j for j, g in enumerate(gain) if g >= a.min_gain]
    if not eligible:
        sys.exit(f"no front member has a gain of at least {a.min_gain} over the uniform designs (lower --min-gain)")
    rows = []
    for j in sorted(spread_over_latency(eligible, [lat[j] for j in eligible], a.k), key=lambda j: lat[j]):
        up = cheapest_matching(lat[j], mem[j], dp[j], ulat, umem, udp)
        row: dict = {"gain": gain[j]}
        for name, c, c_ms, c_mem in (("front", members[j], lat[j], mem[j]),
                                     ("below", uni[below[j]], ulat[below[j]], umem[below[j]]),
                                     ("above", *((uni[up], ulat[up], umem[up]) if up is not None else (None,) * 3))):
            if c is None:
                continue
            row[name] = {"config": c.to_dict(), "summary": c.describe(), "latency_ms": c_ms, "memory_mib": c_mem / 2**20,
                         "decoder_params": lm_decoder_params(c), "ppl": [train(a, c, s)["ppl"][str(top)] for s in seeds]}
        if "above" in row:
            b, f, u = row["below"], row["front"], row["above"]
            row["front_minus_line"] = [
                pf - on_the_line(f["latency_ms"], b["latency_ms"], pb, u["latency_ms"], pu)
                for pf, pb, pu in zip(f["ppl"], b["ppl"], u["ppl"])]
        rows.append(row)
    if a.measure:
        measure_rows(a, space, rows)
    _save(Path(a.json), "front", {"front_csv": str(front), "predictor": a.predictor, "updates": top, "seeds": seeds,
                                  "min_gain": a.min_gain, "summary": summary, "rows": rows})
    report_front(rows, top, seeds)


def measure_rows(a: argparse.Namespace, space: LMSpace, rows: list[dict]) -> None:
    """Each row's designs timed on this machine: `--measure` rounds, below, front, above interleaved."""
    from hat.latency.devices import resolve_device  # noqa: PLC0415  (torch-heavy import)
    from hat.latency.lm_measure import LMMeasurer, LMProtocol  # noqa: PLC0415

    m = LMMeasurer(space, LMProtocol.from_device(resolve_device(a.device), space))
    for r in rows:
        names = [k for k in DESIGNS if k in r]
        cfgs = {k: LMConfig.from_dict(r[k]["config"]) for k in names}
        runs: dict[str, list[float]] = {k: [] for k in names}
        for _ in range(a.measure):
            for k in names:
                runs[k].append(m.measure(cfgs[k], memory=False)["latency_ms"])
        for k in names:
            r[k]["measured_ms"] = runs[k]
            r[k]["measured_mib"] = m.measure(cfgs[k])["peak_memory_bytes"] / 2**20
        r["measured_ratio_below"] = [f / b for f, b in zip(runs["front"], runs["below"])]
        print(f"  measured {r['front']['summary']}: {statistics.median(r['measured_ratio_below']):.2f}x the "
              f"latency of {r['below']['summary']}", flush=True)


def report_front(rows: list[dict], top: int, seeds: list[int]) -> None:
    measured = all("measured_ms" in r["front"] for r in rows)
    spread = lambda v: f"{statistics.median(v):.1f} [{min(v):.1f}, {max(v):.1f}]"  # noqa: E731
    print(f"\n{len(rows)} front members between the strongest uniform design within their predicted latency and "
          f"memory (below) and the fastest uniform design with at least their parameters, latency and memory "
          f"(above); {top} updates, perplexity per seed {seeds}"
          + ("; measured ms median [min, max] over interleaved rounds" if measured else "") + "\n")
    print("| design | predicted ms | MiB | decoder params (M) | " + ("measured ms, MiB | " if measured else "")
          + "ppl | front - the uniform line at its latency |\n|---|---:|---:|---:|" + ("---:|" if measured else "")
          + "---:|---:|")
    for r in rows:
        line = " / ".join(f"{x:+.1f}" for x in r["front_minus_line"]) if "front_minus_line" in r else "no design above"
        for name in DESIGNS:
            if name not in r:
                continue
            d = r[name]
            cells = [f"{name} `{d['summary']}`", f"{d['latency_ms']:.1f}", f"{d['memory_mib']:.1f}",
                     f"{d['decoder_params'] / 1e6:.2f}"]
            if measured:
                cells.append(spread(d["measured_ms"]) + f", {d['measured_mib']:.1f}")
            cells += [" / ".join(f"{x:.1f}" for x in d["ppl"]), line if name == "front" else ""]
            print("| " + " | ".join(cells) + " |")
