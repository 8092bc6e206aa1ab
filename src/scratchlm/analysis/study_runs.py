"""One training run inside an experiment (audit, ablation, sweep, scaling): train it, or reuse what is there.

Experiments are resumable: a run directory that already holds a finished run with the same config is
read back instead of trained again, a run cut short (killed, or stopped by `--stop-after`) is resumed,
and a run that diverged stays diverged. A directory holding a run with another config is refused, so an
edited study never mixes old and new results silently.

Divergence is recorded, not raised: a NaN/Inf (`NonFiniteLossError`) leaves the trainer's `outcome.json`
next to the run, and a monitor's stop (an exploding loss) is the summary's "stopped" reason.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratchlm.config import RunConfig, with_defaults
from scratchlm.errors import ConfigError, DataError, NonFiniteLossError
from scratchlm.presets import load_toml_file
from scratchlm.train.trainer import OUTCOME_FILE, Monitor, train

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """What an experiment needs to know about one of its runs."""

    run_dir: Path
    status: str  # "finished" or "diverged"
    reason: str | None  # why a diverged run stopped
    summary: dict[str, Any]  # summary.json (for a run that raised NaN/Inf: what outcome.json recorded)
    reused: bool  # read back from an earlier invocation, not trained now

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    @property
    def steps(self) -> int | None:
        """Steps run: the summary's count, or the step a NaN/Inf stopped at (which no metrics row may show)."""
        return self.summary.get("steps", self.summary.get("step"))

    @property
    def final_val_loss(self) -> float:
        value = self.summary.get("final_val_loss", math.nan)  # summary.json writes a non-finite loss as null
        return math.nan if value is None else float(value)

    @property
    def best_val_loss(self) -> float:
        value = self.summary.get("best_val_loss", math.nan)
        return math.nan if value is None else float(value)


# How an interrupted experiment run is continued: its finished runs are reused, this one resumed.
EXPERIMENT_AGAIN = "run the same experiment command again (it reuses finished runs and resumes this one)"


def steps_run(outcome: RunOutcome | None, metrics_rows: list[dict[str, Any]]) -> int:
    """A run's steps for a table: what its outcome records, else its last logged step (0 before any)."""
    if outcome is not None and outcome.steps is not None:
        return int(outcome.steps)
    return int(metrics_rows[-1]["step"]) if metrics_rows else 0


def check_reusable(config: RunConfig, run_dir: str | Path) -> None:
    """Refuse a run directory that holds a run of another config (experiments call this for every run before
    training any, so an edited experiment fails at once, not after hours of training its first runs)."""
    run_dir = Path(run_dir)
    saved_config = run_dir / "config.toml"
    if saved_config.is_file():
        saved = load_toml_file(str(saved_config))
        if _without_none(with_defaults(saved)) != _without_none(config.to_tables()):
            raise ConfigError(
                f"{run_dir} holds a run with a different config; delete it or write the experiment to another --out."
            )
        _check_same_data(config, run_dir)


def _check_same_data(config: RunConfig, run_dir: Path) -> None:
    """Refuse a run trained on other data than data.path holds now (regenerated, or prepared again): reused,
    it would sit in one table with runs trained and validated on the new data."""
    import torch

    from scratchlm.infer.runs import check_trained_on
    from scratchlm.train.datasets import build_training_data
    from scratchlm.train.distributed import DistInfo

    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return
    try:
        current = build_training_data(config, torch.device("cpu"), DistInfo()).fingerprint
    except DataError:
        return  # no data to compare with: reading back finished runs needs none, training says what is missing
    check_trained_on(
        current, config, last, harm="reused, it would share a table with runs on the new data",
        fix=f"delete {run_dir} or write the experiment to another --out",
    )  # fmt: skip


def run_or_reuse(config: RunConfig, run_dir: str | Path, *, monitor: Monitor | None = None) -> RunOutcome:
    """Train `config` in `run_dir` unless a finished or diverged run of the same config is already there."""
    run_dir = Path(run_dir)
    saved_config = run_dir / "config.toml"
    check_reusable(config, run_dir)
    if saved_config.is_file():
        done = read_outcome(run_dir)
        if done is not None:
            log.info("reusing %s (%s)", run_dir, done.status)
            return done
    resume = (run_dir / "checkpoints" / "last.pt").is_file() or saved_config.is_file()
    try:
        # Continued by the experiment's own command (which resumes this run), not by a bare `train --resume`.
        summary = train(config, run_dir, resume=resume, monitor=monitor, continue_with=EXPERIMENT_AGAIN)
    except NonFiniteLossError as exc:
        outcome = read_outcome(run_dir)  # the trainer's outcome.json, or what the error says if it is missing
        if outcome is None or not outcome.diverged:
            reason = f"non-finite loss or gradients at step {exc.step}"
            outcome = RunOutcome(run_dir, "diverged", reason, {"step": exc.step}, reused=False)
        log.warning("%s diverged: %s", run_dir, outcome.reason)
        return dataclasses.replace(outcome, reused=False)
    return _from_summary(run_dir, summary, reused=False)


