"""The experiment log: every run under a directory in one table (CSE599-O's `experiment_log` problem).

A run is a directory with a config.toml. Its config is shown as the nearest shipped preset plus the keys
that differ from it (where the data lives, `data.path`, and the console switch `train.progress` are not
part of what an experiment changes, so they are left out). Steps, best validation loss and training time
come from metrics.jsonl and summary.json; status says whether it finished, diverged, or stopped midway:

- finished / diverged (why): what the run's summary.json or outcome.json records, unless the experiment
  that trained it (its parent's results.json: a sweep, an ablation, a scaling study) judged it diverged
  after it ran all its steps (`sweep.judge_end`: it ended above where it started).
- incomplete: stopped by `--stop-after` (its summary.json counts fewer steps than its budget).
- interrupted: stopped by Ctrl-C or SIGTERM (no summary.json of its last steps; `train --resume` continues it).
- running / killed / running or killed: its trainer's .lock is still there, and its process on this host
  still runs or has died (a .lock written on another host cannot be checked).
A run that did not end shows the steps it reached out of the total its budget comes to, as the trainer
recorded it in plan.json when the run started or last resumed (an epoch budget's steps depend on the data,
and summary.json is only written at the end); runs from before plan.json have it from their config.toml.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scratchlm.analysis.document import Table, format_seconds
from scratchlm.analysis.plots import is_number, read_run_metrics
from scratchlm.analysis.study_runs import read_outcome, read_results, steps_run
from scratchlm.config import RunConfig
from scratchlm.errors import ConfigError, DataError, ScratchLMError
from scratchlm.presets import list_presets, load_toml_file, resolve_run_config
from scratchlm.train.trainer import PLAN_FILE

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
    if isinstance(value, bool):  # as TOML (and so --set) spells it: `model.fast=True` would not paste back
        return "true" if value else "false"
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
    try:
        rows, unreadable = read_run_metrics(run_dir / "metrics.jsonl"), False
    except DataError:  # one run's damaged metrics must not take the whole log with it
        rows, unreadable = [], True
    vals = [r["val_loss"] for r in rows if is_number(r.get("val_loss")) and math.isfinite(r["val_loss"])]
    summary = _summary(run_dir)
    try:
        outcome = read_outcome(run_dir) if valid else None
        damaged = outcome is not None and not isinstance(outcome.steps, (int, type(None)))
    except DataError:  # one run's damaged summary.json or outcome.json must not take the whole log with it
        outcome, damaged = None, True
    steps = steps_run(None if damaged else outcome, rows)
    summary_steps = summary.get("steps")
    if outcome is None and isinstance(summary_steps, int) and summary_steps > steps:
        steps = summary_steps  # a --stop-after before the first log row leaves no row, only its summary
    if damaged:
        outcome, status = None, "damaged (unreadable summary.json or outcome.json)"
    elif unreadable:
        status = "damaged (unreadable metrics.jsonl)"
    elif outcome is not None:
        verdict = _experiment_verdict(run_dir) if not outcome.diverged else None
        reason = verdict if verdict is not None else outcome.reason
        if not reason and not outcome.diverged:
            reason = _nonfinite_loss(rows)  # as `plot` marks it: a run trained on past a NaN (on_nonfinite="skip")
        status = outcome.status if not reason else f"diverged ({reason})"
    elif (run_dir / ".lock").exists():
        status = _lock_status(run_dir)
    elif summary and not (isinstance(summary_steps, int) and rows and rows[-1]["step"] > summary_steps):
        status = "incomplete"  # its summary is that of its last steps: --stop-after ended it
    elif rows and (run_dir / "checkpoints").is_dir() and _no_checkpoint(run_dir / "checkpoints"):
        status = "interrupted before its first checkpoint (--resume starts it over)"  # its rows are no resume point
    else:
        status = "interrupted" if rows else "not started"
    name = "." if run_dir == root else run_dir.relative_to(root).as_posix()
    total = (outcome.summary if outcome is not None else summary).get("total_steps")
    if outcome is None:
        total = _count(_json_object(run_dir / PLAN_FILE).get("total_steps")) or _planned_steps(saved, rows) or total
    # A run that ended says in summary.json what it took and its best loss (a torn metrics.jsonl may have lost
    # rows); one still going or cut short has only its metrics for its time.
    logged = rows[-1].get("elapsed_s") if rows else None
    recorded = summary.get("elapsed_s") if is_number(summary.get("elapsed_s")) else None
    elapsed = recorded if (outcome is not None and recorded is not None) or not is_number(logged) else logged
    recorded_best = summary.get("best_val_loss")
    if not vals and outcome is not None and is_number(recorded_best) and math.isfinite(recorded_best):
        vals = [recorded_best]
    return RunRow(
        name=name,
        preset=preset,
        changes=changes,
        status=status,
        steps=steps,
        total_steps=_count(total),
        best_val_loss=min(vals) if vals else None,
        elapsed_s=elapsed,
    )


def _no_checkpoint(checkpoint_dir: Path) -> bool:
    """Whether a run's checkpoints/ holds nothing a resume continues from (no last.pt and nothing to stand
    in for it: then the resume refuses instead, and the plain "interrupted" status applies)."""
    from scratchlm.train.run import fallback_checkpoint

    return not (checkpoint_dir / "last.pt").is_file() and fallback_checkpoint(checkpoint_dir) is None


def _count(value: Any) -> int | None:
    """`value` if it is a JSON integer (not true/false), else None: the files read here may be damaged."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _lock_status(run_dir: Path) -> str:
    """The status of a run whose trainer's .lock is still there: its process on this host still runs, or it
    was killed (SIGKILL, a crash of the machine) before it could clean up; elsewhere it cannot be told."""
    from scratchlm.train.lock import holder_running

    running = holder_running(run_dir)
    if running is None:
        return "running or killed"
    return "running" if running else "killed (scratchlm train --resume continues it)"


