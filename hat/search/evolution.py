"""HAT's latency-constrained evolutionary search, and the machinery all searches share.

Each generation: keep the `parents` best (elitist), add `mutations` children (a random
parent, every gene resampled with probability `mutate_prob`) and `crossovers` children
(uniform crossover of two distinct random parents). A child enters only if its predicted
latency meets the constraint; it is regenerated until it does (at most `max_tries` times).
Unlike HAT's reference code, the last generation's children are scored too, so the final
answer is the best of everything proposed.
"""
from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from hat.errors import HatError
from hat.latency.estimate import Latency
from hat.registry import Registry
from hat.search.pareto import non_dominated
from hat.search.scorers import Scorer, rank_and_world
from hat.search.state import GenerationLog, SearchState, load_state, save_state
from hat.space import DesignSpace, SubConfig


class NoFeasibleConfigError(HatError):
    """No configuration of the space meets the latency constraint."""


# name -> search function `(space, scorer, latency, constraint, settings, **SearchRun kwargs) -> SearchResult`
ALGORITHMS: Registry[Callable[..., "SearchResult"]] = Registry("search algorithm")


@dataclass
class EvolutionSettings:
    """HAT's search settings and defaults (`evo_search/*.yml`); also the budget the baselines get."""

    population: int = 125
    parents: int = 25
    mutations: int = 50
    crossovers: int = 50
    iterations: int = 30
    mutate_prob: float = 0.3
    max_tries: int = 1000
    seed: int = 1
    feasibility_samples: int = 1000

    def check(self) -> None:
        if self.population < 2 or self.parents < 2 or self.parents > self.population:
            raise HatError(f"need 2 <= parents ({self.parents}) <= population ({self.population})")
        if self.mutations < 0 or self.crossovers < 0 or self.iterations < 0:
            raise HatError("mutations, crossovers and iterations must be >= 0")
        if self.population != self.parents + self.mutations + self.crossovers and self.iterations > 0:
            raise HatError(f"population ({self.population}) must equal parents + mutations + crossovers "
                           f"({self.parents} + {self.mutations} + {self.crossovers})")
        if not 0.0 <= self.mutate_prob <= 1.0:
            raise HatError(f"mutate probability {self.mutate_prob} is not in [0, 1]")
        if self.max_tries < 1:
            raise HatError("max tries must be >= 1")

    def budget(self) -> int:
        """Candidates scored by an evolution run (final children included)."""
        return self.population + self.iterations * (self.mutations + self.crossovers)


@dataclass
class Evaluated:
    cfg: SubConfig
    latency: float
    score: float


@dataclass
class SearchResult:
    """The chosen subnet, everything evaluated, the Pareto front and the per-generation log."""

    algorithm: str
    best: SubConfig
    best_score: float
    best_latency: float
    evaluated: list[Evaluated]
    front: list[Evaluated]
    rows: list[dict]
    evaluations: int
    elapsed: float
    constraint: float
    extra: dict[str, Any] = field(default_factory=dict)


