"""NSGA-II over (predicted latency, score) with pymoo: the whole trade-off in one search.

A SubConfig is encoded as a fixed-length integer vector of choice indices (the four
scalars, then every per-layer gene up to the super depth; genes beyond the sampled depth
are inert), so pymoo's standard integer operators apply (SBX + polynomial mutation with
rounding). The latency constraint, when given, is an inequality constraint; infeasible
offspring are not scored (their score objective is a large constant), so the scorer's
budget is spent on candidates that could be chosen. The initial population is uniform
feasible samples, like evolution's. pymoo's algorithm object (with its RNG) is pickled
into the state file each generation, so a killed search resumes exactly.
"""
from __future__ import annotations

import base64
import math
import pickle
from typing import Any

import numpy as np

from hat.errors import HatError
from hat.latency.estimate import Latency
from hat.search.evolution import ALGORITHMS, EvolutionSettings, SearchResult, SearchRun
from hat.search.scorers import Scorer
from hat.space import LAYER_FIELDS_DEC, LAYER_FIELDS_ENC, SCALAR_FIELDS, DesignSpace, SubConfig

INFEASIBLE_SCORE = 1e9


class GeneCodec:
    """SubConfig <-> integer vector of choice indices."""

    def __init__(self, space: DesignSpace) -> None:
        self.space = space
        self.slots: list[tuple[str, int | None]] = [(k, None) for k in SCALAR_FIELDS]
        self.slots += [(k, i) for k in LAYER_FIELDS_ENC for i in range(space.max_encoder_layers)]
        self.slots += [(k, i) for k in LAYER_FIELDS_DEC for i in range(space.max_decoder_layers)]
        self.upper = np.array([len(space.choices[k]) - 1 for k, _ in self.slots], dtype=int)

    def encode(self, cfg: SubConfig) -> np.ndarray:
        out = []
        for k, i in self.slots:
            v = getattr(cfg, k)
            if i is not None:
                v = v[i] if i < len(v) else self.space.choices[k][0]
            out.append(self.space.choices[k].index(v))
        return np.array(out, dtype=int)

    def decode(self, x: np.ndarray) -> SubConfig:
        x = np.clip(np.rint(np.asarray(x, dtype=float)).astype(int), 0, self.upper)
        d: dict[str, Any] = {}
        lists: dict[str, list[int]] = {}
        for (k, i), j in zip(self.slots, x.tolist()):
            v = self.space.choices[k][j]
            if i is None:
                d[k] = v
            else:
                lists.setdefault(k, []).append(v)
        for k in LAYER_FIELDS_ENC:
            d[k] = lists[k][: d["encoder_layer_num"]]
        for k in LAYER_FIELDS_DEC:
            d[k] = lists[k][: d["decoder_layer_num"]]
        return SubConfig(**d)


def _pymoo():
    try:
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.evaluator import Evaluator
        from pymoo.core.problem import Problem
        from pymoo.operators.crossover.sbx import SBX
        from pymoo.operators.mutation.pm import PM
        from pymoo.operators.repair.rounding import RoundingRepair
        from pymoo.problems.static import StaticProblem
    except ImportError:
        raise HatError("--algorithm nsga2 needs pymoo (pip install 'pymoo==0.6.2')") from None
    return NSGA2, Evaluator, Problem, SBX, PM, RoundingRepair, StaticProblem


@ALGORITHMS.register("nsga2")
def nsga2_search(
    space: DesignSpace,
    scorer: Scorer,
    latency: Latency,
    constraint: float | None,
    settings: EvolutionSettings | None = None,
    **run_kwargs: Any,
) -> SearchResult:
    """NSGA-II with population `settings.population`, `mutations + crossovers` offspring per
    generation and `iterations` generations after the initial one (evolution's budget).
    `result.front` is the non-dominated set of every feasible evaluated candidate."""
    NSGA2, Evaluator, Problem, SBX, PM, RoundingRepair, StaticProblem = _pymoo()
    s = settings or EvolutionSettings()
    run = SearchRun("nsga2", space, scorer, latency, constraint, s, **run_kwargs)
    codec = GeneCodec(space)
    n_off = max(s.mutations + s.crossovers, 1)
    run.start()
    try:
        if run.generation < 0:
            run.check_feasible()
            rng = run.rng
            init = [run.feasible(lambda: space.sample(rng), "random sample") for _ in range(s.population)]
            problem = Problem(n_var=len(codec.slots), n_obj=2, n_ieq_constr=1, xl=np.zeros(len(codec.slots)),
                              xu=codec.upper.astype(float), vtype=int)
            algo = NSGA2(
                pop_size=s.population, n_offsprings=n_off,
                sampling=np.stack([codec.encode(c) for c in init]).astype(float),
                crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                mutation=PM(prob=1.0, eta=20, vtype=float, repair=RoundingRepair()),
                eliminate_duplicates=True,
            )
            algo.setup(problem, termination=("n_gen", s.iterations + 1), seed=s.seed, verbose=False)
        else:
            algo = pickle.loads(base64.b64decode(run.state.extra["pymoo"]))
        while run.generation < s.iterations and algo.has_next():
            pop = algo.ask()
            cfgs = [codec.decode(x) for x in pop.get("X")]
            lats = latency.many(cfgs)
            ok = [lat <= run.constraint for lat in lats]
            feas = [c for c, f in zip(cfgs, ok) if f]
            fs = iter(run.evaluate(feas))
            scores = [next(fs) if f else INFEASIBLE_SCORE for f in ok]
            cap = run.constraint if not math.isinf(run.constraint) else max(lats) + 1.0
            F = np.column_stack([lats, scores]).astype(float)
            G = (np.asarray(lats, dtype=float) - cap).reshape(-1, 1)
            Evaluator().eval(StaticProblem(algo.problem, F=F, G=G), pop)
            algo.tell(infills=pop)
            run.state.extra["pymoo"] = base64.b64encode(pickle.dumps(algo)).decode("ascii")
            cur = [codec.decode(x) for x in algo.pop.get("X")]
            cur_scores = [float(v) for v in algo.pop.get("F")[:, 1]]
            cur_ok = [latency(c) <= run.constraint for c in cur]
            best = min(range(len(cur)), key=lambda i: (not cur_ok[i], cur_scores[i], i))
            run.end_generation(cur, cur_scores, best_idx=best,
                               mean_of=[v for v, f in zip(cur_scores, cur_ok) if f] or cur_scores)
    finally:
        run.log.close()
    return run.result()
