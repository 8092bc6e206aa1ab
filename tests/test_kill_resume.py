"""Crash safety under SIGKILL: `scratchlm train` killed 20 times at random moments -- several of them inside a
checkpoint or metrics write, made slow for the purpose -- resumes each time from its newest complete
checkpoint, keeps metrics.jsonl free of gaps and duplicates, and ends bit-identical to an uninterrupted run
(weights, optimizer state, sampler position and metrics), both for trajectory epochs with dropout and for
random memmap windows with gradient accumulation.

Kills come in three kinds, in an order shuffled by a seeded generator: "write" (inside the first, second or
third atomic write of last.pt, step_*.pt or best.pt the process makes), "training" (a random
delay after the process reports it is training or has resumed) and "startup" (a random delay after launch,
while it imports, sets up or rewrites metrics.jsonl). When a run finishes before all kills are spent, the
kills continue on a fresh run of the same config, which must end identical to the same reference.
Processes are forked from a warm server (tests/cli_processes.py) so twenty launches do not cost twenty
torch imports.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from scratchlm.data.text import prepare_text_corpus
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.fileio import WRITE_DELAY_ENV
from scratchlm.train.checkpoint import read_checkpoint
from scratchlm.train.tracking import read_metrics
from tests.cli_processes import CommandServer

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="watches processes through Linux /proc")

KILLS = 20
SEED = 7
LOG_INTERVAL = 2
STEPS = 48
WRITE_DELAY = {WRITE_DELAY_ENV: "0.1"}  # every atomic write lingers 0.1 s before its rename
TIMING_KEYS = {"tokens_per_s", "elapsed_s", "mfu"}
RESUMED = re.compile(r"resumed \S+ at step (\d+) of")
FROM_SCRATCH = re.compile(r"has no checkpoint yet")
STARTED = re.compile(r"training \S+: |resumed \S+ at step ")


def config_args(data: Path, *overrides: str) -> list[str]:
    return [
        "--preset", "debug", "--set", f"data.path={json.dumps(str(data))}", "--set", "train.progress=false",
        "--set", f"train.max_steps={STEPS}", "--set", "train.eval_interval=4",
        "--set", f"train.log_interval={LOG_INTERVAL}", "--set", "train.checkpoint_interval=8",
        *[arg for override in overrides for arg in ("--set", override)],
    ]  # fmt: skip


def make_data(kind: str, root: Path) -> tuple[Path, tuple[str, ...]]:
    """A small dataset of the given kind and the overrides that train on it."""
    if kind == "trajectories":
        path = root / "traj.pkl"
        save_trajectories(generate_trajectories(160, seq_length=16, seed=11, fast=True), path)
        return path, ("model.dropout=0.1",)
    text = root / "corpus.txt"
    text.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(300)))
    prepare_text_corpus(text, root / "corpus", "char", val_fraction=0.1, progress=False)
    return root / "corpus", ("data.kind=tokens", "model.context_length=24", "train.grad_accum=2")


def temp_files(*directories: Path) -> list[Path]:
    return [p for d in directories if d.is_dir() for p in d.glob(".*.tmp")]


def committed_step(run_dir: Path) -> int:
    """The step of the newest complete checkpoint (0 when there is none yet); reading it proves it complete."""
    last = run_dir / "checkpoints" / "last.pt"
    return int(read_checkpoint(last)["iteration"]) if last.exists() else 0


def assert_metrics_continuous(run_dir: Path) -> list[int]:
    steps = [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")]
    assert steps == list(range(LOG_INTERVAL, LOG_INTERVAL * (len(steps) + 1), LOG_INTERVAL)), steps
    return steps


def running(pid: int) -> bool:
    """False once the child has exited: it stays a zombie (state Z) until the server reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def wait_for(condition: Callable[[], object], pid: int, timeout: float = 120.0) -> bool:
    """Poll until `condition()` holds (True) or the process ends first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if not running(pid):
            return False
        time.sleep(0.003)
    raise AssertionError("timed out waiting for the training process")


def kill_at(kind: str, pid: int, log: Path, run_dir: Path, rng: random.Random) -> str | None:
    """SIGKILL `pid` at a moment of the given kind; returns what it was doing, or None if it ended first."""
    launched = time.monotonic()
    stale = set(temp_files(run_dir, run_dir / "checkpoints"))  # left by the previous kill; removed under the lock

    def new_temp_files(*directories: Path) -> list[Path]:
        return [p for p in temp_files(*directories) if p not in stale]

    if kind == "startup":
        delay = rng.uniform(0.0, 0.6)  # a forked child sets up in a fraction of a second
        hit = wait_for(lambda: time.monotonic() - launched > delay, pid)
    elif kind == "training":
        hit = wait_for(lambda: STARTED.search(log.read_text(errors="replace")), pid)
        pause = time.monotonic() + rng.uniform(0.0, 0.8)
        hit = hit and wait_for(lambda: time.monotonic() > pause, pid)
    else:  # inside the 1st, 2nd or 3rd checkpoint file this process writes (each takes >= WRITE_DELAY)
        nth, seen = rng.randint(1, 3), set()

        def nth_write_in_progress() -> bool:
            current = new_temp_files(run_dir / "checkpoints")
            seen.update(current)
            return len(seen) >= nth and bool(current)

        hit = wait_for(nth_write_in_progress, pid)
    writing = [p.name for p in new_temp_files(run_dir, run_dir / "checkpoints")]
    if not hit or not running(pid):
        return None
    os.kill(pid, signal.SIGKILL)
    return f"{kind}{' while writing ' + ', '.join(writing) if writing else ''}"


def same_run(run_dir: Path, reference: Path) -> None:
    for name in sorted(p.name for p in (reference / "checkpoints").iterdir()):
        ours = read_checkpoint(run_dir / "checkpoints" / name)
        theirs = read_checkpoint(reference / "checkpoints" / name)
        for key, value in theirs["model"].items():
            assert torch.equal(value, ours["model"][key]), (name, key)
        for index, state in theirs["optimizer"]["state"].items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(ours["optimizer"]["state"][index][key]))
        assert ours["sampler"] == theirs["sampler"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == sorted(
        p.name for p in (reference / "checkpoints").iterdir()
    )

    def strip(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]

    assert strip(read_metrics(run_dir / "metrics.jsonl")) == strip(read_metrics(reference / "metrics.jsonl"))
    assert not temp_files(run_dir, run_dir / "checkpoints")


@pytest.mark.slow
@pytest.mark.parametrize("data_kind", ["trajectories", "tokens"])
def test_twenty_kills_at_random_moments_resume_to_the_uninterrupted_result(
    tmp_path: Path, data_kind: str, command_server: CommandServer
) -> None:
    server = command_server
    data, overrides = make_data(data_kind, tmp_path)
    rng = random.Random(SEED)
    kinds = ["write"] * 8 + ["training"] * 9 + ["startup"] * 3
    rng.shuffle(kinds)
    record: list[tuple[str, int]] = []  # (what the process was doing, newest complete checkpoint after the kill)
    reference = tmp_path / "reference"
    argv = ["train", *config_args(data, *overrides), "--out", str(reference)]
    assert server.run(argv, tmp_path / "logs" / "ref").status == 0
    rounds, launches = 0, 0
    while kinds:
        rounds += 1
        run_dir = tmp_path / f"round{rounds}"
        argv = ["train", *config_args(data, *overrides), "--out", str(run_dir)]
        expected_start: int | None = None
        while kinds:
            launches += 1
            log_dir = tmp_path / "logs" / str(launches)
            pid = server.launch(argv, log_dir, env=WRITE_DELAY)
            # Until config.toml exists there is nothing to resume: a first launch dies only once training.
            kind = "training" if expected_start is None and kinds[0] == "startup" else kinds[0]
            doing = kill_at(kind, pid, log_dir / "stderr.txt", run_dir, rng)
            result = server.wait(pid)
            if expected_start is not None:  # a resume: it must start from the newest complete checkpoint
                said = RESUMED.search(result.stderr) or FROM_SCRATCH.search(result.stderr)
                assert said or doing, result.stderr  # only a kill may keep it from saying so
                if said:
                    assert (int(said.group(1)) if said.re is RESUMED else 0) == expected_start, result.stderr
            if doing is None:  # it finished before the kill: start another run for the remaining kills
                assert result.status == 0, result.stderr
                same_run(run_dir, reference)
                break
            assert result.status == -signal.SIGKILL, result.stderr
            kinds.pop(0)
            expected_start = committed_step(run_dir)
            record.append((doing, expected_start))
            assert_metrics_continuous(run_dir)
            argv = ["train", "--resume", str(run_dir)]
    final = server.run(argv, tmp_path / "logs" / "final")
    assert final.status == 0, final.stderr
    said = RESUMED.search(final.stderr)
    assert (int(said.group(1)) if said else 0) == expected_start, final.stderr
    same_run(run_dir, reference)
    assert len(record) == KILLS
    in_checkpoint_writes = [doing for doing, _ in record if re.search(r"writing \.(last|best|step_\d+)\.pt\.", doing)]
    assert len(in_checkpoint_writes) >= 8  # every "write" kill, at least, landed inside a checkpoint write
    print(
        f"{data_kind}: {KILLS} kills ({len(in_checkpoint_writes)} inside checkpoint writes) over {rounds} run(s) and "
        f"{launches + 1} launches; each resumed from its newest complete checkpoint and the result equals the reference"
    )
    for doing, step in record:
        print(f"  killed {doing}; resumed from step {step}")


def test_sigterm_stops_the_run_cleanly_and_it_resumes(tmp_path: Path, command_server: CommandServer) -> None:
    """A scheduler's SIGTERM unwinds like Ctrl-C: status 143, lock released, no partial files left behind."""
    server = command_server
    data, overrides = make_data("trajectories", tmp_path)
    run_dir = tmp_path / "run"
    argv = ["train", *config_args(data, *overrides), "--out", str(run_dir)]
    pid = server.launch(argv, tmp_path / "logs" / "1", env=WRITE_DELAY)
    assert wait_for(lambda: new_checkpoint_write(run_dir), pid)  # inside the atomic write of a checkpoint
    os.kill(pid, signal.SIGTERM)
    result = server.wait(pid)
    assert result.status == 128 + signal.SIGTERM
    assert result.stderr.strip().splitlines()[-1] == "scratchlm: terminated by SIGTERM"
    assert not (run_dir / ".lock").exists() and not temp_files(run_dir, run_dir / "checkpoints")
    assert server.run(["train", "--resume", str(run_dir)], tmp_path / "logs" / "2").status == 0


def new_checkpoint_write(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "last.pt").exists() and bool(temp_files(run_dir / "checkpoints"))
