"""Synthetic 7-DOF robot-arm trajectories, bit-compatible with the VLA Foundations Scratch-1 course.

The course's `generate_data.py` seeds NumPy's legacy global generator and, per trajectory, draws a start
pose (7 joint angles in [-pi/2, pi/2]) and a target (3 coordinates in [-1.5, 1.5]), then walks the arm
toward the target for T steps with noisy joint updates. Every step records a state (7 joints + the
end-effector position from forward kinematics) and one action token in [0, 256).

Two action encodings exist:
- "v2" (the course's current one, our default): token = octant of the direction to the target * 32 +
  distance bin (0..31) + uniform noise in {-2..2}, so no model pays less than ln 5 nats per token (for a
  model of the actions alone the joint noise makes the clean token uncertain too:
  benchmarks/trajectory_floor.py estimates ~1.656);
- "v1" (the course's shipped sample): token = the mean joint delta of the step, quantized to 256 bins.

Two ways to run the same dynamics:
- course mode (`generate_trajectories(..., fast=False)`): NumPy's legacy MT19937 stream, drawn in the
  course's exact call order, gives the very same states and actions as the course for the same seed. The
  random draws of a step never depend on the arm's state, so they are drawn first (a cheap Python loop of
  RNG calls) and the arithmetic then runs vectorized across trajectories with the same float64 operations;
- fast mode (`fast=True`): every draw comes in bulk from `np.random.Generator` (PCG64). Same dynamics and
  distributions, NOT the course's numbers; deterministic for a given (seed, num_trajectories, seq_length).

Shapes: N = trajectories, T = steps, J = 7 joints, S = 10 state dims (joints then end-effector x, y, z).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from scratchlm.data.actions import COURSE_ACTION_VOCAB
from scratchlm.errors import ConfigError, DataError, OutOfMemoryError
from scratchlm.memory import available_memory_bytes, format_bytes

VERSIONS = ("v2", "v1")
LINK_LENGTHS_J = np.array([0.3, 0.3, 0.25, 0.25, 0.2, 0.15, 0.1])
NUM_JOINTS = 7
STATE_DIM = 10
DEFAULT_NOISE_STD = 0.02  # v2's joint noise, `noise_std` in the course's generate_trajectory

# Trajectories per vectorized chunk. Course mode: any size gives identical results (the stream is
# sequential), small chunks just make the progress bar smoother. Fast mode: part of the definition of
# the output (each chunk draws its noise in bulk), so changing it changes the data for a given seed.
COURSE_CHUNK = 256
FAST_CHUNK = 8192

ProgressCallback = Callable[[int], None]

# Memory while generating, from peak RSS measured in both modes and versions (T = 50 to 100,000): the output
# arrays, plus the float64 simulation arrays and random draws of one chunk (at most ~250 bytes per
# trajectory-step, course v1), plus, when the file is written, the pickle's in-memory copies (peak 3.1x the
# output arrays' size).
OUTPUT_BYTES_PER_STEP = STATE_DIM * 4 + 8  # float32 states + one int64 action
CHUNK_BYTES_PER_STEP = 320
SAVE_PEAK_FACTOR = 3.25


class LegacyRandom(Protocol):
    """What the course's generator calls: `np.random.RandomState` or the `np.random` module itself."""

    def uniform(self, low: float, high: float, size: int) -> np.ndarray: ...
    def randint(self, low: int, high: int) -> int: ...
    def randn(self, *shape: int) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class TrajectoryData:
    """A trajectory dataset: states_NTS float32 (N, T, S) and actions_NT int64 (N, T) in [0, 256).

    `version` is "v2" or "v1" when known (it decides whether the ln 5 loss floor applies), else None.
    Construction validates shapes, dtypes, finiteness and the action range.
    """

    states_NTS: np.ndarray
    actions_NT: np.ndarray
    version: str | None = None

    def __post_init__(self) -> None:
        check_trajectory_arrays(self.states_NTS, self.actions_NT)
        if self.version is not None and self.version not in VERSIONS:
            raise ConfigError(f"trajectory version {self.version!r} is unknown; use one of {', '.join(VERSIONS)}.")

    @property
    def num_trajectories(self) -> int:
        return self.actions_NT.shape[0]

    @property
    def seq_length(self) -> int:
        return self.actions_NT.shape[1]

    @property
    def state_dim(self) -> int:
        return self.states_NTS.shape[2]

    def subset(self, indices: np.ndarray) -> TrajectoryData:
        """The trajectories at `indices` (1-D integer array), in that order."""
        return TrajectoryData(self.states_NTS[indices], self.actions_NT[indices], self.version)


