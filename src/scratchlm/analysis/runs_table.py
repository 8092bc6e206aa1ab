"""The experiment log: every run under a directory in one table (CSE599-O's `experiment_log` problem).

A run is a directory with a config.toml. Its config is shown as the nearest shipped preset plus the keys
that differ from it (where the data lives, `data.path`, and the console switch `train.progress` are not
part of what an experiment changes, so they are left out). Steps, best validation loss and training time
come from metrics.jsonl and summary.json; status says whether it finished, diverged, or stopped midway.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scratchlm.analysis.document import Table, format_seconds
from scratchlm.analysis.study_runs import read_outcome, steps_run
from scratchlm.config import RunConfig
from scratchlm.errors import ConfigError, DataError, ScratchLMError
from scratchlm.presets import list_presets, load_toml_file, resolve_run_config
from scratchlm.train.tracking import read_metrics

IGNORED_KEYS = {"data.path", "train.progress"}
SKIP_DIRS = {"checkpoints", "plots", "tensorboard", "wandb", "images", "submission"}


@dataclass
class RunRow:
    name: str
    preset: str | None  # the nearest preset
    changes: list[str]  # section.key=value, differing from that preset
    status: str
    steps: int
    total_steps: int | None
    best_val_loss: float | None
    elapsed_s: float | None


def find_runs(root: str | Path) -> list[Path]:
    """Every run directory (one holding config.toml) under root, root included, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory; pass the folder that holds your runs (e.g. runs/).")
    found = []
    stack = [root]
    while stack:
        folder = stack.pop()
        if (folder / "config.toml").is_file():
            found.append(folder)
        stack += [p for p in folder.iterdir() if p.is_dir() and p.name not in SKIP_DIRS and not p.name.startswith(".")]
    return sorted(found)


def _flatten(tables: dict[str, Any]) -> dict[str, Any]:
    return {
        f"{section}.{key}": value
        for section, values in tables.items()
        if isinstance(values, dict)
        for key, value in values.items()
        if value is not None and f"{section}.{key}" not in IGNORED_KEYS
    }


def _preset_tables() -> dict[str, dict[str, Any]]:
    return {name: _flatten(resolve_run_config(name).to_tables()) for name in list_presets()}


def config_diff(saved: dict[str, Any], presets: dict[str, dict[str, Any]]) -> tuple[str | None, list[str]]:
    """(nearest preset, the section.key=value entries where the run differs from it)."""
    flat = _flatten(saved)
    best: tuple[str | None, list[str]] = (None, [f"{k}={_short(v)}" for k, v in sorted(flat.items())])
    for name, preset in presets.items():
        keys = sorted(set(flat) | set(preset))
        changes = [f"{k}={_short(flat.get(k))}" for k in keys if flat.get(k) != preset.get(k)]
        if len(changes) < len(best[1]):
            best = (name, changes)
    return best


def _short(value: Any) -> str:
    if value is None:
        return "unset"  # the preset sets it, the run does not (e.g. a budget replaced by another)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(_short(v) for v in value) + "]"
    return str(value)


def run_row(run_dir: Path, root: Path, presets: dict[str, dict[str, Any]]) -> RunRow:
    try:
        saved = load_toml_file(str(run_dir / "config.toml"))
        RunConfig.from_tables(saved)  # a run whose config no longer validates is still listed, but flagged
        valid = True
    except ScratchLMError:
        saved, valid = {}, False
    preset, changes = config_diff(saved, presets) if valid else (None, ["(config.toml does not validate)"])
    rows = read_metrics(run_dir / "metrics.jsonl")
    vals = [r["val_loss"] for r in rows if isinstance(r.get("val_loss"), (int, float))]
    summary = _summary(run_dir)
    try:
        outcome = read_outcome(run_dir) if valid else None
        damaged = outcome is not None and not isinstance(outcome.steps, (int, type(None)))
    except DataError:  # one run's damaged summary.json or outcome.json must not take the whole log with it
        outcome, damaged = None, True
    if damaged:
        outcome, status = None, "damaged (unreadable summary.json or outcome.json)"
    elif outcome is not None:
        status = outcome.status if not outcome.reason else f"diverged ({outcome.reason})"
    elif (run_dir / ".lock").exists():
        status = "running or killed"
    else:
        status = "incomplete" if rows else "not started"
    name = "." if run_dir == root else run_dir.relative_to(root).as_posix()
    return RunRow(
        name=name,
        preset=preset,
        changes=changes,
        status=status,
        steps=steps_run(outcome, rows),
        total_steps=(outcome.summary if outcome is not None else summary).get("total_steps"),
        best_val_loss=min(vals) if vals else None,
        elapsed_s=rows[-1].get("elapsed_s") if rows else None,
    )


def _summary(run_dir: Path) -> dict[str, Any]:
    try:
        value = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def runs_table(root: str | Path) -> list[RunRow]:
    """One RunRow per run under root."""
    root = Path(root)
    runs = find_runs(root)
    if not runs:
        raise ConfigError(f"no runs under {root} (no directory there holds a config.toml); train one first.")
    presets = _preset_tables()
    return [run_row(run, root, presets) for run in runs]


def as_table(rows: list[RunRow]) -> Table:
    def loss(value: float | None) -> str:
        return f"{value:.4f}" if value is not None and math.isfinite(value) else "-"

    return Table(
        ["run", "config (nearest preset + changes)", "status", "steps", "best val loss", "time"],
        [
            [
                f"`{r.name}`",
                f"`{r.preset or '?'}`" + (" " + " ".join(f"`{c}`" for c in r.changes) if r.changes else ""),
                r.status,
                f"{r.steps}" + (f"/{r.total_steps}" if r.total_steps else ""),
                loss(r.best_val_loss),
                format_seconds(r.elapsed_s),
            ]
            for r in rows
        ],
    )


def as_json(rows: list[RunRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
