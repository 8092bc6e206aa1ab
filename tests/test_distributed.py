"""Data parallelism on CPU: two gloo processes under torchrun give the losses of one process with the
same global batch, and print one summary (rank 0's)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.train.tracking import read_metrics


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _refuse_non_json(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    data = tmp_path / "traj.pkl"
    save_trajectories(generate_trajectories(200, seq_length=16, seed=5, fast=True), data)
    common = [
        "--preset", "debug", "--set", f"data.path={json.dumps(str(data))}", "--set", "train.progress=false",
        "--set", "train.max_steps=8", "--set", "train.log_interval=2", "--set", "train.eval_interval=4",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single"
    subprocess.run(
        [sys.executable, "-m", "scratchlm.cli", "train", *common, "--set", "train.batch_size=8", "--out", str(single)],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    double = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         "-m", "scratchlm.cli", "train", *common, "--set", "train.batch_size=4", "--out", str(double)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # rank 0 alone prints the summary
    summary = json.loads(lines[0], parse_constant=_refuse_non_json)
    assert summary == json.loads((double / "summary.json").read_text(), parse_constant=_refuse_non_json)
    assert summary["steps"] == 8 and 0 < summary["best_val_loss"] <= summary["final_val_loss"]
    one, two = read_metrics(single / "metrics.jsonl"), read_metrics(double / "metrics.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [2, 4, 6, 8]
    for a, b in zip(one, two, strict=True):
        assert a["tokens"] == b["tokens"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5, abs=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4, abs=1e-5)
        if "val_loss" in a:
            assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5, abs=1e-5)
    assert sorted(p.name for p in (double / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
