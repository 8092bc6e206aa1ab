"""Disk full and other refused writes: the previous checkpoint survives, the error is one line naming the file
and what the errno means, and the run resumes afterwards as if nothing had happened."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.errors import EXIT_IO, WriteError
from scratchlm.fileio import atomic_write, describe_os_error
from scratchlm.presets import resolve_run_config
from scratchlm.train import checkpoint as ckpt_module
from scratchlm.train import tracking
from scratchlm.train.checkpoint import read_checkpoint
from scratchlm.train.lock import LOCK_NAME
from scratchlm.train.tracking import read_metrics
from scratchlm.train.trainer import train
from tests.cli_processes import CommandServer

TIMING_KEYS = {"tokens_per_s", "elapsed_s", "mfu"}


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "traj.pkl"
    save_trajectories(generate_trajectories(96, seq_length=12, seed=4, fast=True), path)
    return path


def overrides(data: Path) -> list[str]:
    return [f"data.path={json.dumps(str(data))}", "train.progress=false", "train.max_steps=12", "train.eval_interval=6"]


def config(data: Path):
    return resolve_run_config("debug", None, overrides(data))


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        (errno.ENOSPC, "disk full (ENOSPC); free some space"),
        (errno.EDQUOT, "disk quota exceeded (EDQUOT)"),
        (errno.EACCES, "permission denied (EACCES)"),
        (errno.EROFS, "read-only file system (EROFS)"),
        (errno.ENXIO, "no such device or address (ENXIO)."),
    ],
)
def test_errno_meanings(code: int, meaning: str) -> None:
    assert describe_os_error(OSError(code, "x"), "runs/a/last.pt").startswith(f"cannot write runs/a/last.pt: {meaning}")


def test_a_failed_atomic_write_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    expected = r"out\.bin: disk full \(ENOSPC\); the previous file is intact"
    with pytest.raises(WriteError, match=expected) as info, atomic_write(target) as fh:
        fh.write(b"new, half written")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_disk_full_mid_run_keeps_the_last_good_checkpoint_and_resume_recovers(
    tmp_path: Path, trajectories: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train(config(trajectories), tmp_path / "straight")
    run_dir = tmp_path / "run"
    real_save = torch.save
    saves = {"n": 0}

    def fills_the_disk(obj: Any, fh: Any) -> None:
        saves["n"] += 1
        if saves["n"] == 2:  # the step-12 checkpoint: half of it reaches the disk, then the disk is full
            fh.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, fh)

    monkeypatch.setattr(ckpt_module.torch, "save", fills_the_disk)
    last = run_dir / "checkpoints" / "last.pt"
    with pytest.raises(WriteError) as info:
        train(config(trajectories), run_dir)
    assert str(info.value) == (
        f"cannot write {last}: disk full (ENOSPC); the previous file is intact; "
        "free some space or write somewhere else."
    )
    assert read_checkpoint(last)["iteration"] == 6  # the previous checkpoint, whole
    assert not list((run_dir / "checkpoints").glob(".*.tmp")) and not (run_dir / LOCK_NAME).exists()
    monkeypatch.setattr(ckpt_module.torch, "save", real_save)  # space freed
    train(config(trajectories), run_dir, resume=True)
    straight, resumed = (read_checkpoint(d / "checkpoints" / "last.pt") for d in (tmp_path / "straight", run_dir))
    assert all(torch.equal(v, resumed["model"][k]) for k, v in straight["model"].items())
    assert without_timing(read_metrics(run_dir / "metrics.jsonl")) == without_timing(
        read_metrics(tmp_path / "straight" / "metrics.jsonl")
    )


def test_a_refused_metrics_write_names_metrics_jsonl(
    tmp_path: Path, trajectories: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FullDisk:
        def __init__(self, path: Path, *args: Any, **kwargs: Any) -> None:
            self.path = path

        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(tracking, "open", FullDisk, raising=False)  # shadows the builtin inside tracking only
    with pytest.raises(WriteError, match=r"cannot write .*metrics\.jsonl: disk full \(ENOSPC\)"):
        train(config(trajectories), tmp_path / "run")


def test_a_path_that_cannot_be_written_is_reported_and_the_run_resumes(tmp_path: Path, trajectories: Path) -> None:
    run_dir = tmp_path / "run"
    blocker = run_dir / "checkpoints" / "step_000000006.pt"
    blocker.mkdir(parents=True)  # a directory where the periodic copy must go
    (blocker / "keep").write_text("x")
    cfg = resolve_run_config("debug", None, [*overrides(trajectories), "train.checkpoint_interval=6"])
    with pytest.raises(WriteError, match=rf"cannot write {blocker}: it is a directory \(EISDIR\)"):
        train(cfg, run_dir)
    blocker.joinpath("keep").unlink()
    blocker.rmdir()
    train(cfg, run_dir, resume=True)  # the resume redoes the copy the failed save could not make
    assert read_checkpoint(blocker)["iteration"] == 6


def test_the_cli_reports_a_real_write_failure_in_one_line_with_status_5(
    tmp_path: Path, trajectories: Path, command_server: CommandServer
) -> None:
    server = command_server
    run_dir = tmp_path / "run"
    last, best = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
    args = [f"--set={o}" for o in overrides(trajectories)]
    first = server.run(["train", "--preset", "debug", *args, "--out", str(run_dir), "--stop-after", "6"], tmp_path)
    assert first.status == 0
    before = last.read_bytes(), best.read_bytes()
    # The OS refuses files over 64 kB in this child: its first checkpoint write (re-copying best.pt from the
    # step-6 checkpoint it resumes from) fails with a real EFBIG.
    result = server.run(["train", "--resume", str(run_dir)], tmp_path, max_file_bytes=64_000)
    assert result.status == EXIT_IO
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert errors == [
        f"scratchlm: error: cannot write {best}: file too large for the file system or the process's file-size limit "
        "(EFBIG); the previous file is intact; check `ulimit -f`."
    ]
    assert (last.read_bytes(), best.read_bytes()) == before
