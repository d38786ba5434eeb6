"""`hat search --select halving`: the final choice by what the pipeline delivers, not by
inherited loss alone.

The evolution ranks candidates by their inherited validation loss. That favours the largest
feasible subnets, and after the pipeline's wall-clock fine-tuning those have trained fewer
updates and end worse: in the demo a looser constraint delivered a worse model
(benchmarks/RESULTS.md 4b measures how each cheap signal ranks the final models). Successive
halving puts the finalists through short versions of that fine-tuning instead: `candidates`
feasible subnets spread over the latency range (the best-scored of each latency stratum, from the
fastest feasible to the slowest: after fine-tuning, small fast subnets are often the best, and
inherited loss ranks them last) plus any `--include` (another search's pick, e.g. a tighter constraint's:
a looser constraint can then always deliver what a tighter one did), each fine-tuned from
inherited weights for `minutes` of wall clock; the better half by validation loss goes on to
twice the time, and so on until one is left.

With `--select-keep DIR` the fine-tunes are the deliverable, not only a signal: every rung keeps its
weights, and the chosen subnet's fine-tuned checkpoint (its last rung's) is copied to DIR. One rung
at the pipeline's full fine-tuning budget then chooses by the final model's own validation loss
(Kendall tau 0.80 with its BLEU in RESULTS 4b, where the short rungs reach 0.36), and what it
chooses needs no second fine-tune.

Every rung's result is a small JSON under the selection directory, written when the rung is
done, so a killed selection resumes without retraining a finished candidate, and searches that
share the directory (several constraints on one SuperTransformer) share the rungs of the
candidates they have in common. Training runs `hat train` with the SuperTransformer's own recipe
plus `--select-train` overrides.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from hat.commands.settings import Option, add_option
from hat.errors import HatError
from hat.files import atomic_write_text, file_digest, files_digest, read_json
from hat.space import SubConfig, describe, save_subconfig

SELECTIONS = ("score", "halving")
SELECT_OPTIONS = {
    "select": Option(str, "score"), "select_candidates": Option(int, 4), "select_minutes": Option(float, 0.5),
    "select_rungs": Option(int, 0), "select_train": Option(str), "select_valid_sentences": Option(int, 0),
    "select_dir": Option(str), "select_keep": Option(str),
}
# a fine-tune restarts a short cycle on an annealed model: a short warm-up, twice the recipe's
# peak rate (benchmarks/RESULTS.md 2c, "fine-tuning at equal wall-clock"); --select-train overrides
DEFAULT_TRAIN = ("warmup_updates=20",)
# the recipe's keys a rung sets itself (a user's --select-train may not)
OWN_KEYS = ("data", "save_dir", "init_from", "budget_minutes", "sampling.policy", "sampling.subnet")


@dataclass
class SelectSettings:
    candidates: int = 4
    minutes: float = 0.5
    train: list[str] = field(default_factory=list)
    valid_sentences: int = 0  # 0: the whole validation split
    rungs: int = 0  # at most this many rungs, the best of the last one wins (0: until one is left)

    def check(self) -> None:
        if self.candidates < 2:
            raise HatError(f"--select-candidates {self.candidates}: need at least 2 to choose between")
        if not 0 < self.minutes <= 600:
            raise HatError(f"--select-minutes {self.minutes:g}: must be in (0, 600]")
        if self.rungs < 0:
            raise HatError(f"--select-rungs {self.rungs}: must be >= 0 (0: halve until one is left)")
        if self.valid_sentences < 0:
            raise HatError(f"--select-valid-sentences {self.valid_sentences}: must be >= 0 (0: all)")
        for item in self.train:
            key = item.split("=", 1)[0]
            if "=" not in item:
                raise HatError(f"--select-train {item!r}: expected key=value (a `hat train` override)")
            if key in OWN_KEYS:
                raise HatError(f"--select-train {item!r}: the selection sets {key} itself")


def add_select_arguments(g: Any, options: dict[str, Option]) -> None:
    """`hat search`'s "final choice" options."""
    add_option(g, options, "select", "score: the best score (HAT's); halving: successive halving over the "
               "finalists by short fine-tunes from inherited weights, the pipeline's own last step shortened "
               "(needs --checkpoint and --data)", choices=SELECTIONS)
    g.add_argument("--include", action="append", metavar="SUBNET.yml", help="another search's pick to choose from "
                   "too (repeatable; e.g. a tighter constraint's, so a looser one never delivers less)")
    add_option(g, options, "select_candidates", "halving: finalists spread over the latency range")
    add_option(g, options, "select_minutes", "halving: wall-clock minutes of the first rung's fine-tunes "
               "(doubling each rung)")
    add_option(g, options, "select_rungs", "halving: at most this many rungs, the last one's best wins (0: "
               "halve until one is left; 1: the best of one short fine-tune each)")
    add_option(g, options, "select_train", "halving: `hat train` overrides on the SuperTransformer's recipe, "
               "e.g. 'lr=2e-3 max_tokens=2048' (default: twice its lr, warmup_updates=20)")
    add_option(g, options, "select_valid_sentences", "halving: validation sentences of each rung (0: all)")
    add_option(g, options, "select_dir", "halving: where rung results are cached (default OUT_STEM.select; "
               "searches sharing it share their common candidates' rungs)")
    add_option(g, options, "select_keep", "halving: keep the rungs' weights and write the chosen subnet's fine-tuned "
               "checkpoint (its last rung's) to this directory, ready for `hat export`/`hat evaluate` (with "
               "--select-rungs 1 and the full fine-tuning budget, the selection is the fine-tune)")


