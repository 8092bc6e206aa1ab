"""Divergence in lr sweeps whose runs end before their warmup does (the rules after warmup never apply)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from scratchlm.analysis.sweep import DivergenceMonitor, ended_above_start, lr_sweep, start_loss
from scratchlm.presets import resolve_run_config
from tests.experiment_helpers import debug_overrides, tiny_trajectories

UNIFORM = math.log(256)  # the debug preset's vocabulary


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_trajectories(tmp_path_factory.mktemp("data"))


def short(data: Path) -> list[str]:
    """16 steps, all of them inside the 100-step warmup."""
    return [*debug_overrides(data, 16), "optim.warmup_steps=100", "optim.grad_clip=0.0"]


def test_a_run_exploding_inside_its_warmup_is_diverged_and_a_healthy_one_is_not(tmp_path: Path, data: Path) -> None:
    results = lr_sweep("debug", [3e-3, 10.0], tmp_path / "sweep", short(data))
    by_lr = {r["lr"]: r for r in results["runs"]}
    assert by_lr[10.0]["status"] == "diverged" and by_lr[10.0]["steps"] < 16
    assert "blew up past 2x the loss it started from" in by_lr[10.0]["reason"]
    assert by_lr[3e-3]["status"] == "finished" and by_lr[3e-3]["final_val_loss"] < UNIFORM
    assert results["smallest_diverged_lr"] == 10.0 and results["largest_stable_lr"] == 3e-3
    text = (tmp_path / "sweep" / "results.md").read_text()
    assert "No rate diverged" not in text and "warmup included" in text


def test_a_short_run_ending_above_its_start_is_diverged(tmp_path: Path, data: Path) -> None:
    results = lr_sweep("debug", [1.0], tmp_path / "sweep", short(data))
    (run,) = results["runs"]
    assert run["status"] == "diverged" and run["reason"].startswith("ended at training loss")
    assert run["final_val_loss"] is None and results["best_lr"] is None


def test_a_healthy_run_that_starts_far_above_uniform_is_not_flagged(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An output layer initialized 20x too large (a user's own init, say) starts far above ln V, then learns:
    # the 2x rule must measure from that start, not from ln V.
    from scratchlm.model import TransformerLM

    build = TransformerLM.__init__

    def loud_head(self: TransformerLM, *args: object, **kwargs: object) -> None:
        build(self, *args, **kwargs)
        with torch.no_grad():
            self.lm_head.weight.mul_(20.0)

    monkeypatch.setattr(TransformerLM, "__init__", loud_head)
    start = start_loss(resolve_run_config("debug", None, short(data)))
    assert start > 2 * UNIFORM
    results = lr_sweep("debug", [3e-3], tmp_path / "sweep", short(data))
    assert results["runs"][0]["status"] == "finished" and results["start_loss"] == pytest.approx(start)


def test_the_monitor_judges_warmup_rows_against_the_start() -> None:
    monitor = DivergenceMonitor(warmup_steps=100, start_loss=UNIFORM)
    assert monitor({"step": 2, "train_loss": 5.6}) is None
    assert monitor({"step": 4, "train_loss": 10.5}) is None  # a rise below twice the start is tolerated
    assert "blew up past 2x the loss it started from 5.545" in monitor({"step": 6, "train_loss": 11.5})
    fallback = DivergenceMonitor(warmup_steps=100)  # no start given: the first logged loss stands in
    assert fallback({"step": 2, "train_loss": 4.0}) is None
    assert "blew up" in fallback({"step": 4, "train_loss": 8.5})


def test_where_a_run_ends_is_judged_against_the_more_lenient_start() -> None:
    assert ended_above_start([5.6, 5.5, 5.7], UNIFORM) is None  # within 5% of the start: noise
    assert "more than 5% above where it started (5.600)" in ended_above_start([5.6, 6.8, 7.6], UNIFORM)
    assert ended_above_start([20.0, 9.0, 7.0], 17.9) is None  # a high start, falling: healthy
    assert ended_above_start([], UNIFORM) is None
