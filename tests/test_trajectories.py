"""The 7-DOF trajectory generator: bit-compatibility with the course's files, fast mode, argument errors."""

from __future__ import annotations

import numpy as np
import pytest

from scratchlm.data.trajectories import (
    LINK_LENGTHS_J,
    TrajectoryData,
    forward_kinematics,
    generate_course_trajectories,
    generate_trajectories,
    simulate_v2,
)
from scratchlm.data.trajectory_io import load_trajectories
from scratchlm.errors import ConfigError, DataError

REFERENCES = {"v2": "course_v2_seed42_1000.pkl", "v1": "course_v1_trajectories_1000.pkl"}


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_course_mode_reproduces_the_course_files_exactly(shared_data, version):
    reference = load_trajectories(shared_data / "scratch1" / REFERENCES[version])
    assert reference.states_NTS.shape == (1000, 50, 10) and reference.actions_NT.shape == (1000, 50)
    ours = generate_trajectories(1000, 50, seed=42, version=version)
    assert np.array_equal(ours.actions_NT, reference.actions_NT)
    assert np.array_equal(ours.states_NTS, reference.states_NTS)  # bitwise, float32


def test_course_mode_uses_its_own_generator_and_leaves_numpys_global_alone():
    np.random.seed(123)
    expected_next = np.random.RandomState(123).random_sample()
    generate_trajectories(3, 5, seed=42)
    assert np.random.random_sample() == expected_next


def test_generating_from_the_seeded_global_generator_is_the_same_dataset():
    np.random.seed(7)
    from_global = generate_course_trajectories(np.random, 20, 12)
    private = generate_trajectories(20, 12, seed=7)
    assert np.array_equal(from_global.actions_NT, private.actions_NT)
    assert np.array_equal(from_global.states_NTS, private.states_NTS)


def test_a_prefix_of_a_larger_course_dataset_is_the_smaller_dataset():
    # The stream is sequential per trajectory, so chunking cannot change the result.
    small = generate_trajectories(300, 10, seed=3)
    large = generate_trajectories(600, 10, seed=3)
    assert np.array_equal(large.actions_NT[:300], small.actions_NT)
    assert np.array_equal(large.states_NTS[:300], small.states_NTS)


def test_forward_kinematics_of_the_straight_arm_and_batching():
    assert np.allclose(forward_kinematics(np.zeros(7)), [LINK_LENGTHS_J.sum(), 0.0, 0.0])
    up = forward_kinematics(np.full(7, np.pi / 2))
    assert np.allclose(up, [0.0, LINK_LENGTHS_J.sum(), LINK_LENGTHS_J[:3].sum()])
    joints_NJ = np.random.default_rng(0).uniform(-3, 3, size=(5, 7))
    batched = forward_kinematics(joints_NJ)
    assert np.array_equal(batched, np.stack([forward_kinematics(q) for q in joints_NJ]))


def test_states_are_the_joints_then_their_end_effector():
    data = generate_trajectories(4, 6, seed=0)
    states = data.states_NTS.astype(np.float64)
    assert np.allclose(states[..., 7:], forward_kinematics(states[..., :7]), atol=1e-6)
    assert np.abs(states[..., :7]).max() <= np.pi + 1e-6