def check_select_args(args: Any) -> None:
    """The final-choice options, checked before any work (one-line errors)."""
    if args.select not in SELECTIONS:
        raise HatError(f"--select {args.select}: expected one of {', '.join(SELECTIONS)}")
    if args.select == "halving":
        select_settings(args)
        if not args.checkpoint or not args.data:
            raise HatError("--select halving fine-tunes from the SuperTransformer: it needs --checkpoint and --data")
        if args.select_keep and Path(args.select_keep).is_file():
            raise HatError(f"--select-keep {args.select_keep}: is a file; give the directory to write the "
                           "fine-tuned checkpoint to")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise HatError("--select halving runs in one process (its fine-tunes are `hat train` runs); search "
                           "without torchrun or with --select score")
    elif args.select_keep:
        raise HatError("--select-keep keeps the fine-tunes of --select halving; add --select halving")
    for inc in args.include or []:
        if not Path(inc).is_file():
            raise HatError(f"--include {inc}: no such subnet file")


def finalists(evaluated: Sequence[Any], constraint: float, k: int, include: Sequence[SubConfig] = (),
              top: float = 1.0) -> list[SubConfig]:
    """`k` feasible candidates spread over latency, then `include`. The best-scored `top` share of
    the feasible ones (at least `k`; all by default) is cut into `k` equal latency strata and each
    stratum gives its best-scored; empty strata are filled by the next best-scored overall."""
    feas = sorted((e for e in evaluated if e.latency <= constraint), key=lambda e: (e.score, e.latency))
    pool = feas[: max(k, math.ceil(len(feas) * top))]
    chosen: list[SubConfig] = []
    if pool:
        lo, hi = min(e.latency for e in pool), max(e.latency for e in pool)
        width = (hi - lo) / k or 1.0
        for j in range(k):
            inside = [e for e in pool if min(int((e.latency - lo) / width), k - 1) == j]
            if inside:
                chosen.append(inside[0].cfg)
        chosen += [e.cfg for e in pool if e.cfg not in chosen][: k - len(chosen)]
    return chosen + [c for c in dict.fromkeys(include) if c not in chosen]


