"""The main job behind `make demo`: the Scratch-1 task from nothing to a report, on any machine.

1. Generate the course's dataset (10,000 trajectories, seed 42, v2 actions, bit-identical to the
   course's generate_data.py) unless data/trajectories.pkl already holds it.
2. Train the `scratch1-quick` preset into runs/demo (an earlier runs/demo is kept, renamed).
3. Write the loss curve, an attention-map figure for a validation trajectory, and report.md.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from scratchlm.analysis.report import write_report
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import load_trajectories, save_trajectories
from scratchlm.errors import DataError
from scratchlm.presets import resolve_run_config
from scratchlm.train.trainer import train

log = logging.getLogger(__name__)

DEMO_TRAJECTORIES, DEMO_SEQ_LENGTH, DEMO_SEED = 10_000, 50, 42


def ensure_course_dataset(path: Path) -> Path:
    """data/trajectories.pkl with the course's default dataset, generated only when absent or different."""
    if path.is_file():
        try:
            data = load_trajectories(path)
            if (data.num_trajectories, data.seq_length, data.version) == (DEMO_TRAJECTORIES, DEMO_SEQ_LENGTH, "v2"):
                log.info("using the existing dataset %s", path)
                return path
        except DataError as exc:
            log.warning("regenerating %s: %s", path, exc)
    log.info("generating %d course trajectories (seed %d) into %s", DEMO_TRAJECTORIES, DEMO_SEED, path)
    data = generate_trajectories(DEMO_TRAJECTORIES, DEMO_SEQ_LENGTH, seed=DEMO_SEED, version="v2")
    save_trajectories(data, path, {"seed": DEMO_SEED, "mode": "course"})
    return path


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
