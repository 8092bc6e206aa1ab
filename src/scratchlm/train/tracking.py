"""Where metrics go: `metrics.jsonl` in the run directory (always), and W&B / TensorBoard when asked for.

metrics.jsonl holds one JSON object per line, appended and flushed as it is written. A process killed
mid-write can leave a torn last line; `read_metrics` drops it, and `truncate_metrics_after` drops rows
newer than the checkpoint a run resumes from, so a resumed run continues without gaps or duplicates.
Everything the trainer writes as JSON is strict JSON (`dumps_strict`): a NaN or infinite value is null.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from scratchlm.config import TrackConfig
from scratchlm.errors import WriteError
from scratchlm.fileio import atomic_write, describe_os_error

log = logging.getLogger(__name__)


def strict_json(value: Any) -> Any:
    """`value` with every NaN/Inf float replaced by None: JSON has no such numbers, and jq and strict parsers
    refuse Python's `NaN` / `Infinity`."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def dumps_strict(value: Any, **kwargs: Any) -> str:
    """json.dumps of `strict_json(value)`; allow_nan=False makes any non-finite value that slips through fail."""
    return json.dumps(strict_json(value), allow_nan=False, **kwargs)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete rows of a metrics file: JSON objects with an integer step. A torn trailing line is ignored,
    and so is a damaged line in the middle or one that is no such row (written by hand or by another tool):
    the rows after it are still the run's, and a resume that rewrites the file must not drop them."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # the writer died mid-line
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool):
                rows.append(row)
    return rows


def truncate_metrics_after(path: str | os.PathLike, step: int) -> None:
    """Keep only complete rows with row['step'] <= step (atomically rewritten)."""
    if not os.path.exists(path):
        return
    kept = [row for row in read_metrics(path) if row.get("step", 0) <= step]
    with atomic_write(path, "w", encoding="utf-8") as fh:
        for row in kept:
            fh.write(dumps_strict(row) + "\n")


class MetricsLogger:
    """Appends rows to metrics.jsonl and mirrors scalars to the optional trackers.

    Each row is written and flushed as one line; a write the operating system refuses raises WriteError.
    """

    def __init__(self, run_dir: Path, track: TrackConfig, run_name: str, config_tables: dict[str, Any]) -> None:
        self.path = run_dir / "metrics.jsonl"
        try:
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise WriteError(describe_os_error(exc, self.path), exc.errno, str(self.path)) from exc
        self._wandb = _start_wandb(track, run_name, run_dir, config_tables) if track.wandb else None
        self._tensorboard = _start_tensorboard(run_dir) if track.tensorboard else None

    def log(self, row: dict[str, Any]) -> None:
        try:
            self._fh.write(dumps_strict(row) + "\n")
            self._fh.flush()
        except OSError as exc:
            raise WriteError(describe_os_error(exc, self.path), exc.errno, str(self.path)) from exc
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        if self._wandb is not None:
            self._wandb.log(scalars, step=row["step"])
        if self._tensorboard is not None:
            for key, value in scalars.items():
                self._tensorboard.add_scalar(key, value, row["step"])

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError:  # flushing a row that already failed to write; that error was raised from log()
            log.debug("closing %s failed", self.path, exc_info=True)
        if self._wandb is not None:
            self._wandb.finish()
        if self._tensorboard is not None:
            self._tensorboard.close()


def _start_wandb(track: TrackConfig, run_name: str, run_dir: Path, config_tables: dict[str, Any]) -> Any:
    try:
        import wandb
    except ImportError:
        log.warning("track.wandb is set but wandb is not installed (pip install wandb); skipping it")
        return None
    os.environ.setdefault("WANDB_MODE", "offline")  # never needs a network unless the user says so
    return wandb.init(project=track.project, name=run_name, dir=str(run_dir), config=config_tables)


def _start_tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("track.tensorboard is set but tensorboard is not installed (pip install tensorboard); skipping")
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
