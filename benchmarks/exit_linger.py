"""Seconds from a training run's summary line to its process's exit (the CLI's teardown), on this machine.

`python benchmarks/exit_linger.py [--compile] [--runs N]` trains the debug preset for 2 steps on a small
synthetic trajectory file N times and prints a table of the linger per run plus one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def linger_s(argv: list[str]) -> float:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    printed = None
    for _line in proc.stdout:  # type: ignore[union-attr]
        printed = time.monotonic()  # the summary is the last stdout line
    proc.wait()
    if proc.returncode != 0 or printed is None:
        raise SystemExit(f"the training run failed (status {proc.returncode})")
    return time.monotonic() - printed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true", help="train.compile=true (CPU inductor)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from scratchlm.data.trajectories import generate_trajectories
    from scratchlm.data.trajectory_io import save_trajectories

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "traj.pkl"
        save_trajectories(generate_trajectories(60, seq_length=12, seed=3, fast=True), data)
        results = []
        for i in range(args.runs):
            argv = [
                sys.executable, "-m", "scratchlm.cli", "train", "--preset", "debug", "--out", f"{tmp}/run{i}",
                "--set", f"data.path={json.dumps(str(data))}", "--set", "train.progress=false",
                "--set", f"train.compile={str(args.compile).lower()}", "--set", "train.max_steps=2",
            ]  # fmt: skip
            results.append(linger_s(argv))
    print("| run | summary to exit (s) |\n|---|---|")
    for i, value in enumerate(results):
        print(f"| {i} | {value:.3f} |")
    print(json.dumps({"compile": args.compile, "linger_s": [round(v, 3) for v in results]}))


if __name__ == "__main__":
    main()
