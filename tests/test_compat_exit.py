"""The course scripts run as `python -m scratchlm.compat.scratch1[_data]` are the whole process, like the
`scratchlm` console script: they end through `scratchlm.cli.exit_process` with their status, and after a
SIGTERM the signal stays ignored so the copies a scheduler or torchrun sends next cannot turn 143 into
"killed by SIGTERM"."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scratchlm import cli
from scratchlm.compat import scratch1, scratch1_data
from scratchlm.errors import EXIT_TERMINATED


class Exited(Exception):
    pass


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, object]]:
    """Record each exit_process call (status, SIGTERM's disposition then) instead of ending pytest."""
    calls: list[tuple[int, object]] = []

    def exit_process(status: int) -> None:
        calls.append((status, signal.getsignal(signal.SIGTERM)))
        raise Exited

    monkeypatch.setattr(cli, "exit_process", exit_process)
    previous = signal.getsignal(signal.SIGTERM)
    yield calls
    signal.signal(signal.SIGTERM, previous)


def sigterm_self(*_args: object) -> int:
    os.kill(os.getpid(), signal.SIGTERM)
    return 0


@pytest.mark.parametrize(
    ("module", "inner", "argv"),
    [
        (scratch1_data, "_generate", ["scratch1_data"]),
        (scratch1, "_train", ["scratch1", "--data", "unused.pkl"]),
        (scratch1, "_visualize", ["scratch1", "visualize", "--checkpoint", "unused.pt", "--data", "unused.pkl"]),
    ],
)
def test_a_script_run_as_the_process_exits_143_with_sigterm_left_ignored(
    module, inner, argv, exits, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(module, inner, sigterm_self)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(Exited):
        module.main()
    assert exits == [(EXIT_TERMINATED, signal.SIG_IGN)]
    assert capsys.readouterr().err.strip().endswith("terminated by SIGTERM")


def test_a_script_called_with_argv_returns_its_status_and_puts_sigterm_back(
    exits, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(scratch1_data, "_generate", sigterm_self)
    before = signal.getsignal(signal.SIGTERM)
    assert scratch1_data.main(["--num_trajectories", "3"]) == EXIT_TERMINATED
    assert exits == [] and signal.getsignal(signal.SIGTERM) == before
    capsys.readouterr()


def test_the_data_script_as_a_process_writes_its_file_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "t.pkl"
    argv = [sys.executable, "-m", "scratchlm.compat.scratch1_data", "--num_trajectories", "4", "--seq_length", "5"]
    done = subprocess.run([*argv, "--output", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 4 trajectories of 5 steps" in done.stderr
    with out.open("rb") as fh:
        assert len(pickle.load(fh)["states"]) == 4
