"""Positional information: RoPE (the default), plus sinusoidal, learned and none for ablations.

RoPE rotates query/key pairs inside attention; the additive schemes return a (..., T, D) table that the
model adds to the token embeddings. Shapes: T = positions, D = feature dim, D/2 = rotation pairs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from scratchlm.nn.layers import Embedding, as_index

# Both additive schemes start at the same per-element RMS (1/sqrt(2), that of a sinusoid) against ~0.99
# for the token embeddings: positions are visible but never dominant, and the ablation compares schemes,
# not scales.
ADDITIVE_POSITION_RMS = 1.0 / math.sqrt(2.0)


class _DerivedTables(nn.Module):
    """A module whose buffers are pure functions of its constructor arguments.

    `.to(dtype)` would round such tables (bf16 keeps 8 significant bits: every cos/sin entry off by up to
    2e-3, at every position), so after every device/dtype move they are rebuilt from float64 math: float64
    models get float64-exact tables, and low-precision models keep float32 tables. The constructor's
    `dtype` (the model's) follows the same rule, so a model built in float64 and one moved there with
    `.double()` agree.
    """

    @staticmethod
    def _table_dtype(dtype: torch.dtype | None) -> torch.dtype:
        return torch.float64 if dtype == torch.float64 else torch.float32

    def _build_tables(self, device: torch.device | str | None, dtype: torch.dtype) -> None:
        raise NotImplementedError

    def _table(self) -> Tensor:
        raise NotImplementedError

    def _apply(self, fn: Any, recurse: bool = True) -> _DerivedTables:
        super()._apply(fn, recurse)
        moved = self._table()
        self._build_tables(moved.device, self._table_dtype(moved.dtype))
        return self


class RotaryPositionalEmbedding(_DerivedTables):
    """Rotates interleaved pairs (x[2k], x[2k+1]) by angle position * theta^(-2k/d_k) (Su et al., 2021).

    k counts from 0. The CSE599-O handout writes the angle as i / theta^((2k-1)/d) with k from 1; the RoPE
    paper's (and Llama's) exponent with k from 1 is (2k-2)/d, which this follows.

    forward(x, token_positions): x (..., T, d_k); token_positions (..., T) integer absolute positions,
    broadcastable against x's leading dims (attention passes (..., 1, T) so every head shares them).
    Returns (..., T, d_k) in x's dtype.
    """

    def __init__(
        self,
        theta: float,
        d_k: int,
        max_seq_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if d_k % 2:
            raise ValueError(f"RoPE rotates pairs of features, so `d_k` must be even, got {d_k}.")
        self.theta = theta
        self.d_k = d_k
        self.max_seq_len = max_seq_len
        self._build_tables(device, self._table_dtype(dtype))

    def _table(self) -> Tensor:
        return self.cos_TP

    def _build_tables(self, device: torch.device | str | None, dtype: torch.dtype) -> None:
        inv_freq_P = self.theta ** (-torch.arange(0, self.d_k, 2, dtype=torch.float64) / self.d_k)
        angle_TP = torch.outer(torch.arange(self.max_seq_len, dtype=torch.float64), inv_freq_P)
        # Not persistent: derived data stays out of checkpoints (they hold only learned weights).
        self.register_buffer("cos_TP", angle_TP.cos().to(device=device, dtype=dtype), persistent=False)
        self.register_buffer("sin_TP", angle_TP.sin().to(device=device, dtype=dtype), persistent=False)

    def forward(self, x: Tensor, token_positions: Tensor) -> Tensor:
        in_dtype = x.dtype
        # Rotate in float32 at least: bf16 q/k keep their precision through the rotation.
        compute_dtype = torch.promote_types(in_dtype, self.cos_TP.dtype)
        token_positions = as_index(token_positions, "RoPE: token_positions")
        cos_TP = self.cos_TP[token_positions].to(compute_dtype)
        sin_TP = self.sin_TP[token_positions].to(compute_dtype)
        x = x.to(compute_dtype)
        even_TP, odd_TP = x[..., 0::2], x[..., 1::2]
        # Each pair (a, b) becomes (a cos - b sin, a sin + b cos); stacking on a new last dim and
        # flattening interleaves the pairs back into their original slots.
        rotated_TP2 = torch.stack((even_TP * cos_TP - odd_TP * sin_TP, even_TP * sin_TP + odd_TP * cos_TP), -1)
        return rotated_TP2.flatten(-2).to(in_dtype)

    def extra_repr(self) -> str:
        return f"theta={self.theta}, d_k={self.d_k}, max_seq_len={self.max_seq_len}"


class SinusoidalPositionalEmbedding(_DerivedTables):
    """The fixed table of Vaswani et al.: PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(same)."""

    def __init__(
        self,
        d_model: int,
        max_seq_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_seq_len = max_seq_len
        self._build_tables(device, self._table_dtype(dtype))

    def _table(self) -> Tensor:
        return self.table_TD

    def _build_tables(self, device: torch.device | str | None, dtype: torch.dtype) -> None:
        inv_freq = 10000.0 ** (-torch.arange(0, self.d_model, 2, dtype=torch.float64) / self.d_model)
        angle_TP = torch.outer(torch.arange(self.max_seq_len, dtype=torch.float64), inv_freq)
        table_TD = torch.zeros(self.max_seq_len, self.d_model, dtype=torch.float64)
        table_TD[:, 0::2] = angle_TP.sin()
        table_TD[:, 1::2] = angle_TP.cos()[:, : self.d_model // 2]
        self.register_buffer("table_TD", table_TD.to(device=device, dtype=dtype), persistent=False)

    def forward(self, token_positions: Tensor) -> Tensor:
        """(..., T) positions -> (..., T, D); its per-element RMS is 1/sqrt(2) by construction."""
        return self.table_TD[token_positions]


class LearnedPositionalEmbedding(Embedding):
    """A trained (max_seq_len, D) table, started at the sinusoid's scale (see ADDITIVE_POSITION_RMS)."""

    def __init__(self, max_seq_len: int, d_model: int, device=None, dtype=None) -> None:
        super().__init__(max_seq_len, d_model, device=device, dtype=dtype, init_std=ADDITIVE_POSITION_RMS)
