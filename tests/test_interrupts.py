"""Ctrl-C and SIGTERM inside a checkpoint write, delivered deterministically from inside torch.save's writes.

torch.save's zip writer cannot be cut by an exception: its cleanup then raises "unexpected pos N vs M", which
used to reach the user as an internal error (status 1). Now a signal during a save waits for the save to
finish (status 130 / 143, the new checkpoint complete), a second one aborts the write (the previous
checkpoint intact), and a write the operating system refuses mid-save is reported as such (status 5).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from scratchlm.cli import main
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_IO, EXIT_TERMINATED
from scratchlm.fileio import signals_deferred
from scratchlm.train import checkpoint as ckpt_module
from scratchlm.train import trainer
from scratchlm.train.checkpoint import read_checkpoint
from scratchlm.train.lock import LOCK_NAME
from scratchlm.train.tracking import read_metrics

STEPS = 8
INTERVAL = 2  # a checkpoint (and a log row) every 2 steps


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("d") / "traj.pkl"
    save_trajectories(generate_trajectories(96, seq_length=12, seed=2, fast=True), path)
    return path


def train_args(data: Path, out: Path) -> list[str]:
    return [
        "train", "--preset", "debug", "--out", str(out), "--set", f"data.path={json.dumps(str(data))}",
        "--set", "train.progress=false", "--set", f"train.max_steps={STEPS}", "--set", "train.eval_interval=4",
        "--set", f"train.log_interval={INTERVAL}", "--set", f"train.checkpoint_interval={INTERVAL}",
    ]  # fmt: skip


class MidWrite:
    """The file torch.save writes into; on its `at`-th write call, `act()` runs before the bytes are written."""

    def __init__(self, fh: IO[bytes], at: int, act: Callable[[], None]) -> None:
        self.fh, self.at, self.act, self.calls = fh, at, act, 0

    def write(self, data: bytes) -> int:
        self.calls += 1
        if self.calls == self.at:
            self.act()
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def act_inside_save(monkeypatch: pytest.MonkeyPatch, nth_save: int, act: Callable[[], None]) -> None:
    """Run `act` in the middle of the serialization of the `nth_save`-th last.pt the trainer writes."""
    real_atomic_write = ckpt_module.atomic_write
    saves = {"n": 0}

    @contextlib.contextmanager
    def atomic_write(path: Any, mode: str = "wb", **kwargs: Any) -> Iterator[Any]:
        saves["n"] += 1
        with real_atomic_write(path, mode, **kwargs) as fh:
            yield MidWrite(fh, at=5, act=act) if saves["n"] == nth_save else fh

    monkeypatch.setattr(ckpt_module, "atomic_write", atomic_write)


def send(signum: int, times: int = 1) -> Callable[[], None]:
    def act() -> None:
        for _ in range(times):
            os.kill(os.getpid(), signum)

    return act


def last_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line or "internal error" in line for line in err), err
    return err[-1]


def assert_clean(run_dir: Path) -> None:
    assert not (run_dir / LOCK_NAME).exists()
    assert not [p for d in (run_dir, run_dir / "checkpoints") for p in d.glob(".*.tmp")]


def assert_resumes_to_the_end(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", str(run_dir)]) == 0
    capsys.readouterr()
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == list(range(INTERVAL, STEPS + 1, INTERVAL))
    assert read_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"] == STEPS


@pytest.mark.parametrize(
    ("signum", "status", "message"),
    [
        (signal.SIGINT, EXIT_INTERRUPTED, "scratchlm: interrupted"),
        (signal.SIGTERM, EXIT_TERMINATED, "scratchlm: terminated by SIGTERM"),
    ],
)
def test_a_signal_inside_a_checkpoint_write_waits_for_the_save_and_exits_with_its_status(
    tmp_path: Path,
    data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    signum: int,
    status: int,
    message: str,
) -> None:
    run_dir = tmp_path / "run"
    act_inside_save(monkeypatch, nth_save=2, act=send(signum))  # inside the step-4 save
    assert main(train_args(data, run_dir)) == status
    assert last_line(capsys) == message
    checkpoints = run_dir / "checkpoints"
    assert read_checkpoint(checkpoints / "last.pt")["iteration"] == 4  # the save the signal came in finished
    assert read_checkpoint(checkpoints / "step_000000004.pt")["iteration"] == 4  # copies included
    assert read_checkpoint(checkpoints / "best.pt")["iteration"] == 4
    assert_clean(run_dir)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back
    assert_resumes_to_the_end(run_dir, capsys)


def test_a_second_ctrl_c_aborts_the_write_and_keeps_the_previous_checkpoint(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    act_inside_save(monkeypatch, nth_save=2, act=send(signal.SIGINT, times=2))
    assert main(train_args(data, run_dir)) == EXIT_INTERRUPTED
    assert last_line(capsys) == "scratchlm: interrupted"
    assert read_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"] == 2  # the step-4 write was cut
    assert_clean(run_dir)
    assert_resumes_to_the_end(run_dir, capsys)


def raise_(exc: BaseException) -> Callable[[], None]:
    def act() -> None:
        raise exc

    return act


@pytest.mark.parametrize(
    ("exc", "status", "message"),
    [
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "scratchlm: interrupted"),
        (OSError(errno.ENOSPC, "No space left on device"), EXIT_IO, "disk full (ENOSPC); the previous file is intact"),
    ],
)
def test_a_failure_in_the_middle_of_serialization_is_reported_as_itself(
    tmp_path: Path,
    data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    status: int,
    message: str,
) -> None:
    """Not torch's "unexpected pos" RuntimeError from the zip writer's cleanup, status 1."""
    run_dir = tmp_path / "run"
    act_inside_save(monkeypatch, nth_save=2, act=raise_(exc))
    assert main(train_args(data, run_dir)) == status
    assert message in last_line(capsys)
    assert read_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"] == 2
    assert_clean(run_dir)
    monkeypatch.undo()
    assert_resumes_to_the_end(run_dir, capsys)


class ZipWriter:
    """Shaped like torch's zip writer: its exit finishes the archive, and fails if a write was cut short."""

    def __enter__(self) -> ZipWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


def test_an_error_raised_while_handling_ctrl_c_still_exits_as_interrupted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted_in_a_writer(*args: object, **kwargs: object) -> None:
        with ZipWriter():
            raise KeyboardInterrupt

    def buggy(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a real bug")

    monkeypatch.setattr(trainer, "train", interrupted_in_a_writer)
    assert main(["train", "--preset", "debug"]) == EXIT_INTERRUPTED
    assert last_line(capsys) == "scratchlm: interrupted"
    monkeypatch.setattr(trainer, "train", buggy)
    assert main(["train", "--preset", "debug"]) == EXIT_INTERNAL
    assert "internal error (RuntimeError: a real bug)" in capsys.readouterr().err


def test_signals_deferred_holds_a_signal_until_the_block_ends_and_nests() -> None:
    events: list[str] = []
    with pytest.raises(KeyboardInterrupt), signals_deferred():
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            events.append("inner block finished")
        events.append("outer block finished")
    assert events == ["inner block finished", "outer block finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_sigterm_while_one_is_held_lets_the_write_finish() -> None:
    events: list[str] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: events.append("terminated"))
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # torchrun's copy of the scheduler's
            events.append("write finished")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert events == ["write finished", "terminated"]