def recipe_phrase(results: dict[str, Any]) -> str:
    """How a study's results name the recipe its runs share: "preset `x` with `--config F` with `--set` `k=v`",
    or "the defaults"."""
    recipe = [f"preset `{results['preset']}`"] if results.get("preset") else []
    recipe += [f"`--config {results['config_file']}`"] if results.get("config_file") else []
    recipe += ["`--set` " + ", ".join(f"`{item}`" for item in results["set"])] if results.get("set") else []
    return " with ".join(recipe) or "the defaults"


# What each experiment writes to results.json under "experiment", and how it is named in messages.
EXPERIMENT_NAMES = {"ablation": "an ablation", "lr-sweep": "a learning-rate sweep", "scaling": "a scaling study"}


def claim_out_dir(out_dir: str | Path, experiment: str, run_names: list[str]) -> None:
    """Refuse to write an experiment's results over those of a different one in the same --out.

    An experiment's results.json/results.md are rewritten from its runs on every invocation, so an --out that
    holds another kind of experiment, or the same kind with runs this invocation leaves out (a sweep's rates,
    a study's variants or seeds, a scaling study's sizes), would lose that table. Extending an experiment (more
    seeds, rates or sizes) is fine: the new table includes every old run."""
    path = Path(out_dir) / "results.json"
    old = read_results(out_dir)
    if old is None:
        return
    old_kind = old.get("experiment") or _infer_experiment(old)
    fix = f"write this one to another --out, or delete {path} to replace it"
    if old_kind is not None and old_kind != experiment:
        raise ConfigError(
            f"{out_dir} already holds the results of {EXPERIMENT_NAMES.get(old_kind, old_kind)}, not "
            f"{EXPERIMENT_NAMES[experiment]}; {fix}."
        )
    entries = old.get("runs") if experiment != "scaling" else old.get("points")
    old_names = {Path(str(e["run_dir"])).name for e in entries or [] if isinstance(e, dict) and e.get("run_dir")}
    dropped = sorted(old_names - set(run_names))
    if dropped:
        shown = ", ".join(dropped[:4]) + (f" and {len(dropped) - 4} more" if len(dropped) > 4 else "")
        raise ConfigError(
            f"{out_dir} holds {EXPERIMENT_NAMES[experiment]} whose results include runs this one leaves out "
            f"({shown}); include them again, or {fix}."
        )


def read_results(out_dir: str | Path) -> dict[str, Any] | None:
    """The results.json an earlier invocation wrote in out_dir; None if there is none or it is damaged (a damaged
    table is no result to keep: this invocation rewrites it from the runs)."""
    path = Path(out_dir) / "results.json"
    if not path.is_file():
        return None
    try:
        return _read_json(path)
    except DataError:
        return None


def _infer_experiment(results: dict[str, Any]) -> str | None:
    """The kind of a results.json written before it was recorded, from the keys only that experiment writes."""
    if "study" in results and "variants" in results:
        return "ablation"
    if "explode_factor" in results:
        return "lr-sweep"
    if "fit" in results and "points" in results:
        return "scaling"
    return None


def read_outcome(run_dir: str | Path) -> RunOutcome | None:
    """The outcome of a run that ended (finished, stopped by a monitor, or NaN/Inf); None if it has not ended."""
    run_dir = Path(run_dir)
    outcome_path, summary_path = run_dir / OUTCOME_FILE, run_dir / "summary.json"
    if outcome_path.is_file():
        record = _read_json(outcome_path)
        return RunOutcome(run_dir, "diverged", record.get("reason"), record, reused=True)
    if not summary_path.is_file():
        return None
    summary = _read_json(summary_path)
    if summary.get("stopped") or summary.get("steps") == summary.get("total_steps"):
        return _from_summary(run_dir, summary, reused=True)
    return None  # cut short by --stop-after or a kill: resumable


def _from_summary(run_dir: Path, summary: dict[str, Any], *, reused: bool) -> RunOutcome:
    stopped = summary.get("stopped")
    return RunOutcome(run_dir, "diverged" if stopped else "finished", stopped, summary, reused)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{path} is damaged ({exc}); delete its run directory and run the experiment again.") from None
    if not isinstance(value, dict):
        raise DataError(f"{path} is not a JSON object; delete its run directory and run the experiment again.")
    return value


def _without_none(tables: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The tables as config.toml stores them (None means the default and is left out of the file)."""
    return {section: {k: v for k, v in values.items() if v is not None} for section, values in tables.items()}
