"""The demo's latency classes: the constraints, the hand-shrunk design of the tightest class, and
what each class's searched subnet is measured against.

Every class is a share of a reference model's latency, never a bare number of milliseconds: a
shared machine runs 10-20 % slower an hour later, and a constraint in ms set from the predictor at
search time then fails in the final table although the subnet kept it. A share of a model timed in
the same interleaved rounds (`hat search --faster-than`, the final table) survives that drift.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from hat.space import DesignSpace, SubConfig, num_params


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


HAND_BAND = 0.95  # `hand` uses at least this share of its class's latency limit


def hand_design(space: DesignSpace, predictor: Any, constraint: float, rule: str = "fewest") -> SubConfig:
    """The uniformly shrunk config a person would pick for `constraint`. The rule: of the uniform
    designs predicted to use HAND_BAND-100 % of the limit (a person spends the latency they are
    given), the one with the fewest parameters, the one that trains the most updates in a
    wall-clock budget (`rule="most"`: the most parameters under the limit, the earlier demos' rule,
    whose `hand` trained the fewest updates). None in the band: the slowest under the limit; none
    under it: the fastest of all."""
    if rule not in ("fewest", "most"):
        raise ValueError(f"hand_design rule={rule!r}: expected 'fewest' or 'most'")
    cands = uniform_configs(space)
    preds = [float(p) for p in predictor.predict(cands)]
    ok = [(p, num_params(cfg, space), cfg) for cfg, p in zip(cands, preds) if p <= constraint]
    if not ok:
        return min(zip(preds, cands), key=lambda x: x[0])[1]
    if rule == "most":
        return max(ok, key=lambda x: x[1])[2]
    band = [x for x in ok if x[0] >= HAND_BAND * constraint]
    return min(band, key=lambda x: (x[1], -x[0]))[2] if band else max(ok, key=lambda x: x[0])[2]


def uniform_design(space: DesignSpace, predictor: Any, constraint: float) -> SubConfig:
    """A latency class's uniformly scaled baseline (HAT's: one embed dim, FFN width and head count in
    every layer, depth and width scaled): the uniform design predicted closest under `constraint`
    (the slowest not over it; of equals, the fewest parameters). None under it: the fastest."""
    cands = uniform_configs(space)
    preds = [float(p) for p in predictor.predict(cands)]
    ok = [(p, -num_params(c, space), c) for c, p in zip(cands, preds) if p <= constraint]
    if not ok:
        return min(zip(preds, cands), key=lambda x: x[0])[1]
    return max(ok, key=lambda x: (x[0], x[1]))[2]


def latency_constraints(fractions: tuple[float, ...], top: float, low: float,
                        room: float = 1.0) -> tuple[list[float], str]:
    """Constraints (ms) as fractions of the largest subnet's predicted latency `top`, and the rule
    in words. The tightest is raised to `room` x the fastest subnet's `low` when it is below (the
    demo's tightest class needs a hand design with designs faster than it). A noisy predictor can
    put one below `low`, where no search succeeds; then each is that fraction of the way from `low`
    to `top` (still distinct, ordered)."""
    fs = "fractions " + ", ".join(f"{f:g}" for f in fractions)
    cs = [round(f * top, 1) for f in fractions]
    floor, note = round(room * low, 1), ""
    if cs[0] < floor < (cs[1] if len(cs) > 1 else float("inf")):
        cs[0] = floor
        note = f"; the tightest raised to {room:g}x the smallest subnet's predicted {low:.1f} ms"
    if all(c > 1.02 * low for c in cs):
        return cs, f"{fs} of the largest subnet's predicted {top:.1f} ms{note}"
    return [round(low + f * (top - low), 1) for f in fractions], (
        f"{fs} of the way from the smallest subnet's predicted {low:.1f} ms to the largest's {top:.1f} ms")


@dataclass(frozen=True)
class LatencyClass:
    """One search: its subnet must measure at most `share` x the `reference` model's latency,
    both timed in the same interleaved rounds (`hat search --faster-than REF --faster-by 1-share`)."""

    reference: str  # "largest" or "hand": a config under the demo's baselines/ directory
    share: float
    margin: float = 0.0  # the search holds (1 - margin) x share: room for the noise of re-measuring

    @property
    def search_share(self) -> float:
        """The share the search and its `--verify` hold; the final table checks `share`. Timing the
        same two models again 45-60 minutes later moved their ratio by up to 4 % on a shared machine, so a
        subnet verified exactly at its share can miss it when the final table times it again."""
        return round(self.share * (1 - self.margin), 4)

    @property
    def label(self) -> str:
        return f"{self.share:.2f} x {self.reference}"

    @property
    def slug(self) -> str:
        return "search-faster-than-hand" if self.reference == "hand" else f"search-{self.share:.2f}x-largest"


def latency_classes(constraints: list[float], top: float, hand_ms: float, low: float,
                    faster_by: float, margin: float = 0.0) -> list[LatencyClass]:
    """The constraints (ms, from `latency_constraints`) as shares of the largest subnet's predicted
    latency `top`; the tightest becomes `1 - faster_by` x the hand design of its class (predicted
    `hand_ms`) when its search share leaves room above the fastest subnet's `low`. Each searches
    `margin` inside its share (`LatencyClass.search_share`)."""
    classes = [LatencyClass("largest", round(c / top, 4), margin) for c in constraints]
    hand = LatencyClass("hand", round(1 - faster_by, 4), margin)
    if hand.search_share * hand_ms > 1.02 * low:
        classes[0] = hand
    return classes


__all__ = ["HAND_BAND", "LatencyClass", "hand_design", "latency_classes", "latency_constraints", "uniform_configs",
           "uniform_design"]
