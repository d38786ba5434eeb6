"""The training log `SAVE_DIR/train_log.jsonl`: one JSON record per line (`{"train": {...}}` or
`{"valid": {...}}`, each with its `update`), appended by the master process as training goes."""
from __future__ import annotations

import json
from pathlib import Path

from hat.files import atomic_write_text


class TrainLog:
    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path, self.enabled = Path(path), enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def rewind(self, update: int) -> None:
        """Drop the records past `update` (the checkpoint a run resumes from): a run killed after
        logging them, e.g. between a validation and its save, would otherwise log them twice."""
        if not self.enabled or not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if next(iter(json.loads(line).values()))["update"] <= update:
                    keep.append(line + "\n")
            except (ValueError, TypeError, KeyError, StopIteration, AttributeError):
                continue  # a line cut short by the kill
        atomic_write_text(self.path, "".join(keep))


class Progress:
    """The progress bar: over updates, or over the budget's minutes when training has a wall-clock
    budget (`max_updates` is then only a bound, and a bar towards it would promise a wrong ETA)."""

    def __init__(self, max_updates: int, update: int, budget_minutes: float | None, elapsed_s: float,
                 enabled: bool) -> None:
        import sys  # noqa: PLC0415

        from tqdm import tqdm  # noqa: PLC0415

        self.budget = budget_minutes
        kw = dict(disable=not enabled, dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0)
        if budget_minutes:
            self.bar = tqdm(total=round(budget_minutes, 2), initial=round(elapsed_s / 60, 2), unit="min",
                            bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} min [{elapsed}<{remaining}{postfix}]", **kw)
        else:
            self.bar = tqdm(total=max_updates, initial=update, **kw)
        self.elapsed_s = elapsed_s

    def step(self, elapsed_s: float) -> None:
        if self.budget:
            self.bar.update(min((elapsed_s - self.elapsed_s) / 60, self.bar.total - self.bar.n))
            self.elapsed_s = elapsed_s
        else:
            self.bar.update(1)

    def postfix(self, **kw: str) -> None:
        self.bar.set_postfix(**kw)

    def close(self) -> None:
        self.bar.close()
