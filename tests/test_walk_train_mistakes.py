"""`scratchlm train` given the mistakes a user makes: each is one error line naming the problem and the fix,
and nothing a run already saved is overwritten."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from scratchlm.analysis.study_runs import EXPERIMENT_AGAIN, run_or_reuse
from scratchlm.cli import main
from scratchlm.data import token_files
from scratchlm.data.text import prepare_text_corpus
from scratchlm.data.tokens import windows_at
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.errors import EXIT_INTERRUPTED, EXIT_OUT_OF_MEMORY, DataError
from scratchlm.model import TransformerLM
from scratchlm.presets import resolve_run_config, to_toml
from scratchlm.train import trainer
from tests.test_cli_train import base, one_error_line


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("d") / "traj.pkl"
    save_trajectories(generate_trajectories(120, seq_length=12, seed=1, fast=True), path)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """A finished 4-step run with step_*.pt every 2 steps, best.pt and last.pt; tests copy it."""
    run_dir = tmp_path_factory.mktemp("r") / "run"
    assert main(base(data, run_dir, "--set", "train.checkpoint_interval=2")) == 0
    return run_dir


def digest(run_dir: Path) -> dict[str, str]:
    files = (p for p in run_dir.rglob("*") if p.is_file())
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def copy_run(finished: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    return run_dir


def test_checkpoints_without_last_pt_are_neither_restarted_nor_overwritten(
    tmp_path: Path, data: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Say last.pt was deleted after a "truncated" report: step_*.pt, best.pt and 4 metrics rows are left.
    run_dir = copy_run(finished, tmp_path)
    (run_dir / "checkpoints" / "last.pt").unlink()
    before = digest(run_dir)
    newest = run_dir / "checkpoints" / "step_000000004.pt"
    for argv in (base(data, run_dir), ["train", "--resume", str(run_dir)]):
        assert main(argv) == 2
        line = one_error_line(capsys)
        assert "holds checkpoints but no" in line and f"cp {newest} {run_dir / 'checkpoints' / 'last.pt'}" in line
        assert digest(run_dir) == before


def test_an_unreadable_last_pt_names_the_checkpoint_to_copy_over_it(
    tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(finished, tmp_path)
    last = run_dir / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    before = digest(run_dir)
    assert main(["train", "--resume", str(run_dir), "--set", "train.max_steps=6"]) == 2
    line = one_error_line(capsys)
    assert f"copy it over: cp {run_dir / 'checkpoints' / 'step_000000004.pt'} {last}." in line
    assert "high likelihood" not in line  # torch's advice, cut off mid-sentence, is left out
    assert digest(run_dir) == before


def test_a_checkpoint_copied_in_from_another_run_is_named_as_such(
    tmp_path: Path, data: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "wide"
    assert main(base(data, other, "--set", "model.d_model=64", "--set", "train.checkpoint_interval=2")) == 0
    run_dir = copy_run(finished, tmp_path)
    shutil.copy(other / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.pt")
    capsys.readouterr()
    before = digest(run_dir)
    assert main(["train", "--resume", str(run_dir), "--set", "train.max_steps=6"]) == 2
    line = one_error_line(capsys)
    assert "(model.d_model differ), so the directory mixes files of two runs" in line
    assert "resume it without overrides" not in line  # no override changed anything
    assert digest(run_dir) == before


def test_out_of_memory_at_batch_size_one_suggests_what_can_still_shrink(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(self: TransformerLM, *args: object, **kwargs: object) -> None:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99999999999 bytes")

    monkeypatch.setattr(TransformerLM, "forward", exhausted)
    assert main(base(data, tmp_path / "run", "--set", "train.batch_size=1")) == EXIT_OUT_OF_MEMORY
    line = one_error_line(capsys)
    assert "train.batch_size=1; it cannot go lower, so shorten model.context_length" in line
    assert "--set train.batch_size=1 " not in line and line.endswith("No checkpoint had been written yet.")
    assert main(base(data, tmp_path / "odd", "--set", "train.batch_size=9")) == EXIT_OUT_OF_MEMORY
    assert "train.batch_size=4 --set train.grad_accum=2 keeps about the same tokens" in one_error_line(capsys)


def test_a_model_that_cannot_fit_is_refused_before_it_is_built(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from scratchlm import memory

    built: list[int] = []
    monkeypatch.setattr(TransformerLM, "__init__", lambda self, *a, **k: built.append(1))
    # 10 million wide: 8e14 parameters, which the kernel would have killed the process for (exit 137, silent).
    assert main(base(data, tmp_path / "run", "--set", "model.d_model=10000000")) == EXIT_OUT_OF_MEMORY
    line = one_error_line(capsys)
    assert "(800,009,010,000,000 parameters) needs at least" in line and "choose a smaller model" in line
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 2**20)  # 1 MiB free: even the debug model
    assert main(["bench", "train", "--preset", "debug", "--steps", "1"]) == EXIT_OUT_OF_MEMORY
    assert "but only 1.0 MiB of cpu memory is free" in one_error_line(capsys)
    assert not built and not (tmp_path / "run" / "checkpoints").exists()


def test_the_memory_check_sizes_activations_by_the_data_not_the_context(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scratchlm import memory

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 2 * 2**30)
    # A context of 2M positions, 12-step trajectories: a lower bound at the context would be ~30 GiB.
    assert main(base(data, tmp_path / "run", "--set", "model.context_length=2000000")) == 0


def test_resuming_a_run_whose_checkpoints_directory_is_gone_says_so(
    tmp_path: Path, data: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(finished, tmp_path)
    shutil.rmtree(run_dir / "checkpoints")
    before = digest(run_dir)
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "its checkpoints/ directory is gone (deleted or moved)" in one_error_line(capsys)
    assert digest(run_dir) == before


def test_a_trajectory_pickle_given_as_a_checkpoint_is_one_line_without_torch_s_warning(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings

    assert main(["info", str(data)]) == 2
    assert "cannot be loaded safely" in one_error_line(capsys)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["info", str(data)]) == 2
    assert not [w for w in caught if "Detected pickle protocol" in str(w.message)]


def test_empty_paths_do_not_fall_back_to_a_default_run_directory(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where runs/debug would appear
    argv = base(data, tmp_path)
    argv[argv.index("--out") + 1] = ""  # --out "$RUN_DIR" with the variable unset
    assert main(argv) == 2
    assert "--out is empty; name the run directory" in one_error_line(capsys)
    assert main(["train", "--resume", ""]) == 2
    assert "--resume is empty" in one_error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_resume_given_a_checkpoint_or_a_file_names_the_run_directory(
    tmp_path: Path, data: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for wrong in (finished / "checkpoints" / "last.pt", finished / "checkpoints"):
        assert main(["train", "--resume", str(wrong)]) == 2
        assert f"not its checkpoints: use --resume {finished} " in one_error_line(capsys)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    assert main(["train", "--resume", str(a_file)]) == 2
    assert "is a file, not a run directory" in one_error_line(capsys)
    assert main(base(data, a_file)) == 2
    assert f"--out {a_file} is a file, not a directory" in one_error_line(capsys)
    assert a_file.read_text() == "keep me"


def test_a_key_above_every_section_is_named_with_its_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("lr = 0.01\n\n[train]\nmax_steps = 3\n")
    assert main(["train", "--preset", "debug", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "['lr'] are outside any [section] (did you mean optim.lr?)" in one_error_line(capsys)


def test_ctrl_c_says_which_checkpoint_survives_and_how_to_resume(
    tmp_path: Path,
    data: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    step = trainer.train_step

    def ctrl_c_at_step_3(run: trainer.Run) -> object:
        if run.state.step == 3:
            raise KeyboardInterrupt
        return step(run)

    monkeypatch.setattr(trainer, "train_step", ctrl_c_at_step_3)
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert main(base(data, run_dir)) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip().splitlines()[-1] == "scratchlm: interrupted"
    assert (
        f"stopped at step 3; the checkpoint of step 2 is intact: run `scratchlm train --resume {run_dir}` to continue"
    ) in caplog.messages
    monkeypatch.setattr(trainer, "train_step", step)
    assert main(["train", "--resume", str(run_dir)]) == 0
    # A run of an experiment is continued by the experiment's command, which also reuses its finished runs.
    monkeypatch.setattr(trainer, "train_step", ctrl_c_at_step_3)
    config = resolve_run_config("debug", None, base(data, run_dir)[5:][1::2])
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        run_or_reuse(config, tmp_path / "study" / "run")
    assert f"intact: {EXPERIMENT_AGAIN} to continue" in caplog.text


def corrupt_corpus(tmp_path: Path, position: int) -> Path:
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat\n" * 400, encoding="utf-8")
    corpus = tmp_path / "corpus"
    prepare_text_corpus(text, corpus, "char", progress=False)
    tokens = np.memmap(corpus / "train.bin", dtype=np.uint16, mode="r+")
    tokens[position] = 500
    tokens.flush()
    return corpus


def test_an_id_past_the_vocabulary_where_opening_did_not_look_is_refused_on_the_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file too large to check whole is checked in sampled blocks; here the blocks miss token 4000, and on a
    # GPU the model's own id check is off, so the batches must be checked before they reach the device.
    corpus = corrupt_corpus(tmp_path, 4000)
    monkeypatch.setattr(token_files, "FULL_CHECK_TOKENS", 100)
    monkeypatch.setattr(token_files, "_SAMPLE_BLOCKS", 2)
    monkeypatch.setattr(token_files, "_SAMPLE_BLOCK_TOKENS", 16)
    argv = base(corpus, tmp_path / "run", "--set", "data.kind=tokens", "--set", "model.vocab_size=20")
    assert main([*argv, "--set", "train.max_steps=200", "--set", "train.batch_size=32"]) == 2
    assert f"{corpus / 'train.bin'}: token 4000 has id 500, not below the vocabulary size" in one_error_line(capsys)


def test_checked_windows_match_the_unchecked_ones_and_name_a_bad_id() -> None:
    tokens = np.arange(100, dtype=np.uint16) % 5
    tokens[95] = 9
    starts, cpu = np.array([0, 50, 90]), torch.device("cpu")
    checked, unchecked = windows_at(tokens, starts, 8, cpu, 10), windows_at(tokens, starts, 8, cpu)
    assert all(got.equal(want) for got, want in zip(checked, unchecked, strict=True))
    with pytest.raises(DataError, match="token 95 has id 9, not below the vocabulary size 5"):
        windows_at(tokens, starts, 8, cpu, 5)


def test_a_config_file_or_metrics_no_run_wrote_are_not_overwritten(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = tmp_path / "exp"  # `--config exp/config.toml --out exp`: the user's own file in the run directory
    exp.mkdir()
    resolved = resolve_run_config("debug", None, [f"data.path={json.dumps(str(data))}", "train.progress=false"])
    mine = "# the debug preset at a lower lr\n" + to_toml(resolved.to_tables()).replace("lr = 0.003", "lr = 0.002")
    (exp / "config.toml").write_text(mine)
    for argv in (["train", "--config", str(exp / "config.toml"), "--out", str(exp)], ["train", "--resume", str(exp)]):
        assert main(argv) == 2
        assert "config.toml was not written by a run" in one_error_line(capsys)
    assert (exp / "config.toml").read_text() == mine and not (exp / "checkpoints").exists()
    logged = tmp_path / "logged"
    logged.mkdir()
    (logged / "metrics.jsonl").write_text('{"step": 1}\n')
    assert main(base(data, logged)) == 2
    assert "metrics.jsonl was not written by a run" in one_error_line(capsys)
    assert (logged / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_a_run_stopped_before_its_first_checkpoint_still_starts_again(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert main([*base(data, run_dir, "--set", "train.eval_interval=100"), "--stop-after", "1"]) == 0
    (run_dir / "checkpoints" / "last.pt").unlink()  # as if killed before the first save
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert main(base(data, tmp_path / "copied", "--config", str(run_dir / "config.toml"))) == 0


def test_a_resume_may_show_or_hide_the_progress_bar_but_not_change_the_run(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # base() hides the bar; the run is resumed with it shown, then hidden again with --no-progress.
    run_dir = tmp_path / "run"
    assert main([*base(data, run_dir, "--set", "train.max_steps=6"), "--stop-after", "2"]) == 0
    assert main(["train", "--resume", str(run_dir), "--set", "train.progress=true", "--stop-after", "2"]) == 0
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 6
    assert main(["train", "--resume", str(run_dir), "--set", "train.log_interval=3", "--no-progress"]) == 2
    assert "train.log_interval differ" in one_error_line(capsys)
