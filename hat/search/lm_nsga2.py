"""LiteTransformerSearch's training-free search of decoder-only LMs: NSGA-II (pymoo) over three
objectives, maximise the decoder's parameters (LTS's proxy for perplexity), minimise latency and
minimise peak memory on the device, with optional latency and memory constraints.

No candidate is trained: the proxy is counted, latency and memory come from a predictor fit on
the device's measurements (or from measuring each candidate on this machine), so the whole front
costs seconds to minutes. Genes are `LMSpace.encode`'s choice indices; operators and the state
file are those of the translation NSGA-II (`hat.search.nsga2`): SBX + polynomial mutation with
rounding, and the algorithm saved as plain data after every generation (atomic), so a killed
search resumes where it stopped, with every evaluated candidate's objectives (nothing is
re-predicted or re-measured). The initial population holds the space's smallest and largest
configs (the ends of the front) and uniform samples.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import numpy as np

from hat.errors import HatError
from hat.files import atomic_write_text, read_json
from hat.search.nsga2 import _pymoo, restore, snapshot
from hat.search.pareto import non_dominated_nd
from hat.space import LMConfig, LMSpace, lm_decoder_params

STATE_VERSION = 1
Objective = Callable[[list[LMConfig]], tuple[Sequence[float], Sequence[float]]]  # -> (ms, bytes) per config


@dataclass
class LMSearchSettings:
    """NSGA-II's budget: `population` survivors, `offspring` new candidates per generation,
    `generations` after the initial population."""

    population: int = 40
    offspring: int = 40
    generations: int = 25
    seed: int = 0

    def check(self) -> "LMSearchSettings":
        if self.population < 2 or self.offspring < 1 or self.generations < 0:
            raise HatError(f"--population {self.population} / --offspring {self.offspring} / --generations "
                           f"{self.generations}: need >= 2, >= 1 and >= 0")
        return self


class LMObjectives:
    """Latency (ms) and memory (bytes) of LMConfigs, cached, with the seconds spent obtaining them."""

    def __init__(self, latency_memory: Objective, name: str) -> None:
        self.latency_memory, self.name = latency_memory, name
        self.cache: dict[LMConfig, tuple[float, float]] = {}
        self.seconds = 0.0

    def many(self, cfgs: Sequence[LMConfig]) -> list[tuple[float, float]]:
        todo = list(dict.fromkeys(c for c in cfgs if c not in self.cache))
        if todo:
            t0 = time.perf_counter()
            lat, mem = self.latency_memory(todo)
            self.seconds += time.perf_counter() - t0
            for c, a, b in zip(todo, lat, mem):
                self.cache[c] = (float(a), float(b))
        return [self.cache[c] for c in cfgs]


@dataclass
class LMCandidate:
    cfg: LMConfig
    decoder_params: int
    latency_ms: float
    memory_bytes: float


@dataclass
class LMSearchResult:
    """Every unique evaluated candidate (first-seen order), the indices of the feasible
    non-dominated ones, and where the time went."""

    evaluated: list[LMCandidate]
    front: list[int]
    latency_constraint: float | None
    memory_constraint: float | None
    generations: int
    elapsed: float  # seconds over every run of this search (resumes included)
    objective_seconds: float  # of which spent predicting or measuring latency and memory
    extra: dict[str, Any] = field(default_factory=dict)

    def feasible(self, c: LMCandidate) -> bool:
        return (self.latency_constraint is None or c.latency_ms <= self.latency_constraint) and \
            (self.memory_constraint is None or c.memory_bytes <= self.memory_constraint)


def _front(evaluated: list[LMCandidate], ok: Callable[[LMCandidate], bool]) -> list[int]:
    feas = [i for i, c in enumerate(evaluated) if ok(c)]
    pts = [(-evaluated[i].decoder_params, evaluated[i].latency_ms, evaluated[i].memory_bytes) for i in feas]
    return sorted((feas[k] for k in non_dominated_nd(pts)), key=lambda i: evaluated[i].latency_ms)


def lm_nsga2_search(space: LMSpace, objectives: LMObjectives, settings: LMSearchSettings | None = None,
                    latency_constraint: float | None = None, memory_constraint: float | None = None,
                    state_path: str | Path | None = None, resume: bool = True, fingerprint: dict | None = None,
                    progress: bool = False) -> LMSearchResult:
    """Run (or resume) the search; `result.front` is the feasible non-dominated set of every
    evaluated candidate over (-decoder params, latency, memory)."""
    NSGA2, Evaluator, Problem, SBX, PM, RoundingRepair, StaticProblem = _pymoo()
    s = (settings or LMSearchSettings()).check()
    slots, upper = space.gene_slots(), np.array(space.gene_upper(), dtype=float)
    problem = Problem(n_var=len(slots), n_obj=3, n_ieq_constr=2, xl=np.zeros(len(slots)), xu=upper, vtype=int)
    fp = {"space": space.to_dict(), "settings": vars(s), "latency_constraint": latency_constraint,
          "memory_constraint": memory_constraint, **(fingerprint or {})}

    def algorithm(sampling: np.ndarray) -> Any:
        algo = NSGA2(pop_size=s.population, n_offsprings=s.offspring, sampling=sampling,
                     crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                     mutation=PM(prob=1.0, eta=20, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
        return algo.setup(problem, termination=("n_gen", s.generations + 1), seed=s.seed, verbose=False)

    evaluated: dict[LMConfig, LMCandidate] = {}
    gen, elapsed, spent = 0, 0.0, 0.0
    state = _load(state_path, fp) if (state_path and resume) else None
    if state is not None:
        algo = restore(state["pymoo"], algorithm, problem, SimpleNamespace(slots=slots), state_path)
        try:
            for d, lat, mem in state["evaluated"]:
                c = LMConfig.from_dict(d, source=str(state_path))
                evaluated[c] = LMCandidate(c, lm_decoder_params(c), float(lat), float(mem))
                objectives.cache[c] = (float(lat), float(mem))
            gen, elapsed, spent = int(state["generation"]), float(state["elapsed"]), float(state["objective_seconds"])
        except (KeyError, TypeError, ValueError) as e:
            raise HatError(f"{state_path}: corrupt search state ({type(e).__name__}); delete it or pass --no-resume "
                           "to start over") from None
    else:
        init = space.spread(s.population, random.Random(s.seed))
        algo = algorithm(np.array([space.encode(c) for c in init], dtype=float))
    bar = _bar(progress, s.generations + 1, gen)
    t0, seconds0 = time.perf_counter(), objectives.seconds
    lat_cap = math.inf if latency_constraint is None else latency_constraint
    mem_cap = math.inf if memory_constraint is None else memory_constraint
    try:
        while gen <= s.generations and algo.has_next():
            pop = algo.ask()
            if pop is None or len(pop) == 0:  # a small space: no new candidate left to try
                break
            cfgs = [space.decode(x) for x in pop.get("X")]
            objs = objectives.many(cfgs)
            for c, (lat, mem) in zip(cfgs, objs):
                evaluated.setdefault(c, LMCandidate(c, lm_decoder_params(c), lat, mem))
            F = np.array([[-lm_decoder_params(c), lat, mem] for c, (lat, mem) in zip(cfgs, objs)], dtype=float)
            G = np.array([[lat - lat_cap if math.isfinite(lat_cap) else -1.0,
                           mem - mem_cap if math.isfinite(mem_cap) else -1.0] for lat, mem in objs], dtype=float)
            Evaluator().eval(StaticProblem(algo.problem, F=F, G=G), pop)
            algo.tell(infills=pop)
            gen += 1
            now = elapsed + time.perf_counter() - t0
            if state_path:
                _save(state_path, fp, gen, algo, evaluated, now, spent + objectives.seconds - seconds0)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    result = LMSearchResult(list(evaluated.values()), [], latency_constraint, memory_constraint, gen,
                            elapsed + time.perf_counter() - t0, spent + objectives.seconds - seconds0)
    result.front = _front(result.evaluated, result.feasible)
    return result


def _bar(progress: bool, total: int, done: int) -> Any:
    if not progress:
        return None
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(total=total, initial=done, desc="search lm nsga2", unit="gen", dynamic_ncols=True)


def _save(path: str | Path, fp: dict, gen: int, algo: Any, evaluated: dict[LMConfig, LMCandidate], elapsed: float,
          spent: float) -> None:
    import json  # noqa: PLC0415

    data = {"version": STATE_VERSION, "task": "lm", "fingerprint": fp, "generation": gen, "pymoo": snapshot(algo),
            "evaluated": [[c.cfg.to_dict(), c.latency_ms, c.memory_bytes] for c in evaluated.values()],
            "elapsed": elapsed, "objective_seconds": spent}
    atomic_write_text(path, json.dumps(data, separators=(",", ":")))


def _load(path: str | Path, fp: dict) -> dict | None:
    """The saved state, None when there is none; a state of other settings or another task is
    refused in one line (delete it or pass --no-resume)."""
    import json  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        return None
    hint = "; delete it or pass --no-resume to start over"
    d = read_json(path, "search state", hint=hint)
    if d.get("task") != "lm" or d.get("version") != STATE_VERSION:
        raise HatError(f"{path}: not a decoder-only LM search state (version {STATE_VERSION}){hint}")
    if d.get("fingerprint") != json.loads(json.dumps(fp)):
        raise HatError(f"{path}: saved by a search with different settings{hint}")
    if not isinstance(d.get("evaluated"), list) or not isinstance(d.get("generation"), int):
        raise HatError(f"{path}: corrupt search state{hint}")
    return d