def test_fast_mode_is_deterministic_different_and_statistically_alike():
    fast_a = generate_trajectories(2000, 50, seed=5, fast=True)
    fast_b = generate_trajectories(2000, 50, seed=5, fast=True)
    course = generate_trajectories(2000, 50, seed=5)
    assert np.array_equal(fast_a.actions_NT, fast_b.actions_NT)
    assert np.array_equal(fast_a.states_NTS, fast_b.states_NTS)
    assert not np.array_equal(fast_a.actions_NT, course.actions_NT)
    # Same dynamics: the octant histograms (8 x 32-token bands) of the two modes agree closely.
    hist_fast = np.bincount(fast_a.actions_NT.ravel() // 32, minlength=8) / fast_a.actions_NT.size
    hist_course = np.bincount(course.actions_NT.ravel() // 32, minlength=8) / course.actions_NT.size
    assert np.abs(hist_fast - hist_course).max() < 0.02
    assert abs(fast_a.states_NTS[..., 7:].mean() - course.states_NTS[..., 7:].mean()) < 0.05


def test_fast_and_course_modes_share_the_dynamics_given_the_same_draws():
    rng = np.random.default_rng(0)
    start_NJ = rng.uniform(-np.pi / 2, np.pi / 2, size=(64, 7))
    target_N3 = rng.uniform(-1.5, 1.5, size=(64, 3))
    ints_NT = rng.integers(-2, 3, size=(64, 30))
    normals_NTJ = rng.standard_normal((64, 30, 7))
    exact = simulate_v2(start_NJ, target_N3, ints_NT, normals_NTJ, exact_norms=True)
    fast = simulate_v2(start_NJ, target_N3, ints_NT, normals_NTJ, exact_norms=False)
    assert np.array_equal(exact[1], fast[1])
    assert np.allclose(exact[0], fast[0], rtol=0, atol=1e-12)


def test_v2_tokens_encode_the_octant_and_distance_to_the_target():
    rng = np.random.default_rng(2)
    start_NJ = rng.uniform(-np.pi / 2, np.pi / 2, size=(200, 7))
    target_N3 = rng.uniform(-1.5, 1.5, size=(200, 3))
    noise_ints_NT = rng.integers(-2, 3, size=(200, 15))
    states_NTS, actions_NT = simulate_v2(start_NJ, target_N3, noise_ints_NT, rng.standard_normal((200, 15, 7)))
    error_NT3 = target_N3[:, None, :] - states_NTS[..., 7:]
    octant_NT = 4 * (error_NT3[..., 0] > 0) + 2 * (error_NT3[..., 1] > 0) + (error_NT3[..., 2] > 0)
    distance_bin_NT = np.floor(np.clip(np.linalg.norm(error_NT3, axis=-1) / 3.0, 0, 1) * 31)
    expected_NT = np.clip(octant_NT * 32 + distance_bin_NT + noise_ints_NT, 0, 255)
    assert np.array_equal(actions_NT, expected_NT)
    # The arm moves toward its target on average.
    distance_NT = np.linalg.norm(error_NT3, axis=-1)
    assert (distance_NT[:, -1] < distance_NT[:, 0]).mean() > 0.6


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"num_trajectories": 0}, "num_trajectories must be a positive integer"),
        ({"num_trajectories": -3}, "num_trajectories must be a positive integer"),
        ({"num_trajectories": 2.5}, "num_trajectories must be a positive integer"),
        ({"seq_length": 1}, "seq_length must be an integer >= 2"),
        ({"seq_length": 0}, "seq_length must be an integer >= 2"),
        ({"version": "v3"}, "version 'v3' is unknown"),
    ],
)
def test_bad_generation_arguments_get_one_clear_error(kwargs, needle):
    args = {"num_trajectories": 2, "seq_length": 5, "version": "v2", **kwargs}
    with pytest.raises(ConfigError, match=needle):
        generate_trajectories(args["num_trajectories"], args["seq_length"], seed=0, version=args["version"])


def test_trajectory_data_validates_its_arrays():
    states = np.zeros((2, 5, 10), dtype=np.float32)
    actions = np.zeros((2, 5), dtype=np.int64)
    TrajectoryData(states, actions, "v2")
    with pytest.raises(DataError, match="float32"):
        TrajectoryData(states.astype(np.float64), actions)
    with pytest.raises(DataError, match="int64"):
        TrajectoryData(states, actions.astype(np.int32))
    with pytest.raises(DataError, match="must agree"):
        TrajectoryData(states, actions[:, :4])
    with pytest.raises(DataError, match=r"must lie in \[0, 256\)"):
        TrajectoryData(states, actions + 256)
    with pytest.raises(DataError, match="at least 2 steps"):
        TrajectoryData(states[:, :1], actions[:, :1])
    bad = states.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        TrajectoryData(bad, actions)
    with pytest.raises(ConfigError, match="unknown"):
        TrajectoryData(states, actions, "v9")
