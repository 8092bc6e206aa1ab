"""Data parallelism on CPU: two gloo processes under torchrun give the losses of one process with the
same global batch, print one summary (rank 0's) and one error line, keep a --stop-after's partial log
window exact, resume on another number of processes only with the same global batch, and stop on SIGTERM
with status 143 on every rank."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.train.checkpoint import read_checkpoint
from scratchlm.train.lock import LOCK_NAME
from scratchlm.train.tracking import read_metrics


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _refuse_non_json(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


needs_dist = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def _torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
         str(_free_port()), "-m", "scratchlm.cli", "train", *args],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _scratchlm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scratchlm.cli", "train", *args],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@needs_dist
@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scratchlm.cli import main

    data = tmp_path / "traj.pkl"
    save_trajectories(generate_trajectories(200, seq_length=16, seed=5, fast=True), data)
    common = [
        "--preset", "debug", "--set", f"data.path={json.dumps(str(data))}", "--set", "train.progress=false",
        "--set", "train.max_steps=8", "--set", "train.log_interval=2", "--set", "train.eval_interval=4",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single"
    # The one-process reference runs in this process (one thread, as in the children): torchrun is what is tested.
    assert main(["train", *common, "--set", "train.batch_size=8", "--out", str(single)]) == 0
    capsys.readouterr()
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


@needs_dist
@pytest.mark.slow
def test_a_stop_between_log_steps_resumes_on_one_process_with_the_same_global_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The partial log window a --stop-after keeps is the global batch's (not rank 0's share), and a resume
    by another number of processes is refused unless train.batch_size keeps the global batch."""
    from scratchlm.cli import main

    data = tmp_path / "traj.pkl"
    save_trajectories(generate_trajectories(200, seq_length=16, seed=5, fast=True), data)
    common = [
        "--preset", "debug", "--set", f"data.path={json.dumps(str(data))}", "--set", "train.progress=false",
        "--set", "train.max_steps=6", "--set", "train.log_interval=4", "--set", "train.eval_interval=6",
        "--set", "train.grad_accum=2",
    ]  # fmt: skip
    result = _torchrun(*common, "--set", "train.batch_size=4", "--out", str(tmp_path / "cut"), "--stop-after", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 2  # 1 process x 4: half the global batch
    refused = capsys.readouterr().err
    assert "trained by 2 processes with train.batch_size=4" in refused and "--set train.batch_size=8" in refused
    assert main(["train", "--resume", str(tmp_path / "cut"), "--set", "train.batch_size=8"]) == 0
    assert "batch_size = 8" in (tmp_path / "cut" / "config.toml").read_text()
    assert main(["train", *common, "--set", "train.batch_size=8", "--out", str(tmp_path / "whole")]) == 0
    one, two = read_metrics(tmp_path / "whole" / "metrics.jsonl"), read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [4, 6]
    for a, b in zip(one, two, strict=True):
        assert a["tokens"] == b["tokens"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5, abs=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4, abs=1e-5)


@needs_dist
@pytest.mark.slow
def test_ranks_draw_their_own_dropout_and_a_resume_continues_each_ranks_stream(tmp_path: Path) -> None:
    """With dropout, a 2-process run stopped mid-way and resumed by 2 processes logs exactly the rows of an
    uninterrupted one: each rank's RNG state is saved and restored, not rank 0's on every rank. The ranks'
    streams differ, so they do not draw one dropout mask N times."""
    import torch.nn.functional as F

    from scratchlm.train.checkpoint import read_checkpoint

    data = tmp_path / "traj.pkl"
    save_trajectories(generate_trajectories(200, seq_length=16, seed=5, fast=True), data)
    common = [
        "--preset", "debug", "--set", f"data.path={json.dumps(str(data))}", "--set", "train.progress=false",
        "--set", "model.dropout=0.3", "--set", "train.max_steps=6", "--set", "train.log_interval=2",
        "--set", "train.eval_interval=6", "--set", "train.batch_size=4",
    ]  # fmt: skip
    whole = _torchrun(*common, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    cut = _torchrun(*common, "--out", str(tmp_path / "cut"), "--stop-after", "3")
    assert cut.returncode == 0, cut.stderr[-3000:]
    states = read_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["rng_per_rank"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])
    masks = []
    for state in states:  # what each rank's next dropout call would draw
        torch.set_rng_state(state["torch"])
        masks.append(F.dropout(torch.ones(256), 0.5) == 0)
    assert not torch.equal(masks[0], masks[1])
    resumed = _torchrun("--resume", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    one, two = read_metrics(tmp_path / "whole" / "metrics.jsonl"), read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [2, 4, 6]
    for a, b in zip(one, two, strict=True):
        # The loss of the window cut by --stop-after is summed in another order (ranks first): float noise.
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)
        assert (a["grad_norm"], a.get("val_loss")) == (b["grad_norm"], b.get("val_loss"))


@needs_dist
@pytest.mark.slow
@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("data.path={missing}", "does not exist"),  # found in setup, where the ranks agree on one report
        ("model.foo=1", "unknown model key"),  # found reading the command line, before the process group exists
    ],
)
def test_a_mistake_under_torchrun_is_one_error_line(tmp_path: Path, setting: str, said: str) -> None:
    setting = setting.format(missing=json.dumps(str(tmp_path / "none.pkl")))
    result = _torchrun("--preset", "debug", "--set", setting, "--out", str(tmp_path / "run"))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("scratchlm:")]
    assert len(errors) == 1 and said in errors[0], result.stderr[-3000:]
    assert result.stdout == ""


