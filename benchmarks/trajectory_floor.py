"""How low can a next-action loss go on the course's v2 trajectories? ln 5 is a bound; this estimates a tighter one.

A v2 action token is octant * 32 + distance bin of the arm's state, plus uniform noise in {-2..2}: the noise
alone costs ln 5 = 1.609 nats per token. But the clean token at step t is a function of the joints at t,
which the joint noise of step t-1 -> t moves, and no token shows that noise: so even an oracle that knows
the previous state and the target pays H(a_t | state_{t-1}, target) >= ln 5. Given state_{t-1} and the
target, a_t is independent of everything earlier (the dynamics are Markov), so a model that sees only past
actions pays at least that much too: H(a_t | a_<t) >= H(a_t | a_<t, state_{t-1}, target) = the oracle's.

This draws trajectories with the course's distributions (start pose in [-pi/2, pi/2]^7, target in
[-1.5, 1.5]^3, the course's joint noise), and for every step t >= 1 (the positions a model predicts)
resamples the step's joint noise `--draws` times from the true state_{t-1}: the clean tokens' empirical
distribution, convolved exactly with the uniform noise and clipped to [0, 255] as the generator clips,
gives the oracle's per-step entropy. A plug-in entropy from K draws reads low by about (support - 1) / 2K,
so the rows for growing K show it converging from below.

    python benchmarks/trajectory_floor.py [--trajectories 200] [--draws 100 400 1600] [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from machine_info import describe_machine, emit, require, run_main
from scratchlm.data.trajectories import simulate_v2

VOCAB = 256
NOISE = 2  # the action noise is uniform in {-NOISE..NOISE}
CHUNK_ROWS = 400_000  # states x draws simulated at once (memory: ~100 bytes each)


def clean_tokens_after_one_step(joints_M7: np.ndarray, target_M3: np.ndarray, draws: int, rng) -> np.ndarray:
    """(M, draws) clean action tokens one step after each joint state, over fresh joint noise."""
    out = np.empty((len(joints_M7), draws), dtype=np.int64)
    per_chunk = max(1, CHUNK_ROWS // draws)
    for lo in range(0, len(joints_M7), per_chunk):
        hi = min(lo + per_chunk, len(joints_M7))
        start = np.repeat(joints_M7[lo:hi], draws, axis=0)
        target = np.repeat(target_M3[lo:hi], draws, axis=0)
        zeros = np.zeros((len(start), 2), dtype=np.int64)  # no action noise: the clean token
        # Two steps: the action at index 1 comes from the joints after one noisy update.
        _, actions = simulate_v2(start, target, zeros, rng.standard_normal((len(start), 2, 7)), exact_norms=False)
        out[lo:hi] = actions[:, 1].reshape(hi - lo, draws)
    return out


def noisy_entropy(clean_MK: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (entropy of clean + uniform noise clipped to [0, 255], entropy of the clean token), nats."""
    rows, draws = clean_MK.shape
    flat = (np.arange(rows)[:, None] * VOCAB + clean_MK).ravel()
    counts_MV = np.bincount(flat, minlength=rows * VOCAB).reshape(rows, VOCAB).astype(np.float64)
    padded = np.zeros((rows, VOCAB + 2 * NOISE))
    for shift in range(-NOISE, NOISE + 1):
        padded[:, NOISE + shift : NOISE + shift + VOCAB] += counts_MV
    noisy_MV = padded[:, NOISE : NOISE + VOCAB].copy()
    noisy_MV[:, 0] += padded[:, :NOISE].sum(axis=1)  # the generator clips below 0 to 0 ...
    noisy_MV[:, -1] += padded[:, -NOISE:].sum(axis=1)  # ... and above 255 to 255
    return _entropy(noisy_MV / (draws * (2 * NOISE + 1))), _entropy(counts_MV / draws)


def _entropy(p_MV: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p_MV > 0, p_MV * np.log(p_MV), 0.0).sum(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=200, help="trajectories drawn (default 200)")
    parser.add_argument("--seq-length", type=int, default=50, help="steps per trajectory (default 50)")
    parser.add_argument("--draws", type=int, nargs="+", default=[100, 400, 1600], help="noise draws per state")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    parser.add_argument("--out", help="write the JSON results here too (default: print only)")
    args = parser.parse_args()
    require(args.trajectories >= 1, f"--trajectories must be at least 1, got {args.trajectories}.")
    require(args.seq_length >= 2, f"--seq-length must be at least 2, got {args.seq_length}.")
    require(min(args.draws) >= 2, f"--draws must be at least 2, got {min(args.draws)}.")
    rng = np.random.default_rng(args.seed)
    num, steps = args.trajectories, args.seq_length
    start_N7 = rng.uniform(-np.pi / 2, np.pi / 2, (num, 7))
    target_N3 = rng.uniform(-1.5, 1.5, (num, 3))
    states_NTS, _ = simulate_v2(
        start_N7,
        target_N3,
        np.zeros((num, steps), dtype=np.int64),
        rng.standard_normal((num, steps, 7)),
        exact_norms=False,
    )
    joints_M7 = states_NTS[:, :-1, :7].reshape(-1, 7)  # state_{t-1} for t = 1 .. T-1
    target_M3 = np.repeat(target_N3, steps - 1, axis=0)
    rows = []
    header = ("draws", "oracle nats/token", "ln 5", "above ln 5", "clean H", "steps w/ a choice", "s")
    print("{:>6s} {:>18s} {:>7s} {:>11s} {:>8s} {:>18s} {:>6s}".format(*header))
    for draws in args.draws:
        t_start = time.perf_counter()
        noisy_M, clean_M = noisy_entropy(clean_tokens_after_one_step(joints_M7, target_M3, draws, rng))
        seconds = time.perf_counter() - t_start
        row = {
            "draws": draws,
            "oracle_loss": round(float(noisy_M.mean()), 4),
            "above_ln5": round(float(noisy_M.mean()) - math.log(5), 4),
            "clean_token_entropy": round(float(clean_M.mean()), 4),
            "fraction_of_steps_with_uncertain_token": round(float((clean_M > 0).mean()), 4),
            "seconds": round(seconds, 2),
        }
        rows.append(row)
        print(
            f"{draws:6d} {row['oracle_loss']:18.4f} {math.log(5):7.4f} {row['above_ln5']:11.4f} "
            f"{row['clean_token_entropy']:8.4f} {row['fraction_of_steps_with_uncertain_token']:18.1%} {seconds:6.1f}"
        )
    result = {
        "benchmark": "trajectory_floor",
        "what": "H(a_t | state_{t-1}, target) for t >= 1 on v2 data: a lower bound on any next-action loss",
        "machine": describe_machine(),
        "trajectories": num,
        "seq_length": steps,
        "seed": args.seed,
        "results": rows,
    }
    emit(result, args.out)


if __name__ == "__main__":
    run_main(main)
