"""Decode-time projection weights: [W_q; W_k; W_v] and [W_1; W_3] concatenated once per decode session.

The fast path (`ModelConfig.fast`) computes q, k and v with one matmul and SwiGLU's gate and up with one
more (`scratchlm.nn.fused`). Training concatenates the weights on every call, which costs little next to a
training step's activations; a decode step reads each weight once for one token per row, so a per-call
concatenation would double its weight traffic. Decoding a fast-path model therefore concatenates once,
when `KVCache.for_model` builds the session's cache, keeps the copies in the cache
(`LayerKVCache.packed_weights`) and lets them go with it. The copies are plain tensors without gradient,
not parameters: the state dict, the optimizer and training never see them, a forward that autograd
records does not use them, and the reference path (fast = false) never packs.

Staleness: each layer remembers, for every source weight, the Parameter object, its storage address and
its version counter (bumped by every in-place change: an optimizer step, load_state_dict, copy_; not by
torch's fused AdamW kernel or writes through `.data`, so scratchlm's fused AdamW bumps it itself). The
cache calls `refresh` before every forward (`KVCache.advance`); a changed source is re-concatenated in
place, into the same memory, so a compiled step or a captured CUDA graph that reads the copies stays valid.
Shapes: D = d_model, F = d_ff.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from scratchlm.errors import ConfigError
from scratchlm.nn.ffn import SwiGLU
from scratchlm.nn.fused import packed_qkv_projection, packed_swiglu_gate_up

if TYPE_CHECKING:
    from scratchlm.model import Block


class PackedLayer:
    """One block's concatenated projection weights, and the two computations that read them.

    qkv_weight (3D, D) = [W_q; W_k; W_v]; gate_up_weight (2F, D) = [W_1; W_3], or None when the block's
    FFN is an ungated MLP (one up matrix: nothing to fuse), in which case `ffn` runs the module as it is.
    """

    def __init__(self, block: Block) -> None:
        attn = block.attn
        self._qkv_sources = (attn.q_proj, attn.k_proj, attn.v_proj)
        self._gate_up_sources = (block.ffn.w1, block.ffn.w3) if isinstance(block.ffn, SwiGLU) else ()
        self._ffn = block.ffn
        self.qkv_sizes = tuple(m.weight.shape[0] for m in self._qkv_sources)
        with torch.no_grad():  # a copy for reading, never a node in someone's autograd graph
            self.qkv_weight = _concatenate(self._qkv_sources)
            self.gate_up_weight = _concatenate(self._gate_up_sources) if self._gate_up_sources else None
        self._watch = self._watch_sources()

    def qkv(self, x_BTD: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(q, k, v), each (..., T, D): the attention's three projections as one matmul."""
        return packed_qkv_projection(x_BTD, self.qkv_weight, self.qkv_sizes)  # type: ignore[arg-type]

    def ffn(self, x_BTD: Tensor) -> Tensor:
        """The block's FFN: W_2 (SiLU(W_1 x) * W_3 x) with W_1 and W_3 as one matmul (SwiGLU)."""
        if self.gate_up_weight is None:
            return self._ffn(x_BTD)
        return self._ffn.w2(packed_swiglu_gate_up(x_BTD, self.gate_up_weight))

    def refresh(self) -> None:
        """Re-concatenate, in place, when a source weight changed since the last packing."""
        # This runs before every decoded token: one pass, early exit, no allocation: 0.23 µs a weight on
        # the 2-core CPU, where building and comparing a tuple of stamps took 0.7-1.0 (packed_refresh.py).
        for params, weight, address, version in self._watch:
            if params["weight"] is not weight or weight.data_ptr() != address:
                break
            if version is not None and weight._version != version:
                break
        else:
            return
        pairs = [(self.qkv_weight, self._qkv_sources)]
        if self.gate_up_weight is not None:
            pairs.append((self.gate_up_weight, self._gate_up_sources))
        with torch.no_grad():
            for packed, sources in pairs:
                fresh = _concatenate(sources)
                if (fresh.shape, fresh.dtype, fresh.device) != (packed.shape, packed.dtype, packed.device):
                    raise ConfigError(
                        "the model's projection weights changed shape, dtype or device during decoding; "
                        "start a new generation."
                    )
                packed.copy_(fresh)
        self._watch = self._watch_sources()

    def _watch_sources(self) -> list[tuple[dict, Tensor, int, int | None]]:
        # Per source weight: its module's parameter dict (a Parameter swapped into the module is seen;
        # `_parameters` directly, as nn.Module.__getattr__ would cost more than the check), the Parameter,
        # its storage address and its version counter. Inference tensors (made under
        # torch.inference_mode) keep no version counter: None, and only their address is checked.
        watch = []
        for module in (*self._qkv_sources, *self._gate_up_sources):
            weight = module._parameters["weight"]
            version = None if weight.is_inference() else weight._version  # type: ignore[union-attr]
            watch.append((module._parameters, weight, weight.data_ptr(), version))  # type: ignore[union-attr]
        return watch  # type: ignore[return-value]


def pack_projections(model: nn.Module) -> list[PackedLayer]:
    """One PackedLayer per block of `model` (a TransformerLM)."""
    return [PackedLayer(block) for block in model.layers]  # type: ignore[union-attr, arg-type]


def _concatenate(sources: tuple[nn.Module, ...]) -> Tensor:
    return torch.cat([m.weight for m in sources])
