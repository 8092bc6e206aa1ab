"""Tokenizers for trajectories: the course's action tokens, per-dimension uniform binning, and layouts.

- Course action tokens are used as they are: one id in [0, 256) per step.
- `UniformBinner` maps continuous values (states, or continuous actions) to `num_bins` uniform bins per
  dimension, RT-2/OpenVLA style: bounds are the 1st/99th percentiles of the training split (or given),
  values outside are clipped into the edge bins, and decoding returns bin centres.
- A layout turns (states, actions) into one token sequence per trajectory plus a mask of the positions
  whose prediction counts: `ActionLayout` (the course's actions-only sequence) and `UnifiedLayout`
  (per step the state's binned dims, then the action token; see its docstring for the vocabulary).

Shapes: N = trajectories, T = steps, D = continuous dims, L = tokens per trajectory, `...` = leading dims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from scratchlm.errors import ConfigError, DataError

COURSE_ACTION_VOCAB = 256
DEFAULT_NUM_BINS = 256
DEFAULT_PERCENTILES = (1.0, 99.0)


@dataclass(frozen=True, eq=False)
class UniformBinner:
    """Per-dimension uniform bins over [low_D[d], high_D[d]]: bin b covers low + [b, b+1) * width / num_bins."""

    low_D: np.ndarray
    high_D: np.ndarray
    num_bins: int = DEFAULT_NUM_BINS

    def __post_init__(self) -> None:
        low_D = np.asarray(self.low_D, dtype=np.float64)
        high_D = np.asarray(self.high_D, dtype=np.float64)
        object.__setattr__(self, "low_D", low_D)
        object.__setattr__(self, "high_D", high_D)
        if low_D.ndim != 1 or low_D.shape != high_D.shape or low_D.size == 0:
            raise ConfigError(
                f"binner bounds must be two 1-D arrays of equal length, got shapes {low_D.shape} and {high_D.shape}."
            )
        if not (np.isfinite(low_D).all() and np.isfinite(high_D).all() and (high_D >= low_D).all()):
            raise ConfigError(
                "binner bounds must be finite with high >= low in every dimension; refit them on clean data."
            )
        if isinstance(self.num_bins, bool) or not isinstance(self.num_bins, int) or self.num_bins < 1:
            raise ConfigError(f"num_bins must be a positive integer, got {self.num_bins!r}.")

    @classmethod
    def fit(
        cls,
        values: np.ndarray,
        num_bins: int = DEFAULT_NUM_BINS,
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    ) -> UniformBinner:
        """Bounds at the given percentiles of `values` (..., D), per dimension (fit on the training split only)."""
        lo_pct, hi_pct = percentiles
        if not 0.0 <= lo_pct < hi_pct <= 100.0:
            raise ConfigError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
        flat_MD = _as_2d(values, "fit")
        if flat_MD.shape[0] == 0:
            raise DataError("cannot fit bin bounds on zero values; pass a non-empty training split.")
        low_D, high_D = np.percentile(flat_MD, [lo_pct, hi_pct], axis=0)
        return cls(low_D, high_D, num_bins)

    @property
    def num_dims(self) -> int:
        return self.low_D.shape[0]

    def _width_D(self) -> np.ndarray:
        return self.high_D - self.low_D

    def encode(self, values: np.ndarray) -> np.ndarray:
        """(..., D) floats -> (..., D) int64 bins in [0, num_bins); values outside the bounds clip to the edges."""
        values = self._check_dims(np.asarray(values, dtype=np.float64), "encode")
        width_D = self._width_D()
        # A constant dimension (width 0) has a single meaningful bin; the substitute width avoids 0/0.
        scaled = (np.clip(values, self.low_D, self.high_D) - self.low_D) / np.where(width_D > 0, width_D, 1.0)
        return np.minimum(np.floor(scaled * self.num_bins), self.num_bins - 1).astype(np.int64)

    def decode(self, bins: np.ndarray) -> np.ndarray:
        """(..., D) bins -> (..., D) float64 bin centres."""
        bins = self._check_dims(np.asarray(bins), "decode")
        if not np.issubdtype(bins.dtype, np.integer):
            raise DataError(f"decode: bins must be integers, got dtype {bins.dtype}.")
        if bins.size and (bins.min() < 0 or bins.max() >= self.num_bins):
            raise DataError(f"decode: bins span [{bins.min()}, {bins.max()}] but must lie in [0, {self.num_bins}).")
        return self.low_D + (bins + 0.5) * self._width_D() / self.num_bins

    def reconstruction_error(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """Per-dimension round-trip error on `values` (..., D): rmse_D, max_abs_D, clipped_fraction_D.

        Clipped values (outside the fitted bounds) are included: their error is what the model loses.
        """
        flat_MD = self._check_dims(_as_2d(values, "reconstruction_error"), "reconstruction_error")
        error_MD = self.decode(self.encode(flat_MD)) - flat_MD
        clipped_MD = (flat_MD < self.low_D) | (flat_MD > self.high_D)
        return {
            "rmse_D": np.sqrt(np.mean(error_MD**2, axis=0)),
            "max_abs_D": np.abs(error_MD).max(axis=0),
            "clipped_fraction_D": clipped_MD.mean(axis=0),
        }

    def _check_dims(self, values: np.ndarray, what: str) -> np.ndarray:
        if values.ndim == 0 or values.shape[-1] != self.num_dims:
            raise DataError(f"{what}: expected a trailing dim of {self.num_dims}, got shape {values.shape}.")
        return values

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready bounds, for saving the tokenizer beside a checkpoint."""
        return {"low": self.low_D.tolist(), "high": self.high_D.tolist(), "num_bins": self.num_bins}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> UniformBinner:
        return cls(np.asarray(values["low"]), np.asarray(values["high"]), int(values["num_bins"]))


