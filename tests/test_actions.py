"""Trajectory tokenizers: course action tokens, per-dimension uniform binning, and the sequence layouts."""

from __future__ import annotations

import numpy as np
import pytest

from scratchlm.data.actions import (
    ActionLayout,
    UnifiedLayout,
    UniformBinner,
    check_action_tokens,
    layout_from_dict,
)
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_dataset import split_trajectories
from scratchlm.errors import ConfigError, DataError


def test_binner_bounds_are_the_training_percentiles():
    values = np.random.default_rng(0).uniform(0, 100, size=(10000, 2))
    values[:, 1] *= 2
    binner = UniformBinner.fit(values, num_bins=64)
    assert np.allclose(binner.low_D, np.percentile(values, 1, axis=0))
    assert np.allclose(binner.high_D, np.percentile(values, 99, axis=0))
    assert binner.num_bins == 64 and binner.num_dims == 2


def test_binning_round_trips_to_bin_centres_within_half_a_bin():
    rng = np.random.default_rng(1)
    binner = UniformBinner(np.array([-1.0, 0.0]), np.array([1.0, 10.0]), num_bins=8)
    values = np.stack([rng.uniform(-1, 1, 1000), rng.uniform(0, 10, 1000)], axis=-1)
    bins = binner.encode(values)
    assert bins.dtype == np.int64 and bins.min() == 0 and bins.max() == 7
    half_width = (binner.high_D - binner.low_D) / 8 / 2
    assert (np.abs(binner.decode(bins) - values) <= half_width + 1e-12).all()
    assert np.array_equal(binner.encode(binner.decode(bins)), bins)  # centres map back to their bin
    assert np.allclose(binner.decode(np.array([[0, 0], [7, 7]])), [[-0.875, 0.625], [0.875, 9.375]])


def test_values_outside_the_bounds_clip_to_the_edge_bins_and_count_as_clipped():
    binner = UniformBinner(np.array([0.0]), np.array([1.0]), num_bins=4)
    assert binner.encode(np.array([[-5.0], [0.0], [1.0], [7.0]])).ravel().tolist() == [0, 0, 3, 3]
    report = binner.reconstruction_error(np.array([[-1.0], [0.5]]))
    assert report["clipped_fraction_D"].tolist() == [0.5]
    assert report["max_abs_D"][0] == pytest.approx(1.125)


def test_a_constant_dimension_decodes_to_its_value():
    binner = UniformBinner.fit(np.array([[3.0, 0.0], [3.0, 1.0], [3.0, 2.0]]), num_bins=4)
    bins = binner.encode(np.array([[3.0, 1.0]]))
    assert bins[0, 0] == 0 and binner.decode(bins)[0, 0] == 3.0


def test_binning_the_course_states_reconstructs_to_a_small_rmse():
    # 256 bins over a range r give a uniform-quantization RMSE of r / 256 / sqrt(12) inside the bounds;
    # the 2% of values clipped at the 1st/99th percentiles add to it.
    data = generate_trajectories(400, 50, seed=42)
    train, val = split_trajectories(data, val_fraction=0.25, seed=0)
    binner = UniformBinner.fit(train.states_NTS)
    report = binner.reconstruction_error(val.states_NTS)
    width_D = binner.high_D - binner.low_D
    assert report["rmse_D"].shape == (10,)
    assert (report["rmse_D"] >= width_D / 256 / np.sqrt(12) * 0.9).all()
    assert (report["rmse_D"] < 0.02 * width_D).all()
    assert (report["clipped_fraction_D"] < 0.05).all()


def test_binner_serializes_and_rejects_bad_settings():
    binner = UniformBinner(np.array([0.0, 1.0]), np.array([2.0, 3.0]), 16)
    again = UniformBinner.from_dict(binner.to_dict())
    assert np.array_equal(again.low_D, binner.low_D) and again.num_bins == 16
    with pytest.raises(ConfigError, match="high >= low"):
        UniformBinner(np.array([1.0]), np.array([0.0]))
    with pytest.raises(ConfigError, match="num_bins"):
        UniformBinner(np.array([0.0]), np.array([1.0]), 0)
    with pytest.raises(ConfigError, match="percentiles"):
        UniformBinner.fit(np.zeros((3, 1)), percentiles=(99.0, 1.0))
    with pytest.raises(DataError, match="trailing dim of 2"):
        binner.encode(np.zeros((4, 3)))
    with pytest.raises(DataError, match=r"\[0, 16\)"):
        binner.decode(np.array([[0, 16]]))


def test_course_action_tokens_are_checked_not_changed():
    actions = np.array([[0, 17, 255]], dtype=np.int32)
    tokens = check_action_tokens(actions)
    assert tokens.dtype == np.int64 and tokens.tolist() == [[0, 17, 255]]
    with pytest.raises(DataError, match="must lie"):
        check_action_tokens(np.array([256]))
    with pytest.raises(DataError, match="integers"):
        check_action_tokens(np.array([1.0]))


def test_action_layout_is_the_course_sequence():
    data = generate_trajectories(3, 7, seed=0)
    tokens, is_action = ActionLayout().encode(data.states_NTS, data.actions_NT)
    assert np.array_equal(tokens, data.actions_NT) and is_action.all()
    assert ActionLayout().vocab_size == 256


def test_unified_layout_interleaves_states_and_actions_in_disjoint_id_ranges():
    data = generate_trajectories(6, 5, seed=0)
    binner = UniformBinner.fit(data.states_NTS, num_bins=32)
    layout = UnifiedLayout(binner)
    assert layout.tokens_per_step == 11 and layout.action_offset == 320 and layout.vocab_size == 576
    tokens, is_action = layout.encode(data.states_NTS, data.actions_NT)
    assert tokens.shape == (6, 55) and is_action.shape == (6, 55)
    step_tokens = tokens.reshape(6, 5, 11)
    for d in range(10):
        assert ((step_tokens[..., d] >= 32 * d) & (step_tokens[..., d] < 32 * (d + 1))).all()
    assert np.array_equal(step_tokens[..., 10], data.actions_NT + 320)
    assert np.array_equal(np.flatnonzero(is_action[0]), np.arange(10, 55, 11))
    states, actions = layout.decode(tokens)
    assert np.array_equal(actions, data.actions_NT)
    assert np.allclose(states, binner.decode(binner.encode(data.states_NTS)))
    assert "action: ids [320, 576)" in layout.describe()
    assert layout_from_dict(layout.to_dict()).vocab_size == 576
    assert layout_from_dict(ActionLayout().to_dict()) == ActionLayout()
