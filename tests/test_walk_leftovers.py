"""Small things a user hit between the walkthroughs: a damaged metrics line mid-file, a course checkpoint
given to scratchlm's own commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scratchlm.errors import CheckpointError
from scratchlm.train.checkpoint import read_checkpoint
from scratchlm.train.tracking import read_metrics, truncate_metrics_after


def test_a_damaged_line_mid_file_does_not_hide_the_rows_after_it(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 1.5}, {"step": 3, "train_loss": 1.2}]
    # a damaged line, and lines that are JSON but no metrics row (another tool's, or hand-written)
    lines = [json.dumps(rows[0]), "\x00garbage{", "[1, 2]", '{"step": true}', json.dumps(rows[1]), json.dumps(rows[2])]
    path.write_text("\n".join(lines) + "\n" + '{"step": 4, "tr')  # and a torn trailing line, as a kill leaves
    assert read_metrics(path) == rows
    truncate_metrics_after(path, 2)  # what a resume from step 2 does: the rows up to it survive the rewrite
    assert read_metrics(path) == rows[:2]


def test_a_course_script_checkpoint_names_the_command_that_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "best_model.pt"
    torch.save({"epoch": 1, "model_state_dict": {"w": torch.zeros(2)}, "val_loss": 2.0}, path)
    with pytest.raises(CheckpointError, match=r"course's training script .* scratchlm\.compat\.scratch1 visualize"):
        read_checkpoint(path)


def test_a_left_lock_tells_a_running_trainer_from_a_killed_one(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    from scratchlm.analysis.runs_table import runs_table

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here = socket.gethostname()
    for name, pid, host in (("alive", os.getpid(), here), ("dead", int(gone.stdout), here), ("far", 1, "elsewhere")):
        run = tmp_path / name
        run.mkdir()
        (run / "config.toml").write_text('preset = "debug"\n')
        (run / ".lock").write_text(json.dumps({"pid": pid, "host": host, "started": "2026-12-02T10:00:00+00:00"}))
    status = {row.name: row.status for row in runs_table(tmp_path)}
    assert status["alive"] == "running"
    assert status["dead"].startswith("killed") and "--resume" in status["dead"]
    assert status["far"] == "running or killed"  # another host's process cannot be checked from here


def test_an_atomic_write_never_replaces_a_device_pipe_or_link(tmp_path: Path) -> None:
    import os

    from scratchlm.errors import DataError
    from scratchlm.fileio import atomic_write

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with (
        pytest.raises(DataError, match=r"output .* is a device, pipe or socket, not a regular file"),
        atomic_write(pipe, "w") as fh,
    ):
        fh.write("x")
    assert pipe.is_fifo()
    real, link = tmp_path / "real.txt", tmp_path / "link.txt"
    real.write_text("old")
    link.symlink_to(real)
    with atomic_write(link, "w") as fh:
        fh.write("new")
    assert link.is_symlink() and real.read_text() == "new"  # written through the link, which stays
