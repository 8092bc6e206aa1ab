"""Walkthrough of `scratchlm runs` and `scratchlm plot` on tiny debug runs: diverged, interrupted (on a step
or an epoch budget), killed, stopped before their first log row, single-step, damaged and same-named runs."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scratchlm.analysis import plots
from scratchlm.analysis.runs_table import runs_table
from scratchlm.analysis.sweep import lr_sweep
from scratchlm.cli import main
from scratchlm.errors import DataError, NonFiniteLossError
from scratchlm.presets import resolve_run_config
from scratchlm.train.trainer import PLAN_FILE, train
from tests.experiment_helpers import debug_overrides, tiny_trajectories


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_trajectories(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def finished(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-step debug run, copied by the tests that damage or rename it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train(resolve_run_config("debug", None, debug_overrides(data, 4)), run)
    return run


def copy_run(run: Path, target: Path) -> Path:
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("plots"))
    return target


def rows_of(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def write_rows(run: Path, rows: list[dict[str, Any]]) -> None:
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every figure the plots draw, kept open for inspection instead of only written to disk."""
    kept: list[Any] = []

    def keep(fig: Any, path: Path, svg: bool = True) -> list[Path]:
        kept.append(fig)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path.with_suffix(".png"))  # written, not closed
        return [path.with_suffix(".png")]

    monkeypatch.setattr(plots, "save_figure", keep)
    yield kept
    for fig in kept:
        plots.pyplot().close(fig)


def axis(fig: Any, label: str) -> Any:
    (found,) = [ax for ax in fig.axes if label in ax.get_ylabel()]
    return found


def ys(ax: Any) -> list[float]:
    return [float(y) for line in ax.get_lines() for y in line.get_ydata()]


def crosses(ax: Any) -> list[Any]:
    """The lines of `ax` that draw one point as an x: the marks of diverged runs (not their legend entry)."""
    return [line for line in ax.get_lines() if line.get_marker() == "x" and len(line.get_xdata()) == 1]


# ------------------------------------------------------------------------------------------ perplexity


def test_the_perplexity_panel_draws_a_diverged_loss_not_the_logged_cap(
    finished: Path, tmp_path: Path, figures: list[Any]
) -> None:
    run = copy_run(finished, tmp_path / "run")
    rows = rows_of(run)
    rows[-1].update(train_loss=454.3, train_ppl=math.exp(50), val_loss=454.3, val_ppl=math.exp(50))
    write_rows(run, rows)
    plots.plot_training_curves([run], tmp_path / "curves")
    ppl = axis(figures[0], "perplexity")
    assert max(ys(ppl)) == pytest.approx(math.exp(454.3), rel=1e-6)  # not exp(50), the metrics log's cap
    assert ppl.get_yscale() == "log"  # spans orders of magnitude without flattening the healthy part
    assert min(ys(ppl)) == pytest.approx(math.exp(rows[0]["train_loss"]), rel=1e-6)


def test_a_loss_past_what_exp_can_hold_is_drawn_at_a_marked_ceiling(
    finished: Path, tmp_path: Path, figures: list[Any]
) -> None:
    run = copy_run(finished, tmp_path / "run")
    rows = rows_of(run)
    rows[-1].update(train_loss=1e4, val_loss=1e4)
    write_rows(run, rows)
    plots.plot_training_curves([run], tmp_path / "curves")
    ppl = axis(figures[0], "perplexity")
    assert all(math.isfinite(y) for y in ys(ppl))
    _, labels = ppl.get_legend_handles_labels()
    assert any("clipped" in name for name in labels)


# ---------------------------------------------------------------------------------------------- runs