def successive_halving(cands: Sequence[SubConfig], signal: Callable[[SubConfig, int], float],
                       log: Callable[[str], None] = print, max_rungs: int = 0) -> tuple[list[SubConfig], list[dict]]:
    """(the candidates ranked, the winner first, then each rung's losers by their loss, last rung
    first; one row per candidate and rung). Rung r measures `signal(cfg, r)` (lower is better) for
    every candidate still in; the better half (rounded up) goes on, or, at rung `max_rungs` - 1
    (0: no limit), only the best. Ties keep the input order."""
    alive, rung, rows, out = list(dict.fromkeys(cands)), 0, [], []
    while len(alive) > 1:
        scores, mine = {}, {}
        for i, c in enumerate(alive):
            scores[c] = float(signal(c, rung))
            mine[c] = {"rung": rung, "subnet": describe(c), "loss": scores[c]}
            log(f"  rung {rung}: {i + 1}/{len(alive)} loss {scores[c]:.4f}  {describe(c)}")
        ranked = sorted(alive, key=lambda c: (scores[c], alive.index(c)))
        keep = 1 if max_rungs and rung + 1 >= max_rungs else math.ceil(len(ranked) / 2)
        out = ranked[keep:] + out
        for c in alive:
            mine[c]["kept"] = c in ranked[:keep]
        rows += mine.values()
        alive = ranked[:keep]
        rung += 1
    return alive + out, rows


class FineTuneSignal:
    """The validation loss after fine-tuning a subnet from inherited weights for `minutes x 2^rung`
    minutes of wall clock: the pipeline's last step, shortened. Cached on disk by everything it
    depends on (the subnet, the budget, the recipe, the checkpoint's and the data's contents).
    With `keep`, each rung's fine-tuned checkpoint stays next to its result (`weights`)."""

    def __init__(self, checkpoint: str | Path, data: str | Path, directory: str | Path, settings: SelectSettings,
                 extra: Sequence[str] = (), log: Callable[[str], None] = print, keep: bool = False) -> None:
        from hat.model.checkpoint import load_checkpoint  # noqa: PLC0415

        self.checkpoint, self.data, self.dir = Path(checkpoint), Path(data), Path(directory)
        self.settings, self.log, self.keep = settings, log, keep
        cfg = dict(load_checkpoint(self.checkpoint).get("config") or {})
        if not cfg:
            raise HatError(f"{checkpoint}: no training config inside (not a `hat train` checkpoint)")
        for key in ("save_dir", "init_from", "data", "budget_minutes", "max_updates", "stop_time_minutes"):
            cfg.pop(key, None)
        cfg["sampling"] = {**(cfg.get("sampling") or {}), "policy": "fixed", "subnet": None, "teacher": None,
                           "distill": False}
        cfg.update(tensorboard=False, progress=False, keep_interval_checkpoints=0, validate_interval=10**9,
                   save_interval=10**9, save_interval_minutes=1)
        lr = [f"lr={2 * float(cfg['lr']):g}"] if "lr" in cfg else []
        if settings.valid_sentences:
            cfg["max_valid_sentences"] = settings.valid_sentences
        self.recipe = cfg
        self.overrides = [*lr, *DEFAULT_TRAIN, *extra, *settings.train]
        self.tag = {"checkpoint": file_digest(self.checkpoint),
                    "data": files_digest(sorted(self.data.glob("*"))),
                    "recipe": cfg, "overrides": self.overrides}

    def minutes(self, rung: int) -> float:
        return self.settings.minutes * 2 ** rung

    def path(self, cfg: SubConfig, rung: int) -> Path:
        key = json.dumps({**self.tag, "subnet": cfg.to_dict(), "minutes": self.minutes(rung)}, sort_keys=True)
        return self.dir / f"r{rung}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def weights(self, cfg: SubConfig, rung: int) -> Path:
        """The fine-tuned checkpoint of `cfg` at `rung` (kept only with `keep`)."""
        return self.path(cfg, rung) / "run" / "checkpoint_last.pt"

    def __call__(self, cfg: SubConfig, rung: int) -> float:
        d = self.path(cfg, rung)
        done = d / "result.json"
        if done.is_file() and (not self.keep or self.weights(cfg, rung).is_file()):
            r = read_json(done, "selection result", hint="; delete it to retrain that candidate")
            if not isinstance(r.get("loss"), (int, float)):
                raise HatError(f"{done}: not a selection result (no loss); delete it to retrain that candidate")
            return float(r["loss"])
        from hat.cli import main  # noqa: PLC0415  (cli imports every command)
        from hat.model.checkpoint import load_checkpoint  # noqa: PLC0415

        d.mkdir(parents=True, exist_ok=True)
        recipe, sub = d / "recipe.yml", d / "subnet.yml"
        import yaml  # noqa: PLC0415

        atomic_write_text(recipe, yaml.safe_dump(self.recipe, sort_keys=True))
        save_subconfig(cfg, sub)
        run = d / "run"
        argv = ["train", "--config", str(recipe), f"data={self.data}", f"save_dir={run}", "sampling.policy=fixed",
                f"sampling.subnet={sub}", f"init_from={self.checkpoint}", f"budget_minutes={self.minutes(rung):g}",
                "max_updates=1000000000", *self.overrides]
        self.log(f"  $ hat {' '.join(argv)}")
        if main(argv):
            raise HatError(f"selection: `hat train` of {describe(cfg)} failed ({run})")
        ck = load_checkpoint(run / "checkpoint_last.pt")
        loss = float(ck["valid"][-1]["subnet"]["loss"])
        atomic_write_text(done, json.dumps({"subnet": describe(cfg), "rung": rung, "minutes": self.minutes(rung),
                                            "loss": loss, "updates": int(ck["update"])}, indent=1))
        if self.keep:  # the fine-tuned model may be delivered: keep its last checkpoint, nothing else
            for f in run.iterdir():
                if f.name != "checkpoint_last.pt":
                    shutil.rmtree(f) if f.is_dir() else f.unlink()
        else:
            shutil.rmtree(run, ignore_errors=True)  # the result is kept; a rung's weights are not delivered
        return loss