def check_trajectory_arrays(
    states_NTS: np.ndarray, actions_NT: np.ndarray, action_vocab: int = COURSE_ACTION_VOCAB, source: str = "data"
) -> None:
    """Raise DataError unless states are finite float32 (N, T, S), actions int64 (N, T) in [0, action_vocab)."""
    if not isinstance(states_NTS, np.ndarray) or states_NTS.dtype != np.float32 or states_NTS.ndim != 3:
        raise DataError(
            f"{source}: states must be a float32 array of shape (num_trajectories, seq_length, state_dim), "
            f"got {_describe(states_NTS)}."
        )
    if not isinstance(actions_NT, np.ndarray) or actions_NT.dtype != np.int64 or actions_NT.ndim != 2:
        raise DataError(
            f"{source}: actions must be an int64 array of shape (num_trajectories, seq_length), "
            f"got {_describe(actions_NT)}."
        )
    if states_NTS.shape[:2] != actions_NT.shape:
        raise DataError(
            f"{source}: states {states_NTS.shape} and actions {actions_NT.shape} must agree on "
            "(num_trajectories, seq_length); the file mixes two datasets."
        )
    num, steps = actions_NT.shape
    if num < 1 or steps < 2 or states_NTS.shape[2] < 1:
        raise DataError(
            f"{source}: need at least 1 trajectory of at least 2 steps with 1+ state dims, got states "
            f"{states_NTS.shape}; regenerate the data with a larger count."
        )
    lo, hi = int(actions_NT.min()), int(actions_NT.max())
    if lo < 0 or hi >= action_vocab:
        raise DataError(
            f"{source}: action tokens span [{lo}, {hi}] but must lie in [0, {action_vocab}); the file is not "
            "course-format action tokens (or needs a larger action vocabulary)."
        )
    if not np.isfinite(states_NTS).all():
        raise DataError(f"{source}: states contain NaN or Inf; the file is corrupt, regenerate it.")


# Detecting the version of a file that does not say (measured on the two course files and on 10,000 generated
# trajectories of each version and mode): v1's formula reproduces >= 96% of the actions of every single v1
# trajectory and <= 12% of any v2 one; the v2 octant test agrees on 36-94% of the steps of any 5 v2
# trajectories and on <= 21% of any 5 v1 ones (13% on average, about chance).
DETECT_MAX_TRAJECTORIES = 2000  # a prefix decides as well as the whole file and keeps loading fast
V1_MIN_STEPS = 20
V1_MIN_MATCH = 0.9
V2_MIN_STEPS = 245  # 5 course-length trajectories: fewer cannot tell v2 from other action tokens
V2_MIN_OCTANT_MATCH = 0.3
FK_TOLERANCE = 1e-5  # the end-effector columns are float32 roundings of forward_kinematics(joints)


