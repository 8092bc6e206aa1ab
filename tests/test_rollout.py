"""Trajectory rollouts: cached equals uncached, actions-only rollouts are plain generation, metrics, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scratchlm.cli import main
from scratchlm.config import RunConfig
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.infer.generate import generate
from scratchlm.infer.rollout import Rollout, rollout_actions, rollout_metrics
from scratchlm.infer.runs import load_run, validation_trajectories
from scratchlm.model import TransformerLM
from scratchlm.presets import resolve_run_config, to_toml
from scratchlm.train.checkpoint import save_checkpoint

STEPS = 12
STATE_BINS = 8


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs with random weights over one small trajectory file: run-actions/ and run-unified/."""
    root = tmp_path_factory.mktemp("rollout")
    save_trajectories(generate_trajectories(40, seq_length=STEPS, seed=3, fast=True), root / "traj.pkl")
    for layout in ("actions", "unified"):
        overrides = [f"data.path={json.dumps(str(root / 'traj.pkl'))}", f'data.layout="{layout}"',
                     f"data.state_bins={STATE_BINS}"]  # fmt: skip
        if layout == "unified":  # 10 state dims x 8 bins + 256 actions; 12 steps x 11 tokens
            overrides += ["model.vocab_size=336", f"model.context_length={STEPS * 11}"]
        config = resolve_run_config("debug", None, overrides)
        run = root / f"run-{layout}"
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.toml").write_text(to_toml(config.to_tables()), encoding="utf-8")
        save_checkpoint(TransformerLM(config.model), None, 0, run / "checkpoints" / "best.pt")
    return root


@pytest.mark.parametrize("layout", ["actions", "unified"])
def test_cached_rollouts_equal_uncached_ones(runs: Path, layout: str) -> None:
    loaded = load_run(runs / f"run-{layout}")
    val = validation_trajectories(loaded.config, loaded.model)
    assert val.tokens_NL.shape == (4, STEPS * val.tokens_per_step)
    kwargs = {"tokens_per_step": val.tokens_per_step, "action_offset": val.action_offset,
              "action_vocab": val.action_vocab, "context_steps": 3, "batch_size": 3}  # fmt: skip
    cached = rollout_actions(loaded.model, val.tokens_NL, **kwargs)
    uncached = rollout_actions(loaded.model, val.tokens_NL, use_cache=False, **kwargs)
    assert cached.predicted_NH.shape == (4, STEPS - 3)
    np.testing.assert_array_equal(cached.predicted_NH, uncached.predicted_NH)
    np.testing.assert_array_equal(
        cached.true_NH,
        val.tokens_NL[:, 3 * val.tokens_per_step + val.tokens_per_step - 1 :: val.tokens_per_step] - val.action_offset,
    )
    # Horizon 1 by hand: the argmax among action ids after the true context (and the next step's states).
    fed = torch.as_tensor(val.tokens_NL[:, : 4 * val.tokens_per_step - 1])
    with torch.no_grad():
        logits_NV = loaded.model(fed)[0][:, -1, val.action_offset : val.action_offset + val.action_vocab]
    np.testing.assert_array_equal(cached.predicted_NH[:, 0], logits_NV.argmax(-1).numpy())


def test_an_actions_only_rollout_is_greedy_generation_from_the_context(runs: Path) -> None:
    loaded = load_run(runs / "run-actions")
    val = validation_trajectories(loaded.config, loaded.model)
    rollout = rollout_actions(loaded.model, val.tokens_NL, tokens_per_step=1, action_offset=0, action_vocab=256,
                              context_steps=5)  # fmt: skip
    generated = generate(loaded.model, val.tokens_NL[:, :5].tolist(), max_new_tokens=STEPS - 5, temperature=0.0)
    assert rollout.predicted_NH.tolist() == generated.tokens


