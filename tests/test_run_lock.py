"""One writer per run directory: the lock refuses a second trainer, names the holder, takes over stale locks
from dead processes, and is released however the run ends."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.errors import DataError, RunLockedError
from scratchlm.presets import resolve_run_config
from scratchlm.train import lock as lock_module
from scratchlm.train.lock import LOCK_NAME, RunLock, read_lock_holder
from scratchlm.train.trainer import train

HOLD_LOCK = "import sys, time; from scratchlm.train.lock import RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)"  # noqa: E501


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "traj.pkl"
    save_trajectories(generate_trajectories(64, seq_length=12, seed=2, fast=True), path)
    return path


def tiny_config(data: Path, *overrides: str):
    return resolve_run_config(
        "debug",
        None,
        [f"data.path={json.dumps(str(data))}", "train.progress=false", "train.max_steps=4", "train.eval_interval=2",
         *overrides],
    )  # fmt: skip


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_holder_is_refused_with_the_holders_pid_and_host(tmp_path: Path) -> None:
    with RunLock(tmp_path) as held:
        assert held.held
        assert read_lock_holder(tmp_path)["pid"] == os.getpid()
        with pytest.raises(RunLockedError, match=rf"in use by process {os.getpid()} on host {socket.gethostname()}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path):  # released: free again
        pass


def test_a_lock_held_by_another_process_is_refused_until_that_process_dies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"in use by process {holder.pid} "):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)  # dies without cleaning up: its .lock file stays behind
        holder.wait()
    assert read_lock_holder(tmp_path)["pid"] == holder.pid
    with caplog.at_level(logging.WARNING, logger=lock_module.__name__), RunLock(tmp_path):
        assert read_lock_holder(tmp_path)["pid"] == os.getpid()
    assert f"taking over {tmp_path / LOCK_NAME} from process {holder.pid}" in caplog.text


def test_a_stale_record_on_this_host_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pid = dead_pid()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "earlier"}))
    with caplog.at_level(logging.WARNING, logger=lock_module.__name__), RunLock(tmp_path):
        pass
    assert f"from process {pid} (started earlier), which is no longer running" in caplog.text


def test_a_record_from_another_host_is_refused_with_the_file_to_delete(tmp_path: Path) -> None:
    record = {"pid": 4242, "host": "some-other-node", "started": "earlier"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(record))
    with pytest.raises(RunLockedError, match=rf"process 4242 on host some-other-node .* delete {tmp_path / LOCK_NAME}"):
        RunLock(tmp_path).acquire()
    assert read_lock_holder(tmp_path) == record  # refused without touching it


def test_without_flock_the_recorded_pid_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock_module.fcntl, "flock", no_flock)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": live.pid, "host": socket.gethostname()}))
        with pytest.raises(RunLockedError, match=f"in use by process {live.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        live.kill()
        live.wait()
    with RunLock(tmp_path):  # the recorded process is gone now
        assert read_lock_holder(tmp_path)["pid"] == os.getpid()


def test_train_refuses_a_locked_run_directory_and_touches_nothing(tmp_path: Path, trajectories: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with RunLock(run_dir):
        with pytest.raises(RunLockedError, match=f"run directory {run_dir} is in use"):
            train(tiny_config(trajectories), run_dir)
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]


def test_the_lock_is_released_after_success_and_after_errors(tmp_path: Path, trajectories: Path) -> None:
    run_dir = tmp_path / "run"
    train(tiny_config(trajectories), run_dir, stop_after=2)
    assert not (run_dir / LOCK_NAME).exists()
    with pytest.raises(DataError):
        train(tiny_config(trajectories, 'data.path="/nonexistent.pkl"'), run_dir, resume=True)
    assert not (run_dir / LOCK_NAME).exists()
    train(tiny_config(trajectories), run_dir, resume=True)
    assert not (run_dir / LOCK_NAME).exists()


def test_a_new_run_that_fails_before_writing_leaves_no_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        train(tiny_config(tmp_path / "missing.pkl"), tmp_path / "never")
    assert not (tmp_path / "never").exists()