def detect_version(states_NTS: np.ndarray, actions_NT: np.ndarray) -> str | None:
    """The course generator version ("v1" or "v2") that produced these arrays, from their contents; None if unsure.

    Both versions record the course arm (7 joints, then their forward kinematics), which rules out other
    data. v1's action is a function of the recorded states alone: the step's mean joint delta, quantized.
    v2's action is octant * 32 + distance bin (+-2 noise) of the direction to a target the file does not
    hold, but the first three joints step along that direction, so the signs of their steps predict the
    octant on most steps (64% in the course's file), against about 1 in 7 (the window's 36 of 256 tokens) for others.
    """
    if states_NTS.ndim != 3 or states_NTS.shape[2] != STATE_DIM or actions_NT.shape != states_NTS.shape[:2]:
        return None
    joints_NTJ = states_NTS[:DETECT_MAX_TRAJECTORIES, :, :NUM_JOINTS].astype(np.float64)
    actions_NT = actions_NT[:DETECT_MAX_TRAJECTORIES]
    ee_error = np.abs(forward_kinematics(joints_NTJ) - states_NTS[:DETECT_MAX_TRAJECTORIES, :, NUM_JOINTS:])
    if not ee_error.max() <= FK_TOLERANCE:
        return None
    # action t was taken between state t and state t + 1; the last action has no recorded outcome
    delta_NTJ = np.diff(joints_NTJ, axis=1)
    acted_NT = actions_NT[:, :-1]
    steps = acted_NT.size
    v1_NT = np.clip(((delta_NTJ.mean(axis=2) + 0.1) / 0.2 * 255).astype(np.int64), 0, 255)
    if steps >= V1_MIN_STEPS and (v1_NT == acted_NT).mean() >= V1_MIN_MATCH:
        return "v1"
    positive_NT3 = delta_NTJ[..., :3] > 0
    octant_NT = 4 * positive_NT3[..., 0] + 2 * positive_NT3[..., 1] + positive_NT3[..., 2]
    in_octant_NT = (acted_NT >= octant_NT * 32 - 2) & (acted_NT <= octant_NT * 32 + 31 + 2)
    if steps >= V2_MIN_STEPS and in_octant_NT.mean() >= V2_MIN_OCTANT_MATCH:
        return "v2"
    return None


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype} array of shape {x.shape}"
    return type(x).__name__


# ------------------------------------------------------------------------------------------- dynamics


def forward_kinematics(joints_NJ: np.ndarray) -> np.ndarray:
    """End-effector (x, y, z) of the course's planar-ish 7-link arm: (..., 7) joint angles -> (..., 3).

    x = sum(l cos q), y = sum(l sin q), z = sum over the first three links of l sin q. The sums run left
    to right over the last axis, as the course's `np.sum` does on a 7-vector, so results are bit-identical.
    """
    sin_NJ = np.sin(joints_NJ)
    x_N = np.sum(LINK_LENGTHS_J * np.cos(joints_NJ), axis=-1)
    y_N = np.sum(LINK_LENGTHS_J * sin_NJ, axis=-1)
    z_N = np.sum(LINK_LENGTHS_J[:3] * sin_NJ[..., :3], axis=-1)
    return np.stack([x_N, y_N, z_N], axis=-1)


def _course_norms(error_N3: np.ndarray) -> np.ndarray:
    """||error|| per row exactly as np.linalg.norm computes it on one 3-vector: sqrt(x.dot(x)).

    The 1-D dot goes through BLAS, whose rounding can differ from a vectorized sum of squares by an ulp;
    one dot per row keeps course mode bit-identical even at distance-bin boundaries.
    """
    return np.sqrt(np.fromiter((row.dot(row) for row in error_N3), dtype=np.float64, count=len(error_N3)))


def _fast_norms(error_N3: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("nd,nd->n", error_N3, error_N3))


