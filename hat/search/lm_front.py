"""The decoder-only LM search's Pareto front as a CSV (re-loadable configs) and a PNG."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from hat.errors import ConfigError
from hat.files import atomic_open, save_figure
from hat.search.lm_nsga2 import LMSearchResult
from hat.space import LMConfig, LMSpace, lm_params

FRONT_COLUMNS = ("decoder_params", "latency_ms", "memory_bytes", "params", "summary", "config_json")


def write_lm_front_csv(path: str | Path, result: LMSearchResult, space: LMSpace) -> None:
    """One row per front member, fastest first: its objectives, all parameters and the config as JSON."""
    with atomic_open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FRONT_COLUMNS)
        for i in result.front:
            c = result.evaluated[i]
            w.writerow([c.decoder_params, f"{c.latency_ms:.6g}", f"{c.memory_bytes:.0f}", lm_params(c.cfg, space),
                        c.cfg.describe(), json.dumps(c.cfg.to_dict(), separators=(",", ":"))])


def best_member(result: LMSearchResult) -> int:
    """The front member with the most decoder parameters (LTS's pick within the constraints; ties:
    the faster)."""
    return max(result.front, key=lambda i: (result.evaluated[i].decoder_params, -result.evaluated[i].latency_ms))


def read_lm_front(path: str | Path) -> list[tuple[LMConfig, dict[str, str]]]:
    """Every row of a front CSV `write_lm_front_csv` wrote, fastest first: its config and its
    columns; errors name the file and the row (1 = the fastest)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "config_json" not in (reader.fieldnames or []):
            raise ConfigError(f"{path}: not an LM front CSV (no config_json column; `hat search --task lm` writes one)")
        rows = list(reader)
    out = []
    for row, cols in enumerate(rows, 1):
        try:
            data = json.loads(cols["config_json"])
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: row {row}: config_json is not JSON ({e})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: row {row}: config_json is not a config")
        out.append((LMConfig.from_dict(data, source=f"{path} row {row}"), cols))
    return out


def read_lm_front_row(path: str | Path, row: int) -> tuple[LMConfig, dict[str, str]]:
    """Row `row` (1 = the fastest) of a front CSV: its config and its columns."""
    rows = read_lm_front(path)
    if not 1 <= row <= len(rows):
        raise ConfigError(f"{path}: --row {row} is out of range (the front has {len(rows)} rows, 1 = the fastest)")
    return rows[row - 1]


def plot_lm_front(path: str | Path, result: LMSearchResult, title: str = "") -> None:
    """Decoder parameters against latency and against memory: every evaluated candidate in grey,
    the front in red, the constraints dashed."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    ev, fr = result.evaluated, [result.evaluated[i] for i in result.front]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), dpi=110, sharey=True)
    for ax, key, scale, unit, cap in ((axes[0], "latency_ms", 1.0, "latency (ms)", result.latency_constraint),
                                      (axes[1], "memory_bytes", 2.0**-20, "peak memory (MiB)", result.memory_constraint)):
        ax.scatter([getattr(c, key) * scale for c in ev], [c.decoder_params / 1e6 for c in ev], s=6, c="0.7",
                   label=f"evaluated ({len(ev)})")
        ax.scatter([getattr(c, key) * scale for c in fr], [c.decoder_params / 1e6 for c in fr], s=14, c="C3",
                   label=f"Pareto front ({len(fr)})")
        if cap is not None:
            ax.axvline(cap * scale, c="C0", ls="--", lw=1, label="constraint")
        ax.set_xlabel(unit)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("decoder parameters (M, higher is better)")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
