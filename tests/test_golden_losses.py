"""A golden loss curve: the debug preset's first 12 training losses on fixed data, from a fixed seed.

Changes that must not move the numerics (refactors, the fast path, loader rewrites) keep this curve; a
change that moves it on purpose regenerates it with `SCRATCHLM_UPDATE_GOLDEN=1 pytest tests/test_golden_losses.py`
and says why in its commit. Tolerance 1e-5: float32 summation order may differ across CPU kernels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.presets import resolve_run_config
from scratchlm.train.tracking import read_metrics
from scratchlm.train.trainer import train

GOLDEN = Path(__file__).parent / "assets" / "golden_debug_losses.json"


def test_debug_preset_reproduces_the_golden_loss_curve(tmp_path: Path) -> None:
    data = tmp_path / "traj.pkl"
    save_trajectories(generate_trajectories(200, seq_length=20, seed=11, fast=True), data)
    config = resolve_run_config(
        "debug",
        None,
        [f"data.path={json.dumps(str(data))}", "train.progress=false", "train.max_steps=12", "train.log_interval=1",
         "train.eval_interval=12"],
    )  # fmt: skip
    train(config, tmp_path / "run")
    losses = [row["train_loss"] for row in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    if os.environ.get("SCRATCHLM_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps({"train_loss": losses}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())["train_loss"]
    assert losses == pytest.approx(golden, rel=1e-5, abs=1e-5)
