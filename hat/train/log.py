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