def test_a_sweep_run_judged_diverged_at_its_end_is_listed_and_plotted_as_diverged(
    tmp_path: Path, data: Path, figures: list[Any]
) -> None:
    short = [*debug_overrides(data, 16), "optim.warmup_steps=100", "optim.grad_clip=0.0"]
    results = lr_sweep("debug", [1.0], tmp_path / "sweep", short)
    (verdict,) = results["runs"]
    assert verdict["status"] == "diverged" and verdict["steps"] == verdict["total_steps"] == 16
    (row,) = runs_table(tmp_path)
    assert row.status == f"diverged ({verdict['reason']})"
    figures.clear()  # the sweep's own figures
    run = Path(verdict["run_dir"])
    plots.plot_runs([run])
    (fig,) = figures
    (cross,) = crosses(axis(fig, "cross-entropy"))
    assert (list(cross.get_xdata()), list(cross.get_ydata())) == ([16], [rows_of(run)[-1]["train_loss"]])
    assert "diverged" in fig.texts[0].get_text()  # the suptitle


def test_an_interrupted_run_shows_how_far_it_got_of_its_total(tmp_path: Path, data: Path) -> None:
    def ctrl_c(row: dict[str, Any]) -> None:
        if row["step"] >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(resolve_run_config("debug", None, debug_overrides(data, 12)), tmp_path / "cut", monitor=ctrl_c)
    assert not (tmp_path / "cut" / "summary.json").exists()
    (row,) = runs_table(tmp_path)
    # No checkpoint yet (every 1000 steps): its rows show how far it got, not where --resume continues.
    before_first = "interrupted before its first checkpoint (--resume starts it over)"
    assert (row.status, row.steps, row.total_steps) == (before_first, 6, 12)
    assert row.elapsed_s is not None and row.elapsed_s > 0
    (tmp_path / "cut" / "checkpoints" / "best.pt").write_bytes(b"")  # something a resume would stand on
    assert runs_table(tmp_path)[0].status == "interrupted"


def epoch_overrides(data: Path, epochs: int) -> list[str]:
    """A debug run with an epoch budget (216 trajectories / batch 8: 27 steps an epoch), checkpointed often."""
    path_and_progress = debug_overrides(data)[:2]
    # A budget given replaces the preset's (debug's max_steps), so epochs alone set how long it runs.
    return [*path_and_progress, f"train.epochs={epochs}", "train.log_interval=2", "train.eval_interval=1000",
            "train.checkpoint_interval=2"]  # fmt: skip


def ctrl_c_at(step: int) -> Any:
    def monitor(row: dict[str, Any]) -> None:
        if row["step"] >= step:
            raise KeyboardInterrupt

    return monitor


def test_an_interrupted_epoch_budget_run_shows_its_total_and_resumes_to_it(tmp_path: Path, data: Path) -> None:
    run = tmp_path / "epochs"
    with pytest.raises(KeyboardInterrupt):
        train(resolve_run_config("debug", None, epoch_overrides(data, 1)), run, monitor=ctrl_c_at(4))
    assert not (run / "summary.json").exists()
    (row,) = runs_table(tmp_path)
    assert (row.status, row.steps, row.total_steps) == ("interrupted", 4, 27)
    assert json.loads((run / PLAN_FILE).read_text())["total_steps"] == 27  # where the table found it

    # Resumed from its step-2 checkpoint with twice the budget, then interrupted again: the new total shows.
    longer = resolve_run_config("debug", None, epoch_overrides(data, 2))
    with pytest.raises(KeyboardInterrupt):
        train(longer, run, resume=True, monitor=ctrl_c_at(8))
    (row,) = runs_table(tmp_path)
    assert (row.status, row.steps, row.total_steps) == ("interrupted", 8, 54)

    summary = train(longer, run, resume=True)
    assert (summary["steps"], summary["total_steps"]) == (54, 54)  # the total shown is the one it ran to
    (row,) = runs_table(tmp_path)
    assert (row.status, row.steps, row.total_steps) == ("finished", 54, 54)


def _train_until_killed(config: Any, run: Path, step: int) -> None:
    def kill_self(row: dict[str, Any]) -> None:
        if row["step"] >= step:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup at all: the .lock and no summary are left

    train(config, run, monitor=kill_self)


