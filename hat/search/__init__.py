"""Hardware-aware architecture search: HAT's evolution, random and NSGA-II baselines, scorers
(inherited-weight validation loss, decoder-parameter proxy), Pareto utilities and
resumable per-generation state. `hat search` (hat.commands.search) drives it.

Algorithms register in ALGORITHMS (`hat.search.evolution`), scorers in SCORERS
(`hat.search.scorers`); importing this package registers the shipped ones.
"""
from hat.search.evolution import (
    ALGORITHMS,
    EvolutionSettings,
    Evaluated,
    NoFeasibleConfigError,
    SearchResult,
    SearchRun,
    evolution_search,
    lowest_latency,
)
from hat.search.nsga2 import nsga2_search
from hat.search.pareto import dominates, non_dominated, plot_front, write_front_csv
from hat.search.random_search import random_search
from hat.search.scorers import (
    SCORERS,
    FunctionScorer,
    LossScorer,
    LossSettings,
    ParamsScorer,
    Scorer,
    decoder_params,
    kendall_tau,
)
from hat.search.state import GenerationLog, SearchState, load_state, save_state

__all__ = [
    "ALGORITHMS", "SCORERS", "EvolutionSettings", "Evaluated", "FunctionScorer", "GenerationLog", "LossScorer",
    "LossSettings", "NoFeasibleConfigError", "ParamsScorer", "Scorer", "SearchResult", "SearchRun", "SearchState",
    "decoder_params", "dominates", "evolution_search", "kendall_tau", "load_state", "lowest_latency",
    "non_dominated", "nsga2_search", "plot_front", "random_search", "save_state", "write_front_csv",
]
