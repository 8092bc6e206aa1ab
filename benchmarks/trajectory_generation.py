"""Trajectory generation speed: the course's call pattern, our course-exact mode, and the fast mode.

- compat-loop: one `scratch1_data.generate_trajectory` call per trajectory, the way the course's
  generate_dataset loops over its own generate_trajectory (same numbers as course mode; the per-call
  overhead of the vectorized simulator on a single row is what this row shows);
- course: `generate_trajectories(fast=False)`, bit-identical to the course, draws in order then vectorized;
- fast: `generate_trajectories(fast=True)`, bulk np.random.Generator draws (not the course's numbers).

Each row is the median of --repeats runs. Prints a table, then one JSON line, and writes the JSON to
--out when given (the committed figures: `--out benchmarks/results/trajectory_generation-cpu-2core.json`).

    python benchmarks/trajectory_generation.py [--repeats 3] [--seq-length 50] [--out PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from machine_info import describe_machine, emit, require, run_main
from scratchlm.compat.scratch1_data import generate_trajectory
from scratchlm.data.trajectories import generate_trajectories


def compat_loop(num: int, seq_length: int, seed: int) -> None:
    np.random.seed(seed)
    for _ in range(num):
        start = np.random.uniform(-np.pi / 2, np.pi / 2, size=7)
        target = np.random.uniform(-1.5, 1.5, size=3)
        generate_trajectory(start, target, seq_length)


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    durations = []
    for _ in range(repeats):
        t_start = time.perf_counter()
        run()
        durations.append(time.perf_counter() - t_start)
    return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per row, median (default 3)")
    parser.add_argument("--seq-length", type=int, default=50, help="steps per trajectory (default 50)")
    parser.add_argument("--out", help="write the JSON results here too (default: print only)")
    args = parser.parse_args()
    require(args.repeats >= 1, f"--repeats must be at least 1, got {args.repeats}.")
    require(args.seq_length >= 2, f"--seq-length must be at least 2, got {args.seq_length}.")
    steps = args.seq_length
    cases = [
        ("compat-loop", "v2", 1_000, lambda n: compat_loop(n, steps, 42)),
        ("course", "v2", 10_000, lambda n: generate_trajectories(n, steps, 42, "v2")),
        ("course", "v1", 10_000, lambda n: generate_trajectories(n, steps, 42, "v1")),
        ("fast", "v2", 100_000, lambda n: generate_trajectories(n, steps, 42, "v2", fast=True)),
        ("fast", "v1", 100_000, lambda n: generate_trajectories(n, steps, 42, "v1", fast=True)),
    ]
    rows = []
    print(f"{'mode':12s} {'version':7s} {'trajectories':>12s} {'seconds':>9s} {'traj/s':>10s}")
    for mode, version, num, run in cases:
        seconds = median_seconds(lambda run=run, num=num: run(num), args.repeats)
        rows.append(
            {
                "mode": mode,
                "version": version,
                "num_trajectories": num,
                "seq_length": steps,
                "seconds": round(seconds, 4),
                "trajectories_per_s": round(num / seconds, 1),
            }
        )
        print(f"{mode:12s} {version:7s} {num:12d} {seconds:9.3f} {num / seconds:10.0f}")
    result = {
        "benchmark": "trajectory_generation",
        "device": "cpu",
        "machine": {**describe_machine(), "numpy": np.__version__},
        "repeats": args.repeats,
        "results": rows,
    }
    emit(result, args.out)


if __name__ == "__main__":
    run_main(main)