def _children(pid: int) -> list[int]:
    """The live (not yet exited) child processes of `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _live_child_of(int(entry.name), pid):
            found.append(int(entry.name))
    return found


def _live_child_of(child: int, parent: int) -> bool:
    try:
        fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and int(fields[1]) == parent  # a zombie has exited; a new pid would have another parent


@needs_dist
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers through /proc")
def test_sigterm_stops_every_rank_with_status_143_and_the_checkpoints_intact(tmp_path: Path) -> None:
    """A rank gets SIGTERM more than once: from the scheduler, from torchrun passing it on, and from torchrun
    again when another rank exits first. Each copy that came after the first used to find the default action
    back (the CLI restores it when the command ends) and killed the rank in its exit (torchrun: exitcode -15)
    instead of letting it exit with the 143 it reported. Signalling the workers themselves, not torchrun, keeps
    torchrun's report of each rank's exit status."""
    data = tmp_path / "traj.pkl"
    save_trajectories(generate_trajectories(200, seq_length=16, seed=5, fast=True), data)
    run_dir = tmp_path / "run"
    job = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         "-m", "scratchlm.cli", "train", "--preset", "debug", "--set", f"data.path={json.dumps(str(data))}",
         "--set", "train.progress=false", "--set", "train.max_steps=100000", "--set", "train.log_interval=1",
         "--set", "train.checkpoint_interval=4", "--set", "train.eval_interval=100000", "--out", str(run_dir)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    workers: list[int] = []
    try:
        metrics, deadline = run_dir / "metrics.jsonl", time.monotonic() + 90
        while not (metrics.is_file() and len(read_metrics(metrics)) >= 6):  # past the first checkpoint
            assert job.poll() is None and time.monotonic() < deadline, "the run did not get going"
            time.sleep(0.1)
        workers = _children(job.pid)
        assert len(workers) == 2
        while any(_live_child_of(pid, job.pid) for pid in workers):  # until each rank has exited
            for pid in workers:
                if _live_child_of(pid, job.pid):
                    os.kill(pid, signal.SIGTERM)
            time.sleep(0.05)
        _, stderr = job.communicate(timeout=60)
    finally:
        for pid in workers:
            if _live_child_of(pid, job.pid):
                os.kill(pid, signal.SIGKILL)
        job.kill()
        job.wait()
    codes = {int(rank): int(code) for rank, code in re.findall(r"rank\s*: (\d+).*?\n\s*exitcode\s*: (-?\d+)", stderr)}
    assert codes == {0: 143, 1: 143}, stderr[-3000:]
    assert stderr.count("scratchlm: terminated by SIGTERM") == 1  # rank 0 alone says it
    step = read_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"]
    assert step >= 4 and step % 4 == 0
    assert not (run_dir / LOCK_NAME).exists()


def _agree_worker(rank: int, init_file: str, out_dir: str) -> None:
    from scratchlm.errors import DataError, ReportedElsewhere
    from scratchlm.train.distributed import DistInfo, all_ranks_agree

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    info, outcomes = DistInfo(rank, rank, 2), []
    for failing in (-1, 1, 0):

        def fn(failing: int = failing) -> int:
            if rank == failing:
                raise DataError("the data is bad; fix it.")
            return rank

        try:
            outcomes.append(f"ok {all_ranks_agree(info, fn)}")
        except ReportedElsewhere as exc:
            outcomes.append(f"quiet {exc.exit_code}")
        except Exception as exc:
            outcomes.append(f"{type(exc).__name__} {exc.exit_code} {exc}")  # type: ignore[attr-defined]
    dist.destroy_process_group()
    Path(out_dir, f"rank{rank}").write_text(json.dumps(outcomes))


@needs_dist
def test_a_setup_failure_on_one_rank_is_reported_once_by_rank_0(tmp_path: Path) -> None:
    # Forked, not spawned: the ranks need torch.distributed, not a fresh interpreter importing torch each.
    torch.multiprocessing.start_processes(
        _agree_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="fork"
    )
    zero, one = (json.loads((tmp_path / f"rank{rank}").read_text()) for rank in (0, 1))
    assert zero == [
        "ok 0",
        "RankFailedError 2 rank 1 of 2: the data is bad; fix it.",
        "DataError 2 the data is bad; fix it.",
    ]
    assert one == ["ok 1", "quiet 2", "quiet 2"]


def test_a_lost_peer_is_recognised() -> None:
    from scratchlm.train.distributed import is_peer_loss

    gloo = RuntimeError("[../gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:7594: Connection reset by peer")
    assert is_peer_loss(gloo)
    assert not is_peer_loss(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
