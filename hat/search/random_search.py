"""Random search: the baseline evolution must beat, at the same evaluation budget.

Generation 0 scores `population` uniform feasible samples; every later generation scores
`mutations + crossovers` more, so after `iterations` generations it has scored exactly as
many candidates as `evolution_search` with the same settings.
"""
from __future__ import annotations

from typing import Any

from hat.latency.estimate import Latency
from hat.search.evolution import ALGORITHMS, EvolutionSettings, SearchResult, SearchRun
from hat.search.scorers import Scorer
from hat.space import DesignSpace


@ALGORITHMS.register("random")
def random_search(
    space: DesignSpace,
    scorer: Scorer,
    latency: Latency,
    constraint: float | None,
    settings: EvolutionSettings | None = None,
    **run_kwargs: Any,
) -> SearchResult:
    """Best of `settings.budget()` uniform samples that meet the constraint."""
    s = settings or EvolutionSettings()
    run = SearchRun("random", space, scorer, latency, constraint, s, **run_kwargs)
    rng = run.rng
    run.start()
    try:
        if run.generation < 0:
            run.check_feasible()
        while run.generation < s.iterations:
            n = s.population if run.generation < 0 else s.mutations + s.crossovers
            batch = [run.feasible(lambda: space.sample(rng), "random sample") for _ in range(n)]
            scores = run.evaluate(batch)
            # the kept "population" is the best seen so far plus this batch, for the log
            prev = run.state.population_cfgs()[:1]
            prev_s = run.state.scores[:1]
            pop, sc = prev + batch, prev_s + scores
            best = min(range(len(sc)), key=lambda i: (sc[i], i))
            run.end_generation([pop[best]] + batch, [sc[best]] + scores, best_idx=0, mean_of=scores)
    finally:
        run.log.close()
    return run.result()