def test_a_killed_epoch_budget_run_shows_its_total(tmp_path: Path, data: Path) -> None:
    config = resolve_run_config("debug", None, epoch_overrides(data, 2))
    child = multiprocessing.get_context("fork").Process(target=_train_until_killed, args=(config, tmp_path / "k", 6))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL
    (row,) = runs_table(tmp_path)
    assert row.status.startswith("killed") and (row.steps, row.total_steps) == (6, 54)


def test_a_run_stopped_before_its_first_log_row_is_not_listed_as_not_started(tmp_path: Path, data: Path) -> None:
    overrides = [*debug_overrides(data, 12), "train.log_interval=5"]
    train(resolve_run_config("debug", None, overrides), tmp_path / "short", stop_after=3)
    assert (tmp_path / "short" / "metrics.jsonl").read_text() == ""
    (row,) = runs_table(tmp_path)
    assert (row.status, row.steps, row.total_steps) == ("incomplete", 3, 12)


def test_one_unreadable_metrics_file_does_not_take_the_log_with_it(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_run(finished, tmp_path / "good")
    binary = copy_run(finished, tmp_path / "binary")
    (binary / "metrics.jsonl").write_bytes(b"\xff\xfe\x00 not text\n")
    listed = copy_run(finished, tmp_path / "listed")
    (listed / "metrics.jsonl").write_text((listed / "metrics.jsonl").read_text() + "[1, 2]\n")
    assert main(["runs", str(tmp_path), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["good"]["status"] == "finished" and rows["listed"]["status"] == "finished"
    assert rows["binary"]["status"].startswith("damaged") and "metrics.jsonl" in rows["binary"]["status"]
    assert main(["plot", str(listed)]) == 0
    capsys.readouterr()
    assert main(["plot", str(binary)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "metrics.jsonl" in line and "internal error" not in line


# ---------------------------------------------------------------------------------------------- plot


def test_a_single_step_run_draws_every_curve_as_a_visible_point(data: Path, tmp_path: Path, figures: list[Any]) -> None:
    train(resolve_run_config("debug", None, debug_overrides(data, 1)), tmp_path / "one")
    plots.plot_runs([tmp_path / "one"])
    for ax in figures[0].axes:
        curves = [line for line in ax.get_lines() if len(line.get_xdata()) == 1]
        assert curves, ax.get_ylabel()
        assert all(line.get_marker() not in (None, "None", "") for line in curves), ax.get_ylabel()


def test_plotting_a_run_twice_is_one_clear_error(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(finished), str(finished)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "twice" in line and "SameFile" not in line and "PosixPath" not in line


def test_runs_of_the_same_name_get_distinct_legend_entries(finished: Path, tmp_path: Path, figures: list[Any]) -> None:
    a = copy_run(finished, tmp_path / "sweep-a" / "lr=0.01")
    b = copy_run(finished, tmp_path / "sweep-b" / "lr=0.01")
    plots.plot_runs([a, b])
    _, labels = axis(figures[-1], "cross-entropy").get_legend_handles_labels()
    assert "sweep-a/lr=0.01 val" in labels and "sweep-b/lr=0.01 val" in labels


def test_plot_marks_a_diverged_run_with_a_cross_at_its_last_finite_point(
    finished: Path, data: Path, tmp_path: Path, figures: list[Any]
) -> None:
    blowup = [*debug_overrides(data, 12), "optim.lr=1e4", "optim.warmup_steps=0", "optim.grad_clip=0.0"]
    with pytest.raises(NonFiniteLossError):  # stopped at its first NaN, with outcome.json beside it
        train(resolve_run_config("debug", None, blowup), tmp_path / "nan")
    stopped = train(
        resolve_run_config("debug", None, debug_overrides(data, 12)), tmp_path / "stopped",
        monitor=lambda row: "exploded" if row["step"] >= 6 else None,
    )  # fmt: skip
    assert stopped["stopped"] == "exploded"  # what a sweep's divergence monitor leaves in summary.json
    good = copy_run(finished, tmp_path / "good")
    # What a train.on_nonfinite = "skip" run logs once its loss is NaN (strict JSON writes it as null).
    skipped = copy_run(finished, tmp_path / "skip")
    write_rows(skipped, [{**r, "train_loss": None} if r["step"] > 2 else r for r in rows_of(skipped)])
    runs = [good, tmp_path / "nan", tmp_path / "stopped", skipped]
    plots.plot_runs(runs)
    loss = axis(figures[-1], "cross-entropy")
    colors = {
        line.get_label().split()[0]: line.get_color() for line in loss.get_lines() if line.get_label() != "_nolegend_"
    }
    marks = {(cross.get_color(), float(cross.get_xdata()[0]), float(cross.get_ydata()[0])) for cross in crosses(loss)}
    expected = set()
    for run in runs[1:]:
        finite = [r for r in rows_of(run) if r["train_loss"] is not None]
        expected.add((colors[run.name], float(finite[-1]["step"]), finite[-1]["train_loss"]))
    assert marks == expected  # one cross per diverged run, in its color, none on the finished one
    _, labels = loss.get_legend_handles_labels()
    assert plots.DIVERGED_MARK in labels and "good train" in labels
    assert {"nan (diverged) train", "stopped (diverged) train", "skip (diverged) train"} <= set(labels)
    status = {row.name: row.status for row in runs_table(tmp_path)}  # `runs` agrees with `plot`
    assert status["good"] == "finished" and status["skip"] == "diverged (non-finite train loss at step 4)"
    assert status["nan"].startswith("diverged") and status["stopped"] == "diverged (exploded)"


def test_plot_of_several_runs_skips_the_own_figure_of_one_with_no_rows_yet(
    finished: Path, data: Path, tmp_path: Path, figures: list[Any]
) -> None:
    blowup = [*debug_overrides(data, 12), "optim.lr=1e6", "optim.warmup_steps=0", "optim.grad_clip=0.0"]
    blowup += ["train.log_interval=100"]  # NaN before the first row is logged
    with pytest.raises(NonFiniteLossError):
        train(resolve_run_config("debug", None, blowup), tmp_path / "early")
    assert rows_of(tmp_path / "early") == []
    good = copy_run(finished, tmp_path / "good")
    written = plots.plot_runs([good, tmp_path / "early"])
    assert (good / "plots" / "curves_step.png") in written
    assert not (tmp_path / "early" / "plots" / "curves_step.png").exists()
    assert any(path.name.startswith("compare_step") for path in written)
    with pytest.raises(DataError, match="no metrics to plot"):  # alone, it is still one clear error
        plots.plot_runs([tmp_path / "early"])


def test_runs_reads_a_finished_runs_best_loss_and_time_from_its_summary_and_guards_its_out_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tiny_trajectories(tmp_path)
    run = tmp_path / "runs" / "a"
    summary = train(resolve_run_config("debug", None, debug_overrides(data, 6)), run)
    metrics = run / "metrics.jsonl"
    rows = metrics.read_text().splitlines()
    metrics.write_text(rows[0] + "\n")  # torn after its first row: no eval row left
    row = runs_table(tmp_path / "runs")[0]
    assert row.status == "finished" and row.best_val_loss == summary["best_val_loss"]
    assert row.elapsed_s == summary["elapsed_s"]
    first = json.loads(rows[0])
    metrics.write_text("\n".join([*rows[:1], json.dumps({**first, "step": 3, "val_loss": float("nan")}), *rows[1:]]))
    assert main(["runs", str(tmp_path / "runs"), "--json"]) == 0
    json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    config_before = (run / "config.toml").read_text()
    assert main(["runs", str(tmp_path / "runs"), "--out", str(run / "config.toml")]) == 2
    assert "no experiment log" in capsys.readouterr().err and (run / "config.toml").read_text() == config_before
    log = tmp_path / "log.md"
    assert main(["runs", str(tmp_path / "runs"), "--out", str(log)]) == 0
    assert main(["runs", str(tmp_path / "runs"), "--out", str(log)]) == 0  # an earlier log is replaced