def test_rollout_metrics_by_horizon() -> None:
    true_NH = np.array([[32 * 4 + 10, 32 * 4 + 10], [5, 200]])
    predicted_NH = np.array([[32 * 4 + 10, 32 * 4 + 12], [32 + 5, 201]])
    metrics = rollout_metrics(Rollout(predicted_NH, true_NH, context_steps=7), v2_actions=True)
    assert metrics["horizon"] == [1, 2]
    assert metrics["exact"] == [0.5, 0.0]
    assert metrics["within_2"] == [0.5, 1.0]
    assert metrics["octant"] == [0.5, 1.0]
    assert metrics["magnitude_abs_error"] == [0.0, 1.5]  # 0 and 0, then 2 and 1
    assert metrics["mean_exact"] == 0.25 and metrics["context_steps"] == 7
    assert "octant" not in rollout_metrics(Rollout(predicted_NH, true_NH, 7), v2_actions=False)


def test_validation_rows_are_the_training_split(runs: Path) -> None:
    from scratchlm.data.trajectory_dataset import split_trajectories
    from scratchlm.data.trajectory_io import load_trajectories

    loaded = load_run(runs / "run-actions")
    config: RunConfig = loaded.config
    _, val = split_trajectories(load_trajectories(config.data.path), config.data.val_fraction, config.data.split_seed)
    np.testing.assert_array_equal(validation_trajectories(config, loaded.model).tokens_NL, val.actions_NT)


def test_cli_rollouts(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--run", str(runs / "run-unified"), "--from-val", "2", "--context-steps", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "validation trajectory 2: 4 steps given, 8 predicted"
    assert len(out) == 2 + 8 + 1 and out[-1].startswith("exact ")
    metrics_path = tmp_path / "metrics.json"
    args = ["generate", "--run", str(runs / "run-actions"), "--rollout", "0", "--json", str(metrics_path)]
    assert main(args) == 0
    assert "mean" in capsys.readouterr().out
    metrics = json.loads(metrics_path.read_text())
    assert metrics["num_trajectories"] == 4 and len(metrics["octant"]) == STEPS - 10
    assert main(["generate", "--run", str(runs / "run-actions"), "--prompt-actions", "1,2,3", "--max-new-tokens", "4",
                 "--temperature", "0"]) == 0  # fmt: skip
    assert len(capsys.readouterr().out.strip().split(",")) == 4


@pytest.mark.parametrize(
    ("run", "extra", "match"),
    [
        ("unified", ["--prompt-actions", "1,2"], "actions-only run"),
        ("actions", ["--prompt-actions", "1,x"], "comma-separated integers"),
        ("actions", ["--prompt-actions", "1,999"], "must lie in [0, 256)"),
        ("actions", ["--from-val", "9"], "--from-val must be in [0, 3]"),
        ("actions", ["--from-val", "0", "--context-steps", "12"], "--context-steps must be in [1, 11]"),
        ("actions", ["--prompt", "hello"], "trajectory run"),
    ],
)
def test_cli_rollout_bad_input(
    runs: Path, capsys: pytest.CaptureFixture[str], run: str, extra: list[str], match: str
) -> None:
    assert main(["generate", "--run", str(runs / f"run-{run}"), *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_rollouts_and_attention_maps_refuse_data_changed_since_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scratchlm.analysis.attention_runs import run_attention_figures
    from scratchlm.errors import DataError

    data = tmp_path / "traj.pkl"
    save_trajectories(generate_trajectories(40, seq_length=STEPS, seed=3, fast=True), data)
    train = ["train", "--preset", "debug", "--set", f"data.path={json.dumps(str(data))}", "--set", "train.max_steps=2",
             "--set", "train.progress=false", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(train) == 0
    assert main(["generate", "--run", str(tmp_path / "run"), "--rollout", "0"]) == 0
    capsys.readouterr()
    # Regenerated with more rows: the old validation split's place now holds rows the run trained on.
    save_trajectories(generate_trajectories(80, seq_length=STEPS, seed=3, fast=True), data)
    assert main(["generate", "--run", str(tmp_path / "run"), "--rollout", "0"]) != 0
    err = capsys.readouterr().err
    assert "is not what" in err and "Traceback" not in err
    with pytest.raises(DataError, match="some of them trained on"):
        run_attention_figures(tmp_path / "run", sample=0, out_dir=tmp_path / "plots")