def include_candidates(paths: Sequence[str], result: Any, scorer: Any, latency: Any, space: Any,
                       log: Callable[[str], None] = print) -> tuple[Any, dict[SubConfig, str]]:
    """`--include SUBNET.yml ...`: other searches' picks join the evaluated candidates (scored like
    them), so the final choice can fall on one; those over the constraint are left out, with a line.
    Returns (the result, its best chosen again by score among all, {included config: its path})."""
    import dataclasses  # noqa: PLC0415

    from hat.search import Evaluated  # noqa: PLC0415
    from hat.space import load_subconfig  # noqa: PLC0415

    included: dict[SubConfig, str] = {}
    for p in paths:
        cfg = space.validate(load_subconfig(p), str(p))
        if latency(cfg) > result.constraint:
            log(f"--include {p}: predicted {latency(cfg):.4g} ms, over the constraint {result.constraint:g} ms; left out")
            continue
        included.setdefault(cfg, str(p))
    if not included:
        return result, included
    known = {e.cfg for e in result.evaluated}
    ev = list(result.evaluated) + [Evaluated(c, latency(c), scorer.score([c])[0]) for c in included if c not in known]
    best = min((e for e in ev if e.latency <= result.constraint), key=lambda e: (e.score, e.latency))
    return dataclasses.replace(result, evaluated=ev, best=best.cfg, best_score=best.score,
                               best_latency=best.latency), included


