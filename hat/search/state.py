"""Resumable per-generation search state and the per-generation log (CSV, TensorBoard, tqdm).

The state file is JSON (inspectable), rewritten atomically after every generation
(`hat.files.atomic_write_text`), so a search killed at any moment resumes from its last
complete generation. It holds the RNG state, the population
and every evaluated candidate, which makes the resumed search reach exactly the result of
an uninterrupted one (scores are deterministic and re-seeded into the scorer's cache).
"""
from __future__ import annotations

import csv
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hat.errors import HatError, first_line
from hat.files import atomic_open, atomic_write_text, read_json
from hat.space import SubConfig

STATE_VERSION = 2  # 2: log rows carry the best candidate's point prediction and interval
# best_latency_ms is what the constraint is held against (the interval's bound when the predictor has one)
LOG_COLUMNS = ("generation", "best_score", "mean_score", "best_latency_ms", "best_predicted_ms", "best_lower_ms",
               "best_upper_ms", "evaluations", "elapsed_s")


@dataclass
class SearchState:
    """Everything needed to continue a search after generation `generation`."""

    algorithm: str
    fingerprint: dict[str, Any]
    generation: int = -1  # last completed generation (-1: none yet)
    population: list[dict] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    rng_state: list | None = None
    evaluated: list[list] = field(default_factory=list)  # [cfg dict, latency ms, score], first-seen order
    evaluations: int = 0  # candidates scored (duplicates included: the budget unit)
    rows: list[dict] = field(default_factory=list)
    elapsed: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = STATE_VERSION

    # ---- helpers ---------------------------------------------------------------------
    def population_cfgs(self) -> list[SubConfig]:
        return [SubConfig.from_dict(d, "state") for d in self.population]

    def set_rng(self, rng: random.Random) -> None:
        v, internal, gauss = rng.getstate()
        self.rng_state = [v, list(internal), gauss]

    def restore_rng(self, rng: random.Random) -> None:
        if self.rng_state is not None:
            v, internal, gauss = self.rng_state
            rng.setstate((v, tuple(internal), gauss))


def save_state(state: SearchState, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(asdict(state), separators=(",", ":")))


def load_state(path: str | Path, fingerprint: dict[str, Any] | None = None) -> SearchState:
    """Read a state file; refuse (one-line HatError) a different version or different settings."""
    path = Path(path)
    hint = "; delete it or pass --no-resume to start over"
    d = read_json(path, "search state", hint=hint)
    if isinstance(d, dict) and d.get("version", STATE_VERSION) != STATE_VERSION:
        raise HatError(f"{path}: search state version {d.get('version')}, expected {STATE_VERSION}{hint}")
    try:
        state = SearchState(**d)
        _check(state)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, HatError) as e:
        raise HatError(f"{path}: corrupt search state ({type(e).__name__}: {first_line(e, 120)}){hint}") from None
    if fingerprint is not None and state.fingerprint != json.loads(json.dumps(fingerprint)):
        diff = sorted(k for k in set(fingerprint) | set(state.fingerprint)
                      if json.loads(json.dumps(fingerprint.get(k))) != state.fingerprint.get(k))
        raise HatError(f"{path}: saved by a search with different settings ({', '.join(diff)}); "
                       "delete it or pass --no-resume to start over")
    return state


def _check(st: SearchState) -> None:
    """Raise (TypeError, ValueError, ...) unless every field is what a resumed search reads."""
    if not isinstance(st.fingerprint, dict) or not isinstance(st.extra, dict):
        raise TypeError("fingerprint and extra must be mappings")
    for name in ("generation", "evaluations", "version"):
        if not isinstance(getattr(st, name), int):
            raise TypeError(f"{name} must be an integer")
    st.population_cfgs()
    if len(st.scores) != len(st.population) or not all(isinstance(v, (int, float)) for v in st.scores):
        raise ValueError("scores do not match the population")
    numbers = [st.elapsed]
    for cfg, lat, score in st.evaluated:
        SubConfig.from_dict(cfg, "state")
        numbers += [lat, score]
    numbers += [r[c] for r in st.rows for c in LOG_COLUMNS if r[c] is not None]  # None: no interval
    for v in numbers:
        float(v)
    st.restore_rng(random.Random())


# --------------------------------------------------------------------------------------
class GenerationLog:
    """Per-generation CSV (rewritten whole from the state, so a resume never duplicates rows),
    TensorBoard scalars (purged past the resume point) and a tqdm bar. Only rank 0 writes."""

    def __init__(self, csv_path: str | Path | None, tb_dir: str | Path | None, total: int,
                 progress: bool = True, enabled: bool = True, desc: str = "search") -> None:
        self.csv_path = Path(csv_path) if csv_path else None
        self.tb_dir = tb_dir
        self.total, self.progress, self.enabled, self.desc = total, progress, enabled, desc
        self._tb = None
        self._bar = None

    def start(self, done: int) -> None:
        if not self.enabled:
            return
        if self.tb_dir:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.tb_dir), purge_step=done if done > 0 else None)
            except Exception:  # tensorboard missing: the CSV still has everything
                self._tb = None
        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=done, desc=self.desc, unit="gen", dynamic_ncols=True)

    def record(self, rows: list[dict]) -> None:
        if not self.enabled:
            return
        row = rows[-1]
        if self.csv_path:
            text_rows = [["" if r[c] is None else r[c] for c in LOG_COLUMNS] for r in rows]
            with atomic_open(self.csv_path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(LOG_COLUMNS)
                w.writerows(text_rows)
        if self._tb is not None:
            g = row["generation"]
            for k in ("best_score", "mean_score", "best_latency_ms", "evaluations"):
                self._tb.add_scalar(f"search/{k}", row[k], g)
            self._tb.flush()
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(best=f"{row['best_score']:.4g}", lat=f"{row['best_latency_ms']:.4g}ms",
                                  evals=row["evaluations"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