def _planned_steps(saved: dict[str, Any], rows: list[dict[str, Any]]) -> int | None:
    """The steps a run without plan.json (trained before the trainer wrote one) is to run, from its config.toml:
    its max_steps, or its max_tokens over the tokens of one step (as its rows count them, every process
    included). None for an epoch budget, whose steps depend on the data."""
    train = saved.get("train") if isinstance(saved.get("train"), dict) else {}
    if isinstance(train.get("max_steps"), int):
        return int(train["max_steps"])
    per_step = [r["tokens"] // r["step"] for r in rows[-1:] if isinstance(r.get("tokens"), int) and r["step"] > 0]
    if isinstance(train.get("max_tokens"), int) and per_step and per_step[0] > 0:
        return max(1, math.ceil(train["max_tokens"] / per_step[0]))
    return None


def divergence(run_dir: str | Path, rows: list[dict[str, Any]] | None = None) -> str | None:
    """Why a run counts as diverged, or None when it does not: its summary.json or outcome.json says so, the
    experiment that trained it judged it so (`_experiment_verdict`), or it logged a non-finite loss (the
    metrics log writes NaN/Inf as null; `train.on_nonfinite = "skip"` trains on past one). A run whose files
    cannot be read does not count: `runs` lists it as damaged.

    rows: the run's metrics rows, for a caller that has read them already (`plot`); default: read them."""
    run_dir = Path(run_dir)
    try:
        outcome = read_outcome(run_dir)
    except DataError:
        outcome = None
    if outcome is not None and outcome.diverged:
        return str(outcome.reason or "diverged")
    if outcome is not None and (verdict := _experiment_verdict(run_dir)) is not None:
        return verdict
    if rows is None:
        try:
            rows = read_run_metrics(run_dir / "metrics.jsonl")
        except DataError:
            return None
    return _nonfinite_loss(rows)


def _nonfinite_loss(rows: list[dict[str, Any]]) -> str | None:
    """Where the first logged training or validation loss that is not a finite number is, or None."""
    for row in rows:
        for key in ("train_loss", "val_loss"):
            if key in row and not (is_number(row[key]) and math.isfinite(row[key])):
                return f"non-finite {key.replace('_', ' ')} at step {row['step']}"
    return None


def _experiment_verdict(run_dir: Path) -> str | None:
    """Why the experiment owning run_dir (a sweep, ablation or scaling study writing results.json in its parent)
    judged this finished run diverged, or None when it did not (or there is no such experiment)."""
    try:
        results = read_results(run_dir.parent)
    except OSError:
        return None
    if results is None:
        return None
    for key in ("runs", "points"):  # sweeps and ablations list runs, scaling studies points
        entries = results.get(key)
        for entry in entries if isinstance(entries, list) else []:
            if (
                isinstance(entry, dict)
                and entry.get("status") == "diverged"
                and isinstance(entry.get("run_dir"), str)
                and Path(entry["run_dir"]).name == run_dir.name
            ):
                return str(entry.get("reason") or "judged so by the experiment that ran it")
    return None


def _summary(run_dir: Path) -> dict[str, Any]:
    return _json_object(run_dir / "summary.json")


def _json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; {} when it is missing or damaged (its run is still listed)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
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
