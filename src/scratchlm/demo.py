"""The main job behind `make demo`: the Scratch-1 task from nothing to a report, on any machine.

1. Generate the course's dataset (10,000 trajectories, seed 42, v2 actions, bit-identical to the
   course's generate_data.py) unless data/trajectories.pkl already holds it (other data there is kept
   under a dated name).
2. Train the `scratch1-quick` preset into runs/demo (an earlier runs/demo is kept, renamed).
3. Write the loss curve, an attention-map figure for a validation trajectory, and report.md.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from scratchlm.analysis.report import write_report
from scratchlm.data.trajectories import TrajectoryData, generate_trajectories
from scratchlm.data.trajectory_io import load_trajectories, save_trajectories, sidecar_path
from scratchlm.errors import DataError
from scratchlm.presets import resolve_run_config
from scratchlm.train.trainer import train

log = logging.getLogger(__name__)

DEMO_TRAJECTORIES, DEMO_SEQ_LENGTH, DEMO_SEED = 10_000, 50, 42


def ensure_course_dataset(path: Path) -> Path:
    """data/trajectories.pkl with the course's default dataset, generated when absent. A file there holding
    anything else (another seed, --fast, another size, or damaged) is kept under a dated name and the
    course's data generated in its place: the demo's numbers are the course's, and nothing is lost."""
    course = None
    if path.is_file():
        try:
            data = load_trajectories(path)
            reason = (
                f"it holds {data.num_trajectories} trajectories of {data.seq_length} steps ({data.version}), not "
                f"the course's {DEMO_TRAJECTORIES} of {DEMO_SEQ_LENGTH} (v2)"
            )
        except DataError as exc:
            data, reason = None, str(exc).rstrip(".")
        if data is not None and (data.num_trajectories, data.seq_length, data.version) == (
            DEMO_TRAJECTORIES, DEMO_SEQ_LENGTH, "v2",
        ):  # fmt: skip
            course = _course_data()  # about 2 s: compared by content, since a sidecar can be missing or stale
            same = np.array_equal(data.states_NTS, course.states_NTS)
            if same and np.array_equal(data.actions_NT, course.actions_NT):
                log.info("using the existing dataset %s (the course's)", path)
                return path
            reason = "it holds other trajectories than the course's (another seed, or --fast)"
        kept = path.with_name(f"{path.stem}.{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}")
        path.rename(kept)
        if sidecar_path(path).is_file():
            sidecar_path(path).rename(sidecar_path(kept))
        log.warning("kept %s as %s (%s) and generating the course's dataset in its place", path, kept, reason)
    log.info("generating %d course trajectories (seed %d) into %s", DEMO_TRAJECTORIES, DEMO_SEED, path)
    save_trajectories(course if course is not None else _course_data(), path, {"seed": DEMO_SEED, "mode": "course"})
    return path


def _course_data() -> TrajectoryData:
    return generate_trajectories(DEMO_TRAJECTORIES, DEMO_SEQ_LENGTH, seed=DEMO_SEED, version="v2")


def run_demo(
    out: str | Path = "runs/demo", data_path: str | Path = "data/trajectories.pkl", preset: str = "scratch1-quick"
) -> dict:
    out, data_path = Path(out), Path(data_path)
    start = time.perf_counter()
    ensure_course_dataset(data_path)
    if out.exists():
        kept = out.with_name(f"{out.name}.{time.strftime('%Y%m%d-%H%M%S')}")
        out.rename(kept)
        log.info("kept the previous %s as %s", out, kept)
    config = resolve_run_config(preset, None, [f'data.path="{data_path}"'])
    summary = train(config, out)
    report = write_report(out)
    summary["report"] = str(report)
    summary["demo_seconds"] = round(time.perf_counter() - start, 1)
    return summary
