"""`scratchlm data trajectories`: generate the Scratch-1 robot-trajectory dataset (course format).

Default: the course's exact dataset for the seed (v2 actions). --fast draws the same dynamics in bulk from
NumPy's Generator instead: 100k trajectories in seconds, but not the course's numbers.
"""

from __future__ import annotations

import argparse
import logging
import time

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-trajectories", type=int, default=10000, help="trajectories to generate (default 10000)")
    parser.add_argument("--seq-length", type=int, default=50, help="steps per trajectory, >= 2 (default 50)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42, the course's)")
    parser.add_argument(
        "--version",
        default="v2",
        help="action encoding: v2 (octant x distance + noise, the course's current) or v1 (mean joint delta)",
    )
    parser.add_argument(
        "--fast", action="store_true", help="vectorized NumPy Generator draws: much faster, not bit-compatible"
    )
    parser.add_argument("--out", default="data/trajectories.pkl", help="output pickle (default data/trajectories.pkl)")
    parser.add_argument("--overwrite", action="store_true", help="replace an --out file that holds other trajectories")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from scratchlm.data.trajectories import check_generation_args, check_generation_memory, generate_trajectories
    from scratchlm.data.trajectory_io import save_trajectories

    check_generation_args(args.num_trajectories, args.seq_length, args.version, args.seed, args.fast)
    mode = "fast" if args.fast else "course"
    recipe = {
        "version": args.version,
        "num_trajectories": args.num_trajectories,
        "seq_length": args.seq_length,
        "mode": mode,
        "seed": args.seed,
    }
    if not args.overwrite:
        _refuse_other_data(args.out, recipe)
    check_generation_memory(args.num_trajectories, args.seq_length, args.fast, save=True)
    t_start = time.perf_counter()
    with tqdm(total=args.num_trajectories, unit="traj", disable=args.no_progress, desc=f"{args.version} {mode}") as bar:
        data = generate_trajectories(
            args.num_trajectories, args.seq_length, args.seed, args.version, fast=args.fast, progress=bar.update
        )
    duration_s = time.perf_counter() - t_start
    digest = save_trajectories(data, args.out, {"mode": mode, "seed": args.seed})
    logger.info(
        "wrote %d trajectories x %d steps (%s, %s mode, seed %d) to %s in %.2f s (%.0f traj/s); sha256 %s",
        data.num_trajectories,
        data.seq_length,
        args.version,
        mode,
        args.seed,
        args.out,
        duration_s,
        data.num_trajectories / duration_s,
        digest[:12],
    )
    return 0


def _refuse_other_data(out: str, recipe: dict) -> None:
    """ConfigError when `out` exists and is not what this recipe makes (its sidecar says so, with the file's
    hash): runs may have trained on it, and replacing it silently would leave them unable to continue."""
    import hashlib
    import json
    import os

    from scratchlm.data.trajectory_io import sidecar_path
    from scratchlm.errors import ConfigError

    if not os.path.lexists(out):
        return
    try:
        meta = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
        digest = hashlib.sha256()
        with open(out, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):  # a multi-GB file is not read into memory
                digest.update(block)
        same_file = meta.get("sha256") == digest.hexdigest()
        if same_file and all(meta.get(key) == value for key, value in recipe.items()):
            return  # the same recipe makes the same tensors: writing them again loses nothing
        described = ", ".join(f"{key} {meta.get(key)}" for key in recipe) if same_file else None
    except (OSError, ValueError, AttributeError):
        described = None
    what = f"other trajectories ({described})" if described else "a file this command cannot vouch for"
    raise ConfigError(
        f"{out} already holds {what}; runs trained on it would refuse to continue if it were replaced, so choose "
        "another --out, or pass --overwrite to replace it."
    )
