"""NSGA-II over (predicted latency, score) with pymoo: the whole trade-off in one search.

A SubConfig is encoded as a fixed-length integer vector of choice indices (the four
scalars, then every per-layer gene up to the super depth; genes beyond the sampled depth
are inert), so pymoo's standard integer operators apply (SBX + polynomial mutation with
rounding). The latency constraint, when given, is an inequality constraint; infeasible
offspring are not scored (their score objective is a large constant), so the scorer's
budget is spent on candidates that could be chosen. The initial population is uniform
feasible samples, like evolution's. The state file holds pymoo's algorithm as plain data (its
population with objectives, constraint values, ranks and crowding distances, the generation
counter and the RNG state as numbers); a resumed search rebuilds the algorithm from it and
continues exactly as an uninterrupted one. Nothing is unpickled: a state file is only data.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from hat.errors import HatError, first_line
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
    problem = Problem(n_var=len(codec.slots), n_obj=2, n_ieq_constr=1, xl=np.zeros(len(codec.slots)),
                      xu=codec.upper.astype(float), vtype=int)

    def algorithm(sampling: np.ndarray):
        algo = NSGA2(
            pop_size=s.population, n_offsprings=n_off, sampling=sampling,
            crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
            mutation=PM(prob=1.0, eta=20, vtype=float, repair=RoundingRepair()),
            eliminate_duplicates=True,
        )
        return algo.setup(problem, termination=("n_gen", s.iterations + 1), seed=s.seed, verbose=False)

    if run.generation >= 0:
        algo = restore(run.state.extra.get("pymoo"), algorithm, problem, codec, run.state_path)
    run.start()
    try:
        if run.generation < 0:
            run.check_feasible()
            rng = run.rng
            init = [run.feasible(lambda: space.sample(rng), "random sample") for _ in range(s.population)]
            algo = algorithm(np.stack([codec.encode(c) for c in init]).astype(float))
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
            run.state.extra["pymoo"] = snapshot(algo)
            cur = [codec.decode(x) for x in algo.pop.get("X")]
            cur_scores = [float(v) for v in algo.pop.get("F")[:, 1]]
            cur_ok = [latency(c) <= run.constraint for c in cur]
            best = min(range(len(cur)), key=lambda i: (not cur_ok[i], cur_scores[i], i))
            run.end_generation(cur, cur_scores, best_idx=best,
                               mean_of=[v for v, f in zip(cur_scores, cur_ok) if f] or cur_scores)
    finally:
        run.log.close()
    return run.result()


# ---- the algorithm as plain data -------------------------------------------------------------
def snapshot(algo: Any) -> dict[str, Any]:
    """What NSGA-II carries from one generation to the next, as JSON-able numbers: the survivors
    (genes, objectives, constraint values, rank and crowding distance, which the next tournament
    reads), the generation counter and the RNG's state."""
    pop = algo.pop
    num = lambda v: None if v is None else float(v)  # noqa: E731  (infeasible survivors have no rank)
    return {"n_iter": int(algo.n_iter), "rng": algo.random_state.bit_generator.state,
            "X": pop.get("X").tolist(), "F": pop.get("F").tolist(), "G": pop.get("G").tolist(),
            "rank": [num(v) for v in pop.get("rank")], "crowding": [num(v) for v in pop.get("crowding")]}


def restore(data: Any, algorithm: Any, problem: Any, codec: GeneCodec, where: Any) -> Any:
    """A fresh NSGA-II set to a `snapshot`; a missing or malformed one is one HatError naming the
    state file (never unpickled, never indexed unchecked)."""
    from pymoo.core.evaluator import Evaluator
    from pymoo.core.population import Population
    from pymoo.problems.static import StaticProblem

    try:
        X = np.asarray(data["X"], dtype=float)
        F, G = np.asarray(data["F"], dtype=float), np.asarray(data["G"], dtype=float)
        rank, crowding = list(data["rank"]), list(data["crowding"])
        n = len(X)
        if X.shape != (n, len(codec.slots)) or F.shape != (n, problem.n_obj) or G.shape != (n, problem.n_ieq_constr) \
                or n < 1 \
                or len(rank) != n or len(crowding) != n or not np.isfinite(X).all():
            raise ValueError("population arrays of inconsistent shapes")
        algo = algorithm(X)
        pop = Population.new("X", X)
        Evaluator().eval(StaticProblem(problem, F=F, G=G), pop)
        for ind, r, c in zip(pop, rank, crowding):
            ind.set("rank", None if r is None else int(r))
            ind.set("crowding", None if c is None else float(c))
        algo.random_state.bit_generator.state = dict(data["rng"])
        algo.pop, algo.is_initialized, algo.start_time = pop, True, time.time()
        algo.n_iter = int(data["n_iter"]) - 1  # the termination is updated before the counter moves on
        algo.termination.update(algo)
        algo.n_iter += 1
        algo._set_optimum()
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
        raise HatError(f"{where}: corrupt NSGA-II state ({type(e).__name__}: {first_line(e, 120)}); "
                       "delete it or pass --no-resume to start over") from None
    return algo
