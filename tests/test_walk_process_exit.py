"""A `scratchlm` process ends when its command does: the console entry point exits without the interpreter's
teardown (which garbage-collects the whole heap, ~400k objects after torch.compile, and kept a compiled
run alive 1.3-3 s after its summary), while still running exit hooks and flushing what it printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories

# A compiled run lingered 1.3-3.1 s on a shared 2-core machine before; it now ends ~0.06 s after its summary.
MAX_LINGER_S = 1.0


def _timed_lines(argv: list[str], env: dict[str, str]) -> tuple[int, list[tuple[float, str]], float, str]:
    """Run `argv`; (status, stdout lines with the time each arrived, the time the process ended, stderr)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    lines = [(time.monotonic(), line) for line in proc.stdout]  # type: ignore[union-attr]
    status = proc.wait(timeout=300)
    ended = time.monotonic()
    reader.join(timeout=10)
    return status, lines, ended, "".join(stderr)


@pytest.mark.slow
def test_a_compiled_training_run_exits_right_after_its_summary(tmp_path: Path) -> None:
    data = tmp_path / "traj.pkl"
    save_trajectories(generate_trajectories(60, seq_length=12, seed=3, fast=True), data)
    argv = [
        sys.executable, "-m", "scratchlm.cli", "train", "--preset", "debug", "--out", str(tmp_path / "run"),
        "--set", f"data.path={json.dumps(str(data))}", "--set", "train.progress=false",
        "--set", "train.compile=true", "--set", "train.max_steps=2",
    ]  # fmt: skip
    status, lines, ended, stderr = _timed_lines(argv, {**os.environ, "OMP_NUM_THREADS": "1"})
    assert status == 0, stderr[-3000:]
    [(printed, summary)] = lines
    assert json.loads(summary)["steps"] == 2
    assert ended - printed < MAX_LINGER_S


PROGRAM = """
import atexit, sys
from concurrent.futures import ThreadPoolExecutor
from scratchlm.cli import main

atexit.register(lambda: print("exit hook ran", file=sys.stderr))
ThreadPoolExecutor(2).submit(lambda: None).result()  # an idle pool, as inductor's compile threads leave one
sys.stdout.write("unflushed, no newline")
sys.argv = ["scratchlm", *sys.argv[1:]]
main()
print("main returned")
"""


@pytest.mark.parametrize(("argv", "status"), [(["presets"], 0), (["train", "--preset", "no-such-preset"], 2)])
def test_the_console_entry_point_exits_with_the_status_after_hooks_and_flushes(argv: list[str], status: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, *argv], capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == status, result.stderr[-3000:]
    assert result.stdout.startswith("unflushed, no newline")
    assert "main returned" not in result.stdout  # main(None) is the whole process
    assert result.stderr.rstrip().endswith("exit hook ran")
    if status == 0:
        assert "debug" in result.stdout  # the command's own output is all there
    else:
        assert "scratchlm: error: unknown preset 'no-such-preset'" in result.stderr


def test_main_with_arguments_returns_its_status_to_the_caller(capsys: pytest.CaptureFixture[str]) -> None:
    from scratchlm.cli import main

    assert main(["presets"]) == 0
    assert "debug" in capsys.readouterr().out
