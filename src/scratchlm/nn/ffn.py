"""Position-wise feed-forward networks: SwiGLU (the default) and the ungated two-matrix MLPs.

The MLPs: SiLU (the SwiGLU ablation, and the Scratch-1 template's FeedForward) and GELU (GPT-2's, so
nanoGPT's architecture can be rebuilt from ModelConfig switches).

Shapes: `...` is any number of leading batch dims; F = d_ff, the hidden width.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from scratchlm.nn.functional import gelu, silu
from scratchlm.nn.fused import fuse_projections, swiglu_gate_up
from scratchlm.nn.layers import Linear

# The ungated MLP's activations, by ModelConfig.ffn name.
MLP_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"silu": silu, "gelu": gelu}


def ffn_matrices(ffn: str) -> int:
    """Weight matrices of the FFN named `ffn`: 2 for the ungated MLPs (MLP_ACTIVATIONS), 3 for gated units.
    Parameter and FLOP accounting reads this, so a new FFN is counted by the rule that sizes it."""
    return 2 if ffn in MLP_ACTIVATIONS else 3


def default_d_ff(d_model: int, ffn: str = "swiglu") -> int:
    """Hidden width giving SwiGLU and the two-matrix MLPs the same 8·d_model² parameters.

    SwiGLU has three matrices, so ~8/3·d_model (nearest multiple of 64, for the hardware: 1344 at
    d_model 512); the two-matrix MLPs (the names in MLP_ACTIVATIONS) get the classic 4·d_model, and any
    other name the three-matrix width.
    """
    if ffn_matrices(ffn) == 2:
        return 4 * d_model
    return max(64, 64 * round(8 * d_model / 3 / 64))


class SwiGLU(nn.Module):
    """W2 (SiLU(W1 x) * W3 x): a SiLU-gated linear unit (Shazeer, 2020). (..., D) -> (..., D).

    `fused=True` (the fast path) computes W1 x and W3 x with one matmul over the same two weights. Decoding
    a fast-path model does not call this forward: `scratchlm.infer.packed_weights` recognizes the module
    with isinstance(SwiGLU) and recomputes W2 (SiLU(W1 x) * W3 x) itself, so a subclass that overrides
    forward (another gate activation) would be decoded as SwiGLU.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        fused: bool = False,
    ) -> None:
        super().__init__()
        self.fused = fused
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)
        self.w3 = Linear(d_model, d_ff, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        if fuse_projections(self.fused):
            return self.w2(swiglu_gate_up(x, self.w1.weight, self.w3.weight))
        return self.w2(silu(self.w1(x)) * self.w3(x))


class MLP(nn.Module):
    """W2 act(W1 x): the ungated two-matrix MLP, `act` one of MLP_ACTIVATIONS. (..., D) -> (..., D)."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        if activation not in MLP_ACTIVATIONS:
            raise ValueError(f"unknown MLP activation {activation!r}; choose one of {sorted(MLP_ACTIVATIONS)}.")
        self.activation = activation
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(MLP_ACTIVATIONS[self.activation](self.w1(x)))

    def extra_repr(self) -> str:
        return f"activation={self.activation}"
