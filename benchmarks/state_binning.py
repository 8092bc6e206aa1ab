"""Reconstruction error of per-dimension uniform state binning (RT-2/OpenVLA style) on validation trajectories.

Generates the course's dataset (course mode), splits it by trajectory, fits 1st/99th-percentile bounds on
the training split and reports, per state dimension, the validation RMSE after encode -> decode to bin
centres, the share of values clipped at the bounds, and the bin width. Prints a table per bin count, then
one JSON line, and writes the JSON to --out when given (the committed figures came from
`--out benchmarks/results/state_binning.json`).

    python benchmarks/state_binning.py [--num-trajectories 10000] [--bins 64 256 1024] [--out PATH]
"""

from __future__ import annotations

import argparse

import numpy as np

from machine_info import emit, require, run_main
from scratchlm.data.actions import UniformBinner
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_dataset import split_trajectories

DIM_NAMES = [f"joint{j}" for j in range(7)] + ["ee_x", "ee_y", "ee_z"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-trajectories", type=int, default=10_000)
    parser.add_argument("--seq-length", type=int, default=50)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--version", default="v2")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--bins", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--percentiles", type=float, nargs=2, default=[1.0, 99.0], metavar=("LOW", "HIGH"))
    parser.add_argument("--out", help="write the JSON results here too (default: print only)")
    args = parser.parse_args()
    require(args.num_trajectories >= 2, f"--num-trajectories must be at least 2, got {args.num_trajectories}.")
    require(min(args.bins) >= 1, f"--bins must be at least 1, got {min(args.bins)}.")
    data = generate_trajectories(args.num_trajectories, args.seq_length, args.seed, args.version)
    train, val = split_trajectories(data, args.val_fraction, seed=0)
    results = []
    for num_bins in args.bins:
        binner = UniformBinner.fit(train.states_NTS, num_bins, tuple(args.percentiles))
        report = binner.reconstruction_error(val.states_NTS)
        width_D = (binner.high_D - binner.low_D) / num_bins
        print(f"\n{num_bins} bins: {'dim':7s} {'rmse':>10s} {'bin width':>10s} {'clipped':>8s}")
        for d, name in enumerate(DIM_NAMES[: binner.num_dims]):
            rmse, clipped = report["rmse_D"][d], report["clipped_fraction_D"][d]
            print(f"{'':10s} {name:7s} {rmse:10.5f} {width_D[d]:10.5f} {clipped:8.2%}")
        results.append(
            {
                "num_bins": num_bins,
                "percentiles": args.percentiles,
                "rmse": dict(zip(DIM_NAMES, np.round(report["rmse_D"], 6).tolist(), strict=True)),
                "mean_rmse": round(float(report["rmse_D"].mean()), 6),
                "clipped_fraction": round(float(report["clipped_fraction_D"].mean()), 5),
            }
        )
    result = {
        "benchmark": "state_binning",
        "device": "cpu",
        "data": {
            "num_trajectories": args.num_trajectories,
            "seq_length": args.seq_length,
            "seed": args.seed,
            "version": args.version,
            "val_trajectories": val.num_trajectories,
        },
        "results": results,
    }
    emit(result, args.out)


if __name__ == "__main__":
    run_main(main)