def simulate_v2(
    start_NJ: np.ndarray,
    target_N3: np.ndarray,
    action_noise_NT: np.ndarray,
    joint_noise_NTJ: np.ndarray,
    noise_std: float = DEFAULT_NOISE_STD,
    exact_norms: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the v2 dynamics given all random draws; returns states (N, T, 10) float64 and actions (N, T) int64.

    action_noise_NT: integers in {-2..2}; joint_noise_NTJ: standard normals (scaled by noise_std here).
    """
    num, steps = action_noise_NT.shape
    norms = _course_norms if exact_norms else _fast_norms
    joints_NJ = start_NJ.astype(np.float64, copy=True)
    states_NTS = np.empty((num, steps, STATE_DIM))
    actions_NT = np.empty((num, steps), dtype=np.int64)
    for t in range(steps):
        ee_N3 = forward_kinematics(joints_NJ)
        states_NTS[:, t, :NUM_JOINTS] = joints_NJ
        states_NTS[:, t, NUM_JOINTS:] = ee_N3
        error_N3 = target_N3 - ee_N3
        dist_N = norms(error_N3)
        moving_N = dist_N > 1e-6
        # The course takes the octant from the unit direction, not from the error itself: error / dist can
        # underflow to 0 for a denormal component, which changes the octant, so divide as it does.
        direction_N3 = np.where(moving_N[:, None], error_N3 / np.where(moving_N, dist_N, 1.0)[:, None], 0.0)
        octant_N = 4 * (direction_N3[:, 0] > 0) + 2 * (direction_N3[:, 1] > 0) + (direction_N3[:, 2] > 0)
        distance_bin_N = (np.clip(dist_N / 3.0, 0, 1) * 31).astype(np.int64)  # int() truncates; values >= 0
        actions_NT[:, t] = np.clip(octant_N * 32 + distance_bin_N + action_noise_NT[:, t], 0, 255)
        delta_NJ = np.zeros((num, NUM_JOINTS))
        delta_NJ[:, :3] = np.where(moving_N[:, None], 0.05 * error_N3, 0.0)
        delta_NJ[:, 3:] = np.where(moving_N, 0.02 * np.abs(error_N3).max(axis=1), 0.0)[:, None]
        delta_NJ += noise_std * joint_noise_NTJ[:, t]
        delta_NJ = np.clip(delta_NJ, -0.15, 0.15)
        joints_NJ = np.clip(joints_NJ + delta_NJ, -np.pi, np.pi)
    return states_NTS, actions_NT


def simulate_v1(
    start_NJ: np.ndarray, target_N3: np.ndarray, noise_a_NTJ: np.ndarray, noise_b_NTJ: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Run the v1 dynamics given all random draws (two standard-normal 7-vectors per step)."""
    num, steps = noise_a_NTJ.shape[:2]
    joints_NJ = start_NJ.astype(np.float64, copy=True)
    states_NTS = np.empty((num, steps, STATE_DIM))
    actions_NT = np.empty((num, steps), dtype=np.int64)
    for t in range(steps):
        ee_N3 = forward_kinematics(joints_NJ)
        states_NTS[:, t, :NUM_JOINTS] = joints_NJ
        states_NTS[:, t, NUM_JOINTS:] = ee_N3
        delta_NJ = 0.02 * noise_a_NTJ[:, t]
        delta_NJ[:, :3] += 0.01 * (target_N3 - ee_N3)
        delta_NJ += 0.05 * noise_b_NTJ[:, t]
        delta_NJ = np.clip(delta_NJ, -0.1, 0.1)
        joints_NJ = np.clip(joints_NJ + delta_NJ, -np.pi, np.pi)
        actions_NT[:, t] = np.clip(((delta_NJ.mean(axis=1) + 0.1) / 0.2 * 255).astype(np.int64), 0, 255)
    return states_NTS, actions_NT


# ------------------------------------------------------------------------------------------ generators


def draw_course_step_noise(rng: LegacyRandom, steps: int, version: str) -> tuple[np.ndarray, np.ndarray]:
    """One trajectory's per-step draws, in the course's call order.

    v2: (randint(-2, 3), randn(7)) per step -> ((T,) ints, (T, 7) normals);
    v1: (randn(7), randn(7)) per step -> two (T, 7) normal arrays.
    """
    second_TJ = np.empty((steps, NUM_JOINTS))
    if version == "v2":
        ints_T = np.empty(steps, dtype=np.int64)
        for t in range(steps):
            ints_T[t] = rng.randint(-2, 3)
            second_TJ[t] = rng.randn(NUM_JOINTS)
        return ints_T, second_TJ
    first_TJ = np.empty((steps, NUM_JOINTS))
    for t in range(steps):
        first_TJ[t] = rng.randn(NUM_JOINTS)
        second_TJ[t] = rng.randn(NUM_JOINTS)
    return first_TJ, second_TJ


def _course_chunk(rng: LegacyRandom, num: int, steps: int, version: str) -> tuple[np.ndarray, np.ndarray]:
    start_NJ = np.empty((num, NUM_JOINTS))
    target_N3 = np.empty((num, 3))
    draws: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(num):
        start_NJ[i] = rng.uniform(-np.pi / 2, np.pi / 2, size=NUM_JOINTS)
        target_N3[i] = rng.uniform(-1.5, 1.5, size=3)
        draws.append(draw_course_step_noise(rng, steps, version))
    first_NT, second_NTJ = (np.stack(parts) for parts in zip(*draws, strict=True))
    if version == "v2":
        return simulate_v2(start_NJ, target_N3, first_NT, second_NTJ, exact_norms=True)
    return simulate_v1(start_NJ, target_N3, first_NT, second_NTJ)


def _fast_chunk(rng: np.random.Generator, num: int, steps: int, version: str) -> tuple[np.ndarray, np.ndarray]:
    start_NJ = rng.uniform(-np.pi / 2, np.pi / 2, size=(num, NUM_JOINTS))
    target_N3 = rng.uniform(-1.5, 1.5, size=(num, 3))
    if version == "v2":
        ints_NT = rng.integers(-2, 3, size=(num, steps))
        normals_NTJ = rng.standard_normal((num, steps, NUM_JOINTS))
        return simulate_v2(start_NJ, target_N3, ints_NT, normals_NTJ, exact_norms=False)
    noise_a_NTJ = rng.standard_normal((num, steps, NUM_JOINTS))
    noise_b_NTJ = rng.standard_normal((num, steps, NUM_JOINTS))
    return simulate_v1(start_NJ, target_N3, noise_a_NTJ, noise_b_NTJ)


def check_generation_args(
    num_trajectories: int, seq_length: int, version: str, seed: int | None = None, fast: bool = False
) -> None:
    """ConfigError for a non-positive count, seq_length < 2, an unknown version or a seed NumPy refuses."""
    if isinstance(num_trajectories, bool) or not isinstance(num_trajectories, int) or num_trajectories < 1:
        raise ConfigError(f"num_trajectories must be a positive integer, got {num_trajectories!r}.")
    if isinstance(seq_length, bool) or not isinstance(seq_length, int) or seq_length < 2:
        raise ConfigError(
            f"seq_length must be an integer >= 2 (a trajectory needs an input and a next token), got {seq_length!r}."
        )
    if version not in VERSIONS:
        raise ConfigError(f"trajectory version {version!r} is unknown; use one of {', '.join(VERSIONS)}.")
    if seed is not None:
        check_seed(seed, fast)


def check_seed(seed: int, fast: bool = False) -> None:
    """ConfigError for a seed the generator would reject with a bare ValueError deep inside NumPy.

    Course mode seeds the legacy MT19937 (`np.random.seed`), which takes 0..2**32 - 1 only; fast mode's
    `np.random.default_rng` takes any non-negative integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0 or (not fast and seed >= 2**32):
        limit = "a non-negative integer" if fast else "an integer from 0 to 2**32 - 1 (NumPy's legacy generator)"
        raise ConfigError(f"seed must be {limit}, got {seed!r}.")


def generate_course_trajectories(
    rng: LegacyRandom,
    num_trajectories: int,
    seq_length: int = 50,
    version: str = "v2",
    progress: ProgressCallback | None = None,
) -> TrajectoryData:
    """Course-exact trajectories drawn from an already-seeded legacy generator (`np.random` itself works).

    Consumes the generator exactly as the course's generate_dataset loop does, so the generator ends in
    the same state too. `progress(n)` is called after each batch of n finished trajectories.
    """
    check_generation_args(num_trajectories, seq_length, version)
    make_chunk = functools.partial(_course_chunk, rng, steps=seq_length, version=version)
    return _generate_in_chunks(make_chunk, num_trajectories, seq_length, COURSE_CHUNK, version, progress)


def generate_trajectories(
    num_trajectories: int,
    seq_length: int = 50,
    seed: int = 42,
    version: str = "v2",
    fast: bool = False,
    progress: ProgressCallback | None = None,
) -> TrajectoryData:
    """The course's dataset for `seed` (fast=False), or the same dynamics drawn in bulk (fast=True).

    Course mode equals the course's `generate_dataset(num_trajectories, seq_length, seed)` bit for bit and
    leaves NumPy's global generator untouched. Fast mode is not the course's numbers (see the module doc).
    """
    check_generation_args(num_trajectories, seq_length, version, seed, fast)
    if fast:
        make_chunk = functools.partial(_fast_chunk, np.random.default_rng(seed), steps=seq_length, version=version)
        return _generate_in_chunks(make_chunk, num_trajectories, seq_length, FAST_CHUNK, version, progress)
    return generate_course_trajectories(np.random.RandomState(seed), num_trajectories, seq_length, version, progress)


def _generate_in_chunks(
    make_chunk: Callable[[int], tuple[np.ndarray, np.ndarray]],
    num_trajectories: int,
    seq_length: int,
    chunk_size: int,
    version: str,
    progress: ProgressCallback | None,
) -> TrajectoryData:
    check_generation_memory(num_trajectories, seq_length, fast=chunk_size == FAST_CHUNK)
    # float64 while simulating, float32 on output (as the course stores them): the full float64 array is
    # never materialized, which halves peak memory for large datasets.
    try:
        states_NTS = np.empty((num_trajectories, seq_length, STATE_DIM), dtype=np.float32)
        actions_NT = np.empty((num_trajectories, seq_length), dtype=np.int64)
    except MemoryError:  # where the available memory is unknown, NumPy's refusal is the only check
        need = estimate_generation_bytes(num_trajectories, seq_length, fast=chunk_size == FAST_CHUNK)
        raise OutOfMemoryError(_memory_sentence(num_trajectories, seq_length, need, None, save=False)) from None
    for lo in range(0, num_trajectories, chunk_size):
        hi = min(lo + chunk_size, num_trajectories)
        states_NTS[lo:hi], actions_NT[lo:hi] = make_chunk(hi - lo)
        if progress is not None:
            progress(hi - lo)
    return TrajectoryData(states_NTS, actions_NT, version)


# -------------------------------------------------------------------------------------------- memory


def estimate_generation_bytes(num_trajectories: int, seq_length: int, fast: bool = False, save: bool = False) -> int:
    """Peak bytes of generating (and, with save=True, pickling and writing) num_trajectories x seq_length."""
    output = num_trajectories * seq_length * OUTPUT_BYTES_PER_STEP
    chunk = min(num_trajectories, FAST_CHUNK if fast else COURSE_CHUNK)
    generating = output + chunk * seq_length * CHUNK_BYTES_PER_STEP
    # The chunk's arrays are freed before the pickle is built, so the two peaks do not add up.
    return max(generating, int(SAVE_PEAK_FACTOR * output)) if save else generating


def check_generation_memory(num_trajectories: int, seq_length: int, fast: bool = False, save: bool = False) -> None:
    """OutOfMemoryError, before anything is allocated, when the dataset would not fit in the available memory.

    Without the check a huge request is a bare MemoryError or, worse, an allocation the kernel grants lazily
    and then swaps or kills the process for.
    """
    need = estimate_generation_bytes(num_trajectories, seq_length, fast, save)
    available = available_memory_bytes()
    if available is not None and need > available:
        raise OutOfMemoryError(_memory_sentence(num_trajectories, seq_length, need, available, save))


def _memory_sentence(num: int, steps: int, need: int, available: int | None, save: bool) -> str:
    doing = "generating and saving" if save else "generating"
    have = f"only {format_bytes(available)} is available" if available is not None else "the system refused it"
    return (
        f"{doing} {num:,} trajectories x {steps:,} steps needs about {format_bytes(need)} of memory but {have}; "
        "lower num_trajectories or seq_length."
    )
