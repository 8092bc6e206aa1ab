"""`scratchlm train`, `bench train`, `report` and `demo` from the command line, good and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratchlm.cli import main
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.errors import EXIT_OUT_OF_MEMORY
from scratchlm.model import TransformerLM
from scratchlm.train import trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("d") / "traj.pkl"
    save_trajectories(generate_trajectories(120, seq_length=12, seed=1, fast=True), path)
    return path


def base(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--preset", "debug", "--out", str(out), "--set", f"data.path={json.dumps(str(data))}",
        "--set", "train.progress=false", "--set", "train.max_steps=4", "--set", "train.eval_interval=2", *extra,
    ]  # fmt: skip


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("scratchlm: error:")]
    assert len(errors) == 1 and not any("Traceback" in line for line in err), err
    return errors[0]


def test_train_resume_report_round_trip(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    assert main([*base(data, run_dir), "--stop-after", "2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 4
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.md").is_file() and (run_dir / "plots" / "loss_curve.png").is_file()
    assert (run_dir / "plots" / "attention_val0.png").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", 'data.path="/nonexistent/traj.pkl"'], "does not exist; create it with `scratchlm data trajectories"),
        (["--set", "model.context_length=8"], "raise model.context_length to at least 11"),
        (["--set", "model.vocab_size=100"], "set model.vocab_size >= 256"),
        (["--set", "train.batch_size=1000"], "batch_size 1000 exceeds the"),
        (["--set", "train.epochs=2"], "exactly one training budget"),  # max_steps=4 is set in the same layer
        (["--set", "optim.betas=[0.9]"], "optim.betas must be a list of 2 floats"),
        (["--set", "train.dtype=fp8"], "train.dtype = 'fp8' is not one of"),
        (["--set", "data.kind=tokens"], "is a file, not a token directory"),
        (["--set", "data.kind=tokens", "--set", 'data.path="/nonexistent"'], "meta.json does not exist"),
        (["--set", "nonsense.key=1"], "unknown config section(s) ['nonsense']"),
        (["--set", "train.lr=1"], "unknown train key(s) ['lr']; valid keys: batch_size"),
    ],
)
def test_bad_training_input_is_one_clear_line(
    tmp_path: Path, data: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(base(data, tmp_path / "run", *extra)) == 2
    assert message in one_error_line(capsys)


def test_resume_errors(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    assert "a run directory?" in one_error_line(capsys)
    run_dir = tmp_path / "run"
    assert main([*base(data, run_dir), "--stop-after", "1"]) == 0
    capsys.readouterr()
    assert main(base(data, run_dir)) == 2
    assert "already holds a run; continue it with --resume" in one_error_line(capsys)
    assert main(["train", "--resume", str(run_dir), "--set", "optim.lr=0.5"]) == 2
    assert "optim.lr differ" in one_error_line(capsys)
    assert main(["train"]) == 2
    assert "say what to train" in one_error_line(capsys)


def test_out_of_memory_names_the_fix_and_keeps_checkpoints(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(self: TransformerLM, *args: object, **kwargs: object) -> None:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99999999999 bytes")

    monkeypatch.setattr(TransformerLM, "forward", exhausted)
    assert main(base(data, tmp_path / "run", "--set", "train.batch_size=8")) == EXIT_OUT_OF_MEMORY
    line = one_error_line(capsys)
    assert "ran out of cpu memory at train.batch_size=8" in line and "train.grad_accum=2" in line
    assert trainer.OutOfMemoryError.__mro__[1].__name__ == "ScratchLMError"


def test_bench_train_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "train", "--preset", "debug", "--steps", "2", "--warmup", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    for key in ("tokens_per_s", "ms_per_step", "mfu", "params", "device"):
        assert key in result
    assert result["device"] == "cpu" and result["mfu"] is None and result["tokens_per_s"] > 0
