"""Tiny trajectory data and debug-preset overrides shared by the experiment tests (runs of a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories


def tiny_trajectories(folder: Path) -> Path:
    """240 fast-mode trajectories of 20 steps: 216 train / 24 validation."""
    path = folder / "traj.pkl"
    save_trajectories(generate_trajectories(240, seq_length=20, seed=3, fast=True), path)
    return path


def debug_overrides(data: Path, steps: int = 12) -> list[str]:
    """`--set` entries for a debug-preset run of `steps` steps on `data`, evaluating twice."""
    return [
        f"data.path={json.dumps(str(data))}",
        "train.progress=false",
        f"train.max_steps={steps}",
        f"train.eval_interval={max(1, steps // 2)}",
        "train.log_interval=2",
    ]
