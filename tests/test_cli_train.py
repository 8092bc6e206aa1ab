"""`scratchlm train`, `bench train`, `report` and `demo` from the command line, good and bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from scratchlm.cli import main
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.errors import EXIT_OUT_OF_MEMORY
from scratchlm.model import TransformerLM
from scratchlm.train import trainer
from scratchlm.train.tracking import read_metrics


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
        (["--set", "train.batch_size=1000"], "set train.batch_size <= 108 or generate more"),
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
    assert "missing does not exist; check the path" in one_error_line(capsys)
    run_dir = tmp_path / "run"
    assert main([*base(data, run_dir), "--stop-after", "1"]) == 0
    capsys.readouterr()
    assert main(base(data, run_dir)) == 2
    assert "already holds a run; continue it with --resume" in one_error_line(capsys)
    assert main(["train", "--resume", str(run_dir), "--set", "optim.lr=0.5"]) == 2
    assert "optim.lr differ" in one_error_line(capsys)
    assert main(["train"]) == 2
    assert "say what to train" in one_error_line(capsys)


def strict_loads(text: str) -> object:
    """json.loads as jq and JSON.parse read it: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON: {text}")

    return json.loads(text, parse_constant=refuse)


def test_a_summary_before_any_evaluation_is_strict_json(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert main([*base(data, run_dir), "--stop-after", "1"]) == 0  # stops before the first evaluation (step 2)
    printed = strict_loads(capsys.readouterr().out.strip())
    assert printed["best_val_loss"] is None and "final_val_loss" not in printed
    assert strict_loads((run_dir / "summary.json").read_text()) == printed
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        strict_loads(line)
    # A report of a run with metrics but no evaluation yet reads the null as such.
    logged = tmp_path / "logged"
    extra = ["--set", "train.log_interval=1", "--set", "train.eval_interval=100", "--stop-after", "3"]
    assert main([*base(data, logged), *extra]) == 0
    assert main(["report", str(logged)]) == 0
    assert "| best validation loss | none yet (no evaluation ran) |" in (logged / "report.md").read_text()


def test_resume_with_out_is_refused(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    assert main([*base(data, run_dir), "--stop-after", "1"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--out", str(tmp_path / "x")]) == 2
    assert f"--resume continues the run in {run_dir} itself, so --out" in one_error_line(capsys)
    assert not (tmp_path / "x").exists()


def test_a_finished_run_says_so_and_can_be_extended_from_the_command_line(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    assert main(base(data, run_dir)) == 0
    capsys.readouterr()
    with caplog.at_level(logging.INFO):
        assert main(["train", "--resume", str(run_dir)]) == 0
    assert strict_loads(capsys.readouterr().out.strip())["steps"] == 4
    assert (
        f"resumed {run_dir} at step 4 of 4: the run has already finished; to train it longer, resume it with a "
        f"larger budget, e.g. --resume {run_dir} --set train.max_steps=8"
    ) in caplog.messages
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["train", "--resume", str(run_dir), "--set", "train.max_steps=6"]) == 0
    assert strict_loads(capsys.readouterr().out.strip())["steps"] == 6
    assert any("now trains for 6 steps instead of 4: the learning-rate schedule" in m for m in caplog.messages)
    assert "max_steps = 6" in (run_dir / "config.toml").read_text()
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [2, 4, 5, 6]  # debug logs every 5
    assert main(["train", "--resume", str(run_dir), "--set", "train.max_steps=5"]) == 2
    assert "train.max_steps = 5 is fewer than the 6 steps the run in" in one_error_line(capsys)
    assert main(["train", "--resume", str(run_dir), "--set", "train.max_steps=8", "--set", "optim.lr=0.5"]) == 2
    assert "(optim.lr differ)" in one_error_line(capsys)  # only the budget may change


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


def test_a_warmup_as_long_as_the_run_is_named_with_the_fix(
    tmp_path: Path, data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert main([*base(data, tmp_path / "run"), "--set", "optim.warmup_steps=10"]) == 0
    assert any("optim.warmup_steps = 10 covers the whole 4-step run" in m for m in caplog.messages)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main([*base(data, tmp_path / "run2"), "--set", "optim.warmup_steps=1"]) == 0
    assert not any("covers the whole" in m for m in caplog.messages)


def test_a_course_pickle_without_a_sidecar_gets_the_floor_detected_or_given(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import math
    import shutil

    bare = tmp_path / "course.pkl"  # as the course's generate_data.py writes it: no .pkl.json beside it
    shutil.copyfile(data, bare)
    for version, floor in (("auto", math.log(5)), ("v2", math.log(5))):  # "auto" recognizes the v2 data
        out = tmp_path / version
        argv = [*base(bare, out), "--set", f'data.version="{version}"', "--set", "train.max_steps=2"]
        assert main(argv) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["data"]["loss_floor"] == (pytest.approx(floor) if floor else None)


def test_a_run_saved_before_a_config_key_existed_still_resumes(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    run_dir = tmp_path / "run"
    assert main([*base(data, run_dir), "--stop-after", "2"]) == 0
    last = run_dir / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["run_config"]["data"]["version"]  # as a checkpoint from before `data.version` was added
    torch.save(state, last)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 4


def test_the_demo_keeps_data_that_is_not_the_courses_and_generates_the_courses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scratchlm import demo
    from scratchlm.data.trajectories import generate_trajectories
    from scratchlm.data.trajectory_io import load_trajectories, save_trajectories, sidecar_path

    monkeypatch.setattr(demo, "DEMO_TRAJECTORIES", 30)
    monkeypatch.setattr(demo, "DEMO_SEQ_LENGTH", 12)
    path = tmp_path / "trajectories.pkl"
    other = generate_trajectories(30, 12, seed=7, fast=True)  # the same shape: only the content differs
    save_trajectories(other, path, {"seed": 7, "mode": "fast"})
    demo.ensure_course_dataset(path)
    course = generate_trajectories(30, 12, seed=42, version="v2")
    assert np.array_equal(load_trajectories(path).actions_NT, course.actions_NT)
    kept = list(tmp_path.glob("trajectories.*.pkl"))
    assert len(kept) == 1 and np.array_equal(load_trajectories(kept[0]).actions_NT, other.actions_NT)
    assert sidecar_path(kept[0]).is_file()
    before = path.stat().st_mtime_ns
    demo.ensure_course_dataset(path)  # the course's data now: used as it is
    assert path.stat().st_mtime_ns == before and len(list(tmp_path.glob("trajectories.*.pkl"))) == 1
