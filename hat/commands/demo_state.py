"""What a resumed demo knows: which stages are done, and the ledger of times and training runs.

A stage is done when its output exists and, for a JSON result, is readable and complete; a
damaged or stale result (e.g. a latency file without a model added since) is computed again.
The ledger holds what no other file does (the search and stage times that make up the budget
per model), so a damaged ledger is refused with one line rather than silently replaced.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from hat.errors import HatError
from hat.files import atomic_write_text, check_fields, read_json

Problem = Callable[[Path], "str | None"]  # why a stage's existing output cannot be used (None: it can)


def stage_needed(name: str, done: Path, problem: Problem | None = None) -> bool:
    """True when the stage must run: `done` is missing, or `problem(done)` says why it cannot be
    used; prints why the stage is skipped or run again."""
    why = problem(done) if problem is not None and done.exists() else None
    if done.exists() and why is None:
        print(f"[demo] {name}: done already ({done})")
        return False
    print(f"\n[demo] {name} ..." + (f" (again: {why})" if why else ""), flush=True)
    return True


def json_problem(what: str, check: Callable[[dict], "str | None"]) -> Problem:
    """A `Problem` for a JSON result: unreadable, or `check(value)` names what it lacks."""
    def problem(path: Path) -> str | None:
        try:
            why = check(read_json(path, what))
        except HatError as e:
            return str(e)
        return f"{path}: {what} {why}" if why else None
    return problem


def has_fields(value: dict, fields: dict[str, Any]) -> str | None:
    """What `value` lacks of `fields` (key -> type(s)); None when it has them all."""
    missing = [k for k in fields if k not in value]
    if missing:
        return f"has no {', '.join(missing)}"
    try:
        check_fields(value, fields, "its")
    except HatError as e:
        return str(e)
    return None


SPREAD_FIELDS = {"median": (int, float), "low": (int, float), "high": (int, float), "rounds": list}


def spreads_problem(names: Sequence[str]) -> Callable[[dict], "str | None"]:
    """`check` for the final latency file: a spread for every model of the table (they are
    measured together in interleaved rounds, so one missing model means measuring them all again)."""
    def check(value: dict) -> str | None:
        for name in names:
            spread = value.get(name)
            why = has_fields(spread, SPREAD_FIELDS) if isinstance(spread, dict) else "has no entry"
            if why:
                return f"for {name!r}: {why}"
        return None
    return check


def bleu_check(hyp: Path) -> Callable[[dict], "str | None"]:
    """`check` for a model's BLEU result: its score, its per-origin scores when it has them, and the
    hypotheses written next to it (the paired significance tests read them)."""
    def check(value: dict) -> str | None:
        score = {"bleu": (int, float)}
        if why := has_fields(value, score):
            return why
        origins = value.get("per_origin", {})
        if not isinstance(origins, dict):
            return "has a per_origin that is not a mapping"
        for origin, res in origins.items():
            why = has_fields(res, score) if isinstance(res, dict) else "is not a result"
            if why:
                return f"per_origin {origin!r} {why}"
        return None if hyp.is_file() else f"has no {hyp.name} next to it"
    return check


RUN_FIELDS = {"updates": int, "tokens": int, "seconds": (int, float), "stopped_by_budget": bool}


class Ledger:
    """Stage wall times and training records, kept on disk so a resumed demo still knows them."""

    HINT = (" (delete it to rebuild it from the checkpoints; the recorded search and stage times, part of "
            "the budget per model, then start again from 0)")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"seconds": {}, "runs": {}}
        if path.exists():
            self.data = read_json(path, "demo ledger", hint=self.HINT)
            why = self._problem(self.data)
            if why:
                raise HatError(f"{path}: damaged demo ledger: {why}{self.HINT}")

    @staticmethod
    def _problem(data: dict) -> str | None:
        why = has_fields(data, {"seconds": dict, "runs": dict})
        if why:
            return why
        bad = [k for k, v in data["seconds"].items() if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            return f"seconds of {bad[0]} is not a number"
        for key, run in data["runs"].items():
            why = has_fields(run, RUN_FIELDS) if isinstance(run, dict) else "is not a record"
            if why:
                return f"run {key} {why}"
        return None

    def add_time(self, key: str, seconds: float) -> None:
        self.data["seconds"][key] = self.data["seconds"].get(key, 0.0) + seconds
        self._save()

    def record_run(self, key: str, save_dir: Path) -> dict[str, Any]:
        """Updates, target tokens and training seconds of a finished `hat train` run."""
        if key not in self.data["runs"]:
            from hat.model.checkpoint import load_checkpoint  # noqa: PLC0415

            ck = load_checkpoint(save_dir / "checkpoint_last.pt")
            cfg = ck.get("config", {})
            self.data["runs"][key] = {
                "updates": int(ck["update"]), "tokens": int(ck.get("tokens_seen", 0)),
                "seconds": float(ck.get("elapsed_s", 0.0)),
                "stopped_by_budget": bool(cfg.get("budget_minutes")) and int(ck["update"]) < int(cfg.get("max_updates", 0)),
            }
            self._save()
        return self.data["runs"][key]

    def seconds(self, key: str) -> float:
        return float(self.data["seconds"].get(key, 0.0))

    def _save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=1))