def lowest_latency(space: DesignSpace, latency: Latency, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(predicted latency of space.smallest(), minimum over `n` uniform samples): what the
    error message reports when nothing fits, since a learned predictor need not be monotone."""
    rng = random.Random(seed)
    small = latency(space.smallest())
    sample = latency.many([space.sample(rng) for _ in range(n)]) if n > 0 else [math.inf]
    return small, min(sample)


class SearchRun:
    """State, RNG, feasibility, evaluation bookkeeping and logging shared by all algorithms."""

    def __init__(
        self,
        algorithm: str,
        space: DesignSpace,
        scorer: Scorer,
        latency: Latency,
        constraint: float | None,
        settings: EvolutionSettings,
        *,
        state_path: str | Path | None = None,
        resume: bool = True,
        log: GenerationLog | None = None,
        on_generation: Callable[[int, "SearchRun"], None] | None = None,
        fingerprint_extra: dict[str, Any] | None = None,
        device_name: str = "",
    ) -> None:
        settings.check()
        self.algorithm, self.space, self.scorer, self.latency = algorithm, space, scorer, latency
        self.constraint = math.inf if constraint is None else float(constraint)
        self.settings, self.state_path, self.on_generation = settings, state_path, on_generation
        self.device_name = device_name
        self.rank, self.world = rank_and_world()
        self.log = log or GenerationLog(None, None, settings.iterations + 1, progress=False)
        self.log.enabled = self.log.enabled and self.rank == 0
        fp = {"algorithm": algorithm, "space": space.to_dict(), "scorer": scorer.name,
              "constraint": self.constraint, **asdict(settings), **(fingerprint_extra or {})}
        self.rng = random.Random(settings.seed)
        self._evaluated_idx: dict[SubConfig, int] = {}
        if state_path is not None and resume and Path(state_path).is_file():
            self.state = load_state(state_path, fp)
            self.state.restore_rng(self.rng)
            for d, lat, sc in self.state.evaluated:  # deterministic scores: reuse them
                c = SubConfig.from_dict(d, "state")
                self._evaluated_idx[c] = len(self._evaluated_idx)
                self.scorer.cache.setdefault(c, float(sc))
                self.latency.cache.setdefault(c, float(lat))
        else:
            self.state = SearchState(algorithm=algorithm, fingerprint=json_roundtrip(fp))
        self._t0 = time.perf_counter()
        self._elapsed0 = self.state.elapsed

    # ---- feasibility ---------------------------------------------------------------
    def ok(self, cfg: SubConfig) -> bool:
        return self.latency(cfg) <= self.constraint

    def check_feasible(self) -> None:
        """Fail early, with the lowest achievable latency, when nothing can meet the constraint."""
        if math.isinf(self.constraint):
            return
        small, sampled = lowest_latency(self.space, self.latency, self.settings.feasibility_samples,
                                        self.settings.seed + 7919)
        if min(small, sampled) > self.constraint:
            on = f" on {self.device_name}" if self.device_name else ""
            raise NoFeasibleConfigError(
                f"no configuration of space {self.space.name} meets {self.constraint:g} ms{on}: lowest predicted "
                f"latency is {min(small, sampled):.4g} ms (smallest config {small:.4g} ms, best of "
                f"{self.settings.feasibility_samples} samples {sampled:.4g} ms)")

    def feasible(self, make: Callable[[], SubConfig], what: str) -> SubConfig:
        """Call `make` until its config meets the constraint (HAT resamples; we bound the tries)."""
        best = math.inf
        for _ in range(self.settings.max_tries):
            c = make()
            lat = self.latency(c)
            if lat <= self.constraint:
                return c
            best = min(best, lat)
        raise NoFeasibleConfigError(
            f"no {what} under {self.constraint:g} ms after {self.settings.max_tries} tries (lowest predicted "
            f"{best:.4g} ms); relax --latency-constraint or raise --max-tries")

    # ---- evaluation ----------------------------------------------------------------
    def evaluate(self, new: Sequence[SubConfig]) -> list[float]:
        """Score `new` (counted against the budget) and remember every first-seen candidate."""
        scores = self.scorer.score(list(new))
        lats = self.latency.many(list(new))
        for c, lat, s in zip(new, lats, scores):
            if c not in self._evaluated_idx:
                self._evaluated_idx[c] = len(self.state.evaluated)
                self.state.evaluated.append([c.to_dict(), float(lat), float(s)])
        self.state.evaluations += len(new)
        return scores

    def scores_of(self, cfgs: Sequence[SubConfig]) -> list[float]:
        """Scores of already-evaluated configs (cache hits: not counted against the budget)."""
        return self.scorer.score(list(cfgs))

    # ---- generations ---------------------------------------------------------------
    @property
    def generation(self) -> int:
        return self.state.generation

    def elapsed(self) -> float:
        return self._elapsed0 + time.perf_counter() - self._t0

    def start(self) -> None:
        """Open the log; on a resumed search, say where it goes on from (the algorithm has read the state)."""
        if self.state.generation >= 0 and self.rank == 0:
            print(f"resumed {self.state_path} after generation {self.state.generation} "
                  f"({len(self.state.evaluated)} scored candidates reused)", file=sys.stderr)
        self.log.start(self.state.generation + 1)

    def end_generation(self, population: Sequence[SubConfig], scores: Sequence[float],
                       best_idx: int | None = None, mean_of: Sequence[float] | None = None) -> None:
        """Log one row, save the state atomically (rank 0), then run the hook."""
        if best_idx is None:
            best_idx = min(range(len(scores)), key=lambda i: (scores[i], i))
        mean_vals = list(mean_of if mean_of is not None else scores)
        st = self.state
        st.generation += 1
        st.population = [c.to_dict() for c in population]
        st.scores = [float(s) for s in scores]
        st.set_rng(self.rng)
        st.elapsed = self.elapsed()
        st.rows.append({
            "generation": st.generation,
            "best_score": float(scores[best_idx]),
            "mean_score": float(sum(mean_vals) / max(len(mean_vals), 1)),
            "best_latency_ms": float(self.latency(population[best_idx])),
            **dict(zip(("best_predicted_ms", "best_lower_ms", "best_upper_ms"),
                       (None if v is None else float(v) for v in self.latency.interval(population[best_idx])))),
            "evaluations": st.evaluations,
            "elapsed_s": round(st.elapsed, 3),
        })
        if self.state_path is not None and self.rank == 0:
            save_state(st, self.state_path)
        self.log.record(st.rows)
        if self.on_generation is not None:
            self.on_generation(st.generation, self)

    def result(self, extra: dict[str, Any] | None = None) -> SearchResult:
        self.log.close()
        ev = [Evaluated(SubConfig.from_dict(d, "state"), lat, sc) for d, lat, sc in self.state.evaluated]
        feas = [e for e in ev if e.latency <= self.constraint]
        if not feas:
            raise NoFeasibleConfigError(f"no evaluated configuration meets {self.constraint:g} ms")
        best = min(feas, key=lambda e: (e.score, e.latency))
        front = [feas[i] for i in non_dominated([(e.latency, e.score) for e in feas])]
        return SearchResult(self.algorithm, best.cfg, best.score, best.latency, ev, front, list(self.state.rows),
                            self.state.evaluations, self.state.elapsed, self.constraint, extra or {})


def json_roundtrip(d: dict) -> dict:
    import json

    return json.loads(json.dumps(d))


# --------------------------------------------------------------------------------------
@ALGORITHMS.register("evolution")
def evolution_search(
    space: DesignSpace,
    scorer: Scorer,
    latency: Latency,
    constraint: float | None,
    settings: EvolutionSettings | None = None,
    **run_kwargs: Any,
) -> SearchResult:
    """HAT's evolutionary search; `run_kwargs` go to SearchRun (state_path, resume, log, ...)."""
    s = settings or EvolutionSettings()
    run = SearchRun("evolution", space, scorer, latency, constraint, s, **run_kwargs)
    rng = run.rng
    run.start()
    try:
        if run.generation < 0:
            run.check_feasible()
            pop = [run.feasible(lambda: space.sample(rng), "random sample") for _ in range(s.population)]
            run.end_generation(pop, run.evaluate(pop))
        while run.generation < s.iterations:
            pop = run.state.population_cfgs()
            scores = run.state.scores
            order = sorted(range(len(pop)), key=lambda i: (scores[i], i))
            parents = [pop[i] for i in order[: s.parents]]
            mutated = [run.feasible(lambda: space.mutate(rng.choice(parents), s.mutate_prob, rng), "mutation")
                       for _ in range(s.mutations)]

            def cross() -> SubConfig:
                a, b = rng.sample(parents, 2)
                return space.crossover(a, b, rng)

            crossed = [run.feasible(cross, "crossover") for _ in range(s.crossovers)]
            children = mutated + crossed
            child_scores = run.evaluate(children)
            run.end_generation(parents + children, run.scores_of(parents) + child_scores)
    finally:
        run.log.close()
    return run.result()
