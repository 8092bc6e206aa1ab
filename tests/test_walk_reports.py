"""Reports and plots of runs that did not end cleanly (interrupted, cut short, diverged) and of numbers a
page must not misprint, on one tiny trajectory run copied per test."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from scratchlm.analysis.report import _epochs, perplexity_text, write_report
from scratchlm.cli import main
from scratchlm.presets import resolve_run_config
from tests.experiment_helpers import debug_overrides, tiny_trajectories


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scratchlm.train.trainer import train

    root = tmp_path_factory.mktemp("walk-reports")
    data = tiny_trajectories(root)
    train(resolve_run_config("debug", None, debug_overrides(data, 8)), root / "run")
    return root / "run"


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _write_rows(run: Path, rows: list[dict]) -> None:
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_an_interrupted_run_is_reported_from_its_metrics_and_checkpoint(run: Path) -> None:
    # Ctrl-C after a checkpoint leaves config, metrics and checkpoints but no summary.json.
    (run / "summary.json").unlink()
    rows = _rows(run)
    page = write_report(run).read_text()
    evals = [r for r in rows if r.get("val_loss") is not None]
    assert f"it stopped at step {rows[-1]['step']}" in page and f"scratchlm train --resume {run}" in page
    assert f"Training: {rows[-1]['step']} steps, {rows[-1]['tokens']:,} tokens" in page
    assert f"| best validation loss | {min(r['val_loss'] for r in evals):.4f} |" in page
    assert f"| noise floor (ln 5, v2 actions) | {math.log(5):.4f}" in page  # data facts rebuilt from the data


def test_a_diverged_run_says_so_and_a_run_without_checkpoint_is_one_line(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run / "summary.json").unlink()
    outcome = {"status": "diverged", "reason": "non-finite loss or gradients at step 9", "step": 9, "total_steps": 20}
    (run / "outcome.json").write_text(json.dumps(outcome))
    assert "it diverged (non-finite loss or gradients at step 9)" in write_report(run).read_text()
    shutil.rmtree(run / "checkpoints")
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "before its first checkpoint" in err[0] and "optim.lr" in err[0], err


def test_an_interrupted_run_before_its_first_checkpoint_names_resume(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run / "summary.json").unlink()
    shutil.rmtree(run / "checkpoints")
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scratchlm: error:") and "\n" not in err
    assert "before its first checkpoint" in err and f"scratchlm train --resume {run}" in err


def test_a_missing_run_and_a_folder_without_config_name_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a finished run (no config.toml)" in capsys.readouterr().err


def test_a_run_cut_short_by_stop_after_says_how_far_it_got(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    summary["total_steps"] = summary["steps"] + 100
    (run / "summary.json").write_text(json.dumps(summary))
    page = write_report(run).read_text()
    assert f"stopped at step {summary['steps']} of {summary['total_steps']}" in page and "--resume" in page


def test_a_diverged_loss_prints_its_true_perplexity_and_is_called_diverged(run: Path) -> None:
    # The logged val_ppl is capped at exp(50); a diverged run's page must show exp(loss), readably.
    rows = _rows(run)
    last_eval = max(i for i, r in enumerate(rows) if r.get("val_loss") is not None)
    rows[last_eval].update(val_loss=454.3225, val_ppl=math.exp(50))
    rows[-1]["train_loss"] = rows[0]["train_loss"] + 900.0
    _write_rows(run, rows)
    page = write_report(run).read_text()
    assert "454.3225 (perplexity 2.04e+197)" in page and "5184705528587072" not in page
    assert "the run diverged" in page
    assert perplexity_text(1e4) == "over 1.8e+308" and perplexity_text(math.log(101.202)) == "101.202"


def test_a_converging_run_is_not_called_diverged_and_short_runs_keep_their_digits(run: Path) -> None:
    page = write_report(run).read_text()
    assert "diverged" not in page and "did not finish" not in page
    elapsed = json.loads((run / "summary.json").read_text())["elapsed_s"]
    assert elapsed < 10 and f"{elapsed:.2g} s" in page  # not "1 s" for 0.59 s
    assert _epochs(0.0306) == "0.031" and _epochs(1.8182) == "1.8" and _epochs(0) == "0.0"


def test_the_overlay_of_runs_on_the_same_data_draws_their_noise_floor(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    shutil.copytree(run, other)
    assert main(["plot", str(run), str(other)]) == 0
    capsys.readouterr()
    assert "noise floor 1.609" in (run / "plots" / "compare_step_run_other.svg").read_text()
