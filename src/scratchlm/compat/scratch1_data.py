"""The Scratch-1 course's `generate_data.py` API, as glue over `scratchlm.data.trajectories`.

Drop this module in place of the course's `generate_data.py`: same functions, same signatures, same
numbers. Like the course, it draws from NumPy's legacy global generator (`np.random.seed(seed)` in
`generate_dataset`), so code that seeds NumPy itself and calls `generate_trajectory` gets the course's
trajectories too. `python -m scratchlm.compat.scratch1_data --num_trajectories 10000 --seq_length 50
--output data/trajectories.pkl` mirrors the course's command line.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from scratchlm.data.trajectories import (
    DEFAULT_NOISE_STD,
    check_generation_args,
    check_generation_memory,
    draw_course_step_noise,
    forward_kinematics,
    generate_course_trajectories,
    generate_trajectories,
    simulate_v2,
)
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SCRIPT = "scratchlm.compat.scratch1_data"


def forward_kinematics_7dof(joint_angles: np.ndarray) -> np.ndarray:
    """End-effector position (3,) of the course's 7-link arm for 7 joint angles."""
    joints_J = np.asarray(joint_angles, dtype=np.float64)
    if joints_J.shape != (7,):
        raise DataError(f"joint_angles must hold 7 angles, got shape {joints_J.shape}.")
    return forward_kinematics(joints_J)


def generate_trajectory(
    start_joints: np.ndarray, target_pos: np.ndarray, seq_length: int = 50, noise_std: float = DEFAULT_NOISE_STD
) -> tuple[np.ndarray, np.ndarray]:
    """One v2 trajectory from NumPy's global generator: states (T, 10) float64 and actions (T,) int64."""
    check_generation_args(1, seq_length, "v2")
    start_1J = _finite_vector(start_joints, 7, "start_joints").reshape(1, 7)
    target_13 = _finite_vector(target_pos, 3, "target_pos").reshape(1, 3)
    ints_T, normals_TJ = draw_course_step_noise(np.random, seq_length, "v2")
    states_1TS, actions_1T = simulate_v2(start_1J, target_13, ints_T[None], normals_TJ[None], noise_std)
    return states_1TS[0], actions_1T[0]


def _finite_vector(value: object, size: int, name: str) -> np.ndarray:
    # A NaN start would not fail: it runs to the end and yields NaN states with arbitrary action tokens.
    try:
        vector = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must hold {size} finite numbers, got {value!r}.") from None
    if vector.size != size or not np.isfinite(vector).all():
        raise DataError(f"{name} must hold {size} finite numbers, got shape {vector.shape}: {vector.tolist()!r}.")
    return vector


def generate_dataset(num_trajectories: int = 10000, seq_length: int = 50, seed: int = 42) -> dict[str, torch.Tensor]:
    """The course's dataset: {'states': float32 (N, T, 10), 'actions': int64 (N, T)} tensors."""
    check_generation_args(num_trajectories, seq_length, "v2", seed)
    np.random.seed(seed)
    data = generate_course_trajectories(np.random, num_trajectories, seq_length, "v2")
    return {"states": torch.from_numpy(data.states_NTS), "actions": torch.from_numpy(data.actions_NT)}


def create_dataloaders(
    dataset: dict[str, torch.Tensor], batch_size: int = 32, train_split: float = 0.9
) -> tuple[DataLoader, DataLoader]:
    """(train_loader, val_loader) over (states, actions) pairs: a torch.randperm split, train shuffled."""
    states = dataset["states"] if "states" in dataset else dataset.get("trajectories")
    actions = dataset["actions"] if "actions" in dataset else dataset.get("tokenized")
    if states is None or actions is None:
        raise DataError(f"dataset needs 'states' and 'actions' (or 'trajectories'/'tokenized'), got {sorted(dataset)}.")
    if not 0.0 < train_split < 1.0:
        raise ConfigError(f"train_split must be strictly between 0 and 1, got {train_split}.")
    num = len(states)
    num_train = int(num * train_split)
    if not 0 < num_train < num:
        raise DataError(f"{num} trajectories cannot be split {train_split:.2f}/{1 - train_split:.2f}; generate more.")
    order = torch.randperm(num)
    train_idx, val_idx = order[:num_train], order[num_train:]
    train_loader = DataLoader(TensorDataset(states[train_idx], actions[train_idx]), batch_size=batch_size, shuffle=True)
    val_loader = DataLoader(TensorDataset(states[val_idx], actions[val_idx]), batch_size=batch_size, shuffle=False)
    return train_loader, val_loader


def main(argv: Sequence[str] | None = None) -> int:
    """Write the course's dataset; a bad argument or unwritable output is one line and an error status.
    `argv=None` (the script itself) is the whole process and exits with the status."""
    from scratchlm.cli import exit_process, run_guarded

    parser = argparse.ArgumentParser(prog=SCRIPT, description="Generate the Scratch-1 synthetic trajectory dataset.")
    parser.add_argument("--num_trajectories", type=int, default=10000)
    parser.add_argument("--seq_length", type=int, default=50)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", default="data/trajectories.pkl")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    status = run_guarded(lambda: _generate(args), args.debug, prog=SCRIPT, exiting=argv is None)
    if argv is None:
        exit_process(status)
    return status


def _generate(args: argparse.Namespace) -> int:
    check_generation_args(args.num_trajectories, args.seq_length, "v2", args.seed)
    check_generation_memory(args.num_trajectories, args.seq_length, save=True)
    data = generate_trajectories(args.num_trajectories, args.seq_length, args.seed, "v2")
    save_trajectories(data, args.output, {"mode": "course", "seed": args.seed})
    logger.info("wrote %d trajectories of %d steps to %s", args.num_trajectories, args.seq_length, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
