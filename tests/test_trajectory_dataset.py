"""Trajectory datasets: split by trajectory, whole-trajectory batches, exact resume, action metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scratchlm.config import ModelConfig
from scratchlm.data.actions import UnifiedLayout, UniformBinner
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_dataset import (
    EpochBatches,
    TokenSequences,
    iterate_batches,
    make_sequences,
    split_trajectories,
)
from scratchlm.data.trajectory_metrics import (
    V2_LOSS_FLOOR,
    ActionMetrics,
    action_metrics,
    evaluate_actions,
    loss_floor,
)
from scratchlm.errors import ConfigError, DataError
from scratchlm.model import IGNORE_INDEX, TransformerLM
from scratchlm.nn.functional import MAX_LOG_PERPLEXITY, cross_entropy


@pytest.fixture(scope="module")
def data():
    return generate_trajectories(40, 12, seed=0)


def test_split_is_by_whole_trajectory_seeded_and_complete(data):
    train, val = split_trajectories(data, val_fraction=0.25, seed=3)
    assert (train.num_trajectories, val.num_trajectories) == (30, 10)
    rows = {tuple(r) for r in np.concatenate([train.actions_NT, val.actions_NT])}
    assert rows == {tuple(r) for r in data.actions_NT}
    again, _ = split_trajectories(data, val_fraction=0.25, seed=3)
    other, _ = split_trajectories(data, val_fraction=0.25, seed=4)
    assert np.array_equal(again.actions_NT, train.actions_NT)
    assert not np.array_equal(other.actions_NT, train.actions_NT)
    assert train.version == "v2"


def test_split_rejects_impossible_requests(data):
    with pytest.raises(ConfigError, match="val_fraction"):
        split_trajectories(data, val_fraction=1.0)
    with pytest.raises(DataError, match="cannot split 1"):
        split_trajectories(data.subset(np.array([0])), 0.5)
    tiny_train, tiny_val = split_trajectories(data.subset(np.array([0, 1])), 0.01)
    assert (tiny_train.num_trajectories, tiny_val.num_trajectories) == (1, 1)


def test_batches_are_whole_trajectories_shifted_by_one(data):
    seqs = make_sequences(data)
    inputs, targets = seqs.batch(np.array([5, 2]))
    assert inputs.dtype == torch.int64 and inputs.shape == targets.shape == (2, 11)
    assert torch.equal(inputs, torch.from_numpy(data.actions_NT[[5, 2], :-1]))
    assert torch.equal(targets, torch.from_numpy(data.actions_NT[[5, 2], 1:]))


def test_unified_targets_are_ignored_except_at_actions(data):
    layout = UnifiedLayout(UniformBinner.fit(data.states_NTS, num_bins=16))
    seqs = make_sequences(data, layout)
    assert seqs.vocab_size == 16 * 10 + 256 and seqs.seq_len == 12 * 11
    inputs, targets = seqs.batch(np.array([0]))
    kept = (targets != IGNORE_INDEX).nonzero()[:, 1]
    # Target j is token j + 1: the actions sit at token positions 10, 21, ... so targets 9, 20, ...
    assert kept.tolist() == list(range(9, 12 * 11 - 1, 11))
    assert torch.equal(targets[0, kept] - layout.action_offset, torch.from_numpy(data.actions_NT[0]))
    assert int(inputs.max()) < seqs.vocab_size


def test_an_epoch_visits_every_trajectory_once_in_a_seeded_order(data):
    seqs = make_sequences(data)
    batches = EpochBatches(seqs, batch_size=8, seed=1)
    assert batches.steps_per_epoch == 5
    seen = torch.cat([x for x, _ in batches])
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, data.actions_NT[:, :-1].tolist()))
    first_epoch = [tuple(r) for r in seen.tolist()]
    second_epoch = [tuple(r) for r in torch.cat([x for x, _ in batches]).tolist()]
    assert batches.epoch == 1 and first_epoch != second_epoch


def test_resuming_from_a_state_dict_continues_with_the_very_next_batch(data):
    seqs = make_sequences(data)
    reference = EpochBatches(seqs, batch_size=6, seed=9)
    expected = [reference.next_batch()[0] for _ in range(20)]  # crosses three epoch boundaries
    interrupted = EpochBatches(seqs, batch_size=6, seed=9)
    for _ in range(7):
        interrupted.next_batch()
    state = interrupted.state_dict()
    resumed = EpochBatches(seqs, batch_size=6, seed=9)
    resumed.load_state_dict(state)
    assert (state["epoch"], state["position"]) == (1, 1)
    for step in range(7, 20):
        assert torch.equal(resumed.next_batch()[0], expected[step])


def test_resume_refuses_a_different_setup(data):
    state = EpochBatches(make_sequences(data), batch_size=6, seed=9).state_dict()
    with pytest.raises(ConfigError, match="saved batch_size is 6"):
        EpochBatches(make_sequences(data), batch_size=5, seed=9).load_state_dict(state)
    with pytest.raises(ConfigError, match="exceeds"):
        EpochBatches(make_sequences(data), batch_size=41)


def test_evaluation_pass_covers_every_row_once_in_order(data):
    seqs = make_sequences(data)
    rows = torch.cat([x for x, _ in iterate_batches(seqs, batch_size=16)])
    assert torch.equal(rows, torch.from_numpy(data.actions_NT[:, :-1]))


def test_token_sequences_reject_bad_shapes():
    with pytest.raises(DataError, match="at least 2 tokens"):
        TokenSequences(np.zeros((2, 1), np.int64), np.ones((2, 1), bool), 256)


def test_action_metrics_on_known_logits():
    targets = torch.tensor([[10, 20, IGNORE_INDEX, 30]])
    logits = torch.full((1, 4, 256), -10.0)
    logits[0, 0, 10] = 10.0  # exact
    logits[0, 1, 22] = 10.0  # two bins off
    logits[0, 3, 40] = 10.0  # far off
    result = action_metrics(logits, targets)
    assert result["num_actions"] == 3
    assert result["action_accuracy"] == pytest.approx(1 / 3)
    assert result["action_within_2"] == pytest.approx(2 / 3)
    assert result["loss"] == pytest.approx(cross_entropy(logits, targets).item(), rel=1e-6)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))


def test_accuracy_only_considers_action_ids_in_a_unified_vocabulary():
    offset = 100
    targets = torch.tensor([[offset + 5]])
    logits = torch.zeros(1, 1, offset + 256)
    logits[0, 0, 3] = 50.0  # a state id scores highest, but it is not an action
    logits[0, 0, offset + 5] = 10.0
    result = action_metrics(logits, targets, action_offset=offset)
    assert result["action_accuracy"] == 1.0


def test_metrics_accumulate_exactly_over_batches():
    torch.manual_seed(0)
    logits = torch.randn(6, 5, 256)
    targets = torch.randint(0, 256, (6, 5))
    targets[0, :2] = IGNORE_INDEX
    whole = action_metrics(logits, targets)
    accumulator = ActionMetrics()
    for lo in range(0, 6, 4):
        accumulator.update(logits[lo : lo + 4], targets[lo : lo + 4])
    assert accumulator.compute() == pytest.approx(whole)


def test_loss_floor_is_ln5_for_v2_only():
    assert loss_floor("v2") == pytest.approx(1.6094379) == V2_LOSS_FLOOR
    assert loss_floor("v1") is None and loss_floor(None) is None


def test_evaluate_actions_reports_the_floor_beside_the_loss(data):
    torch.manual_seed(0)
    model = TransformerLM(ModelConfig(vocab_size=256, context_length=11, d_model=32, num_layers=1, num_heads=2))
    model.train()
    result = evaluate_actions(model, make_sequences(data), batch_size=16, version="v2")
    assert model.training  # restored
    assert result["num_actions"] == 40 * 11
    assert result["loss_floor"] == pytest.approx(math.log(5))
    assert result["loss_above_floor"] == pytest.approx(result["loss"] - math.log(5))
    assert abs(result["loss"] - math.log(256)) < 1.5  # an untrained model is near uniform


@pytest.mark.cuda
def test_batches_and_metrics_on_the_gpu(data):
    seqs = make_sequences(data)
    inputs, targets = EpochBatches(seqs, batch_size=8, device="cuda").next_batch()
    assert inputs.is_cuda and targets.is_cuda
    model = TransformerLM(ModelConfig(vocab_size=256, context_length=11, d_model=32, num_layers=1, num_heads=2))
    on_gpu = evaluate_actions(model.cuda(), seqs, batch_size=16, device="cuda", version="v2")
    on_cpu = evaluate_actions(model.cpu(), seqs, batch_size=16, device="cpu", version="v2")
    assert on_gpu["loss"] == pytest.approx(on_cpu["loss"], rel=1e-4)
    assert on_gpu["action_accuracy"] == pytest.approx(on_cpu["action_accuracy"], abs=0.01)


def test_metrics_of_a_diverged_model_report_a_capped_perplexity_not_an_overflow():
    logits = torch.zeros(2, 3, 256)
    logits[..., 0] = 5000.0  # every target below gets ~5000 nats: exp(5000) overflows a float
    result = action_metrics(logits, torch.ones(2, 3, dtype=torch.long))
    assert result["loss"] == pytest.approx(5000.0)
    assert result["perplexity"] == pytest.approx(math.exp(MAX_LOG_PERPLEXITY))


@pytest.mark.parametrize(("states", "trains"), [("all", False), ("ee", False), ("joints", True)])
def test_a_unified_run_on_joint_angles_only_names_the_state_subset(
    tmp_path, capsys: pytest.CaptureFixture[str], states: str, trains: bool
) -> None:
    import json

    from scratchlm.cli import main
    from scratchlm.data.trajectories import TrajectoryData
    from scratchlm.data.trajectory_io import save_trajectories

    full = generate_trajectories(60, seq_length=12, seed=3, fast=True)
    path = tmp_path / "joints.pkl"
    save_trajectories(TrajectoryData(full.states_NTS[..., :7].copy(), full.actions_NT, full.version), path)
    dims = 7 if states == "joints" else (3 if states == "ee" else 10)
    sets = [f"data.path={json.dumps(str(path))}", 'data.layout="unified"', f'data.states="{states}"',
            "data.state_bins=8", f"model.vocab_size={dims * 8 + 256}", f"model.context_length={12 * (dims + 1)}",
            "train.max_steps=1", "train.progress=false"]  # fmt: skip
    overrides = [a for s in sets for a in ("--set", s)]
    code = main(["train", "--preset", "debug", "--out", str(tmp_path / "run"), *overrides])
    err = capsys.readouterr().err
    assert (code == 0) is trains, err
    if not trains:
        assert "holds 7 per step" in err and "Traceback" not in err