def select_final(args: Any, result: Any, scorer: Any, latency: Any, included: dict[SubConfig, str],
                 directory: Path, csv_path: Path, log: Callable[[str], None] = print
                 ) -> tuple[Any, list[SubConfig], dict, "Selection"]:
    """`hat search --select halving` on a search result: (the result with the winner as its best,
    the finalists ranked for `--verify`, what the selection did, for the subnet's metadata, the
    selection itself, to keep the final choice's weights after `--verify`)."""
    import dataclasses  # noqa: PLC0415

    settings = select_settings(args)
    cands = finalists(result.evaluated, result.constraint, settings.candidates, list(included))
    extra_train = ([f"num_threads={args.threads}"] if args.threads else []) + \
        ([f"compute={args.compute}"] if args.compute not in (None, "auto") else [])
    signal = FineTuneSignal(args.checkpoint, args.data, directory, settings, extra_train, log,
                            keep=bool(getattr(args, "select_keep", None)))
    log(f"--select halving: {len(cands)} finalists ({len(included)} included), rungs of {settings.minutes:g} min "
        f"x 2^rung fine-tuning from inherited weights; results cached in {directory}")
    ranked, rows = successive_halving(cands, signal, log, settings.rungs)
    write_rows(csv_path, rows)
    win = ranked[0]
    result = dataclasses.replace(result, best=win, best_score=scorer.score([win])[0], best_latency=latency(win))
    mine = [r for r in rows if r["subnet"] == describe(win)]
    limit = f", at most {settings.rungs} rung(s)" if settings.rungs else ""
    meta = {"rule": f"successive halving over {len(cands)} finalists, rungs of {settings.minutes:g} min x 2^rung "
                    f"fine-tuning from inherited weights{limit}, validation loss", "finalists": len(cands),
            "loss": mine[-1]["loss"] if mine else None, "rungs": max((r["rung"] for r in rows), default=-1) + 1,
            "included": sorted(included.values()), "from_include": included.get(win), "table": str(csv_path)}
    how = "the only finalist" if meta["loss"] is None else f"loss {meta['loss']:.4f} after rung {meta['rungs'] - 1}"
    log(f"--select halving: chose {describe(win)} ({how}"
        + (f"; the pick of --include {included[win]}" if win in included else "") + f"); table {csv_path}")
    return result, ranked, meta, Selection(signal, rows)


@dataclass
class Selection:
    """A finished selection: its signal (with the rungs' weights when kept) and its rows."""

    signal: FineTuneSignal
    rows: list[dict]

    def keep(self, cfg: SubConfig, dest: str | Path) -> dict:
        """`--select-keep`: `cfg`'s fine-tuned checkpoint, from the last rung it reached, copied into
        `dest` (atomically) with its subnet file. A subnet no rung trained (the only finalist, or one
        `--verify` fell back to by score) is fine-tuned for one rung here: what is delivered is
        always a fine-tuned model."""
        rung = max((r["rung"] for r in self.rows if r["subnet"] == describe(cfg)), default=0)
        loss = self.signal(cfg, rung)  # from the cache unless no rung has trained it
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        tmp = dest / "checkpoint_last.pt.tmp"
        shutil.copyfile(self.signal.weights(cfg, rung), tmp)
        os.replace(tmp, dest / "checkpoint_last.pt")
        save_subconfig(cfg, dest / "subnet.yml")
        self.signal.log(f"--select-keep: {describe(cfg)} fine-tuned {self.signal.minutes(rung):g} min (loss "
                        f"{loss:.4f}) -> {dest / 'checkpoint_last.pt'}")
        return {"dir": str(dest), "rung": rung, "minutes": self.signal.minutes(rung), "loss": loss}


def select_settings(args: Any) -> SelectSettings:
    """The selection's settings from `hat search`'s arguments, checked (one-line errors)."""
    s = SelectSettings(args.select_candidates, args.select_minutes, (args.select_train or "").split(),
                       args.select_valid_sentences, args.select_rungs)
    s.check()
    return s


def write_rows(path: str | Path, rows: list[dict]) -> None:
    """The selection's table (one line per candidate and rung) as CSV."""
    lines = ["rung,loss,kept,subnet"] + [f"{r['rung']},{r['loss']:.6f},{int(bool(r.get('kept')))},\"{r['subnet']}\""
                                        for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


__all__ = ["DEFAULT_TRAIN", "FineTuneSignal", "SELECTIONS", "SELECT_OPTIONS", "Selection", "SelectSettings", "add_select_arguments",
           "check_select_args", "finalists", "include_candidates", "select_final", "select_settings",
           "successive_halving", "write_rows"]