def _as_2d(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0:
        raise DataError(f"{what}: expected an array of shape (..., D), got a scalar.")
    return values.reshape(-1, values.shape[-1])


# ---------------------------------------------------------------------------------------------- layouts


class TokenLayout(Protocol):
    """Turns trajectories into token sequences: one row of L tokens per trajectory."""

    vocab_size: int
    action_offset: int  # action token a has id action_offset + a
    action_vocab: int

    def encode(self, states_NTS: np.ndarray, actions_NT: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> tokens_NL int64 and is_action_NL bool (True where the token is an action)."""
        ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ActionLayout:
    """The course's sequence: the T action tokens of a trajectory, ids [0, action_vocab)."""

    action_vocab: int = COURSE_ACTION_VOCAB

    @property
    def vocab_size(self) -> int:
        return self.action_vocab

    @property
    def action_offset(self) -> int:
        return 0

    def encode(self, states_NTS: np.ndarray, actions_NT: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tokens_NL = check_action_tokens(actions_NT, self.action_vocab)
        return tokens_NL, np.ones(tokens_NL.shape, dtype=bool)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "actions", "action_vocab": self.action_vocab}


@dataclass(frozen=True, eq=False)
class UnifiedLayout:
    """States and actions in one sequence, so a model predicts each action from the states so far.

    Per step t the row holds D state tokens then the action token: L = T * (D + 1). Vocabulary (B bins):
      ids [d*B, (d+1)*B): bin of state dimension d (d = 0..D-1), so every id names its dimension;
      ids [D*B, D*B + A): action token a -> D*B + a (A = action_vocab).
    With the course data (D = 10, B = 256, A = 256) that is 2816 ids and 550 tokens per trajectory.
    Only action positions are marked as targets, so the loss (and the metrics) cover actions only; the
    state tokens are context the model reads, not predicts.
    """

    binner: UniformBinner
    action_vocab: int = COURSE_ACTION_VOCAB

    @property
    def state_dims(self) -> int:
        return self.binner.num_dims

    @property
    def tokens_per_step(self) -> int:
        return self.state_dims + 1

    @property
    def action_offset(self) -> int:
        return self.state_dims * self.binner.num_bins

    @property
    def vocab_size(self) -> int:
        return self.action_offset + self.action_vocab

    def encode(self, states_NTS: np.ndarray, actions_NT: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """states (N, T, D) + actions (N, T) -> tokens (N, T*(D+1)) and the action-position mask."""
        actions_NT = check_action_tokens(actions_NT, self.action_vocab)
        if states_NTS.ndim != 3 or states_NTS.shape[:2] != actions_NT.shape:
            raise DataError(
                f"unified layout: states {states_NTS.shape} must be (N, T, D) with (N, T) = actions {actions_NT.shape}."
            )
        dim_offsets_D = np.arange(self.state_dims, dtype=np.int64) * self.binner.num_bins
        state_ids_NTD = self.binner.encode(states_NTS) + dim_offsets_D
        step_NTK = np.concatenate([state_ids_NTD, (actions_NT + self.action_offset)[..., None]], axis=-1)
        is_action_NTK = np.zeros(step_NTK.shape, dtype=bool)
        is_action_NTK[..., -1] = True
        num = actions_NT.shape[0]
        return step_NTK.reshape(num, -1), is_action_NTK.reshape(num, -1)

    def decode(self, tokens_NL: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of encode (states come back as bin centres): -> states (N, T, D) float64, actions (N, T)."""
        tokens_NL = np.asarray(tokens_NL)
        if tokens_NL.ndim != 2 or tokens_NL.shape[1] % self.tokens_per_step:
            raise DataError(
                f"unified layout: tokens must be (N, T*{self.tokens_per_step}), got shape {tokens_NL.shape}."
            )
        step_NTK = tokens_NL.reshape(tokens_NL.shape[0], -1, self.tokens_per_step)
        dim_offsets_D = np.arange(self.state_dims, dtype=np.int64) * self.binner.num_bins
        bins_NTD = step_NTK[..., :-1] - dim_offsets_D
        actions_NT = step_NTK[..., -1] - self.action_offset
        if bins_NTD.size and (bins_NTD.min() < 0 or bins_NTD.max() >= self.binner.num_bins):
            raise DataError("unified layout: a state position holds an id outside its dimension's range.")
        check_action_tokens(actions_NT, self.action_vocab)
        return self.binner.decode(bins_NTD), actions_NT

    def describe(self) -> str:
        """The vocabulary, one line per id range."""
        bins = self.binner.num_bins
        lines = [f"state dim {d}: ids [{d * bins}, {(d + 1) * bins})" for d in range(self.state_dims)]
        lines.append(f"action: ids [{self.action_offset}, {self.vocab_size}) = {self.action_offset} + action token")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "unified", "action_vocab": self.action_vocab, "binner": self.binner.to_dict()}


def layout_from_dict(values: dict[str, Any]) -> ActionLayout | UnifiedLayout:
    """Rebuild a layout saved with `to_dict()` (e.g. from a run directory)."""
    kind = values.get("kind")
    if kind == "actions":
        return ActionLayout(int(values["action_vocab"]))
    if kind == "unified":
        return UnifiedLayout(UniformBinner.from_dict(values["binner"]), int(values["action_vocab"]))
    raise ConfigError(f"unknown token layout kind {kind!r}; expected 'actions' or 'unified'.")


def check_action_tokens(actions: np.ndarray, action_vocab: int = COURSE_ACTION_VOCAB) -> np.ndarray:
    """The course's action tokens as int64, after checking they are integers in [0, action_vocab)."""
    actions = np.asarray(actions)
    if not np.issubdtype(actions.dtype, np.integer):
        raise DataError(f"action tokens must be integers, got dtype {actions.dtype}.")
    if actions.size and (actions.min() < 0 or actions.max() >= action_vocab):
        raise DataError(f"action tokens span [{actions.min()}, {actions.max()}] but must lie in [0, {action_vocab}).")
    return actions.astype(np.int64, copy=False)
