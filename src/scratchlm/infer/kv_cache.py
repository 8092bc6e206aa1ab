"""Key/value caches for incremental decoding: a prompt is prefilled once, then each forward adds new tokens.

Shapes: B = batch rows, H = heads, S = cache slots (its capacity), T = tokens in one forward, Dh = head dim.

Slots and positions. A forward over T tokens writes them into slots `length .. length+T-1` of every row,
so a batch shares one write position. Prompts of different lengths are left-padded: row b's real tokens
start at slot `pad_B[b]`, and the token in slot s has the absolute position s - pad_B[b], which is what
RoPE rotates by and what additive tables are indexed with. Padding slots are hidden from every real query
by the attention mask; a padding query sees only itself, so no softmax row is empty (fused kernels return
NaN for an empty row, and a NaN there would reach real rows through 0 * NaN in the next layer).

Two modes:
- dynamic (the default): attention reads only the filled slots `[:length]`: the least work, but the key
  count changes every step (right for eager decoding on a CPU or a GPU);
- static: attention reads all S slots under a mask, and the write slot lives in a device tensor, so one
  decode step always has the same shapes and no host sync: a CUDA graph or torch.compile can capture it
  once and replay it for every token (`scratchlm.infer.cuda_graph`, `scratchlm.infer.compiled_step`).

Host and device halves. A forward's bookkeeping has a host half (`advance`: the capacity check, the Python
slot count `length`, re-packing changed weights) and a device half (`reserve`: slots, positions, mask).
Eager forwards run both from `reserve`. A compiled or graphed step cannot run host code inside its
captured region (a Python int that changes every token would recompile a compiled step at every token),
so it sets `reserve_advances = False` and calls `advance` itself, outside, before each replay.

Decoding a fast-path model (`ModelConfig.fast`) also keeps each layer's projection weights concatenated
for the session here (`LayerKVCache.packed_weights`, see packed_weights.py): one QKV and one W_1|W_3 matmul per
layer, without concatenating per token.

The cache never changes the model's math: with a cache, a forward over T new tokens returns the logits the
cacheless forward returns at those positions of the whole sequence (tests/test_kv_cache.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scratchlm.config import ModelConfig
from scratchlm.errors import ConfigError, ShapeError
from scratchlm.infer.packed_weights import PackedLayer, pack_projections


class LayerKVCache:
    """One layer's preallocated buffers, k_BHSd and v_BHSd, filled by `append` as the owning cache advances."""

    def __init__(self, owner: KVCache, k_BHSd: Tensor, v_BHSd: Tensor) -> None:
        self.owner = owner
        self.k_BHSd = k_BHSd
        self.v_BHSd = v_BHSd
        self.packed_weights: PackedLayer | None = None  # set by `KVCache.for_model` for a fast-path model

    @property
    def packed(self) -> PackedLayer | None:
        """The layer's concatenated projection weights for this forward, or None for the modules' own.

        None while autograd records: the copies carry no gradient, so a forward that is differentiated
        takes the modules' path (the fast path then concatenates per call, as in training).
        """
        return None if torch.is_grad_enabled() else self.packed_weights

    def append(self, k_new_BHTd: Tensor, v_new_BHTd: Tensor) -> tuple[Tensor, Tensor]:
        """Store the keys/values of the slots `KVCache.reserve` claimed; return the keys/values to attend to.

        Dynamic mode returns the filled slots (B, H, length, Dh), static mode all S slots (the mask hides
        the rest). Rotated keys are stored: RoPE was applied at their true positions before they came here.
        """
        owner = self.owner
        if owner.static:
            self.k_BHSd.index_copy_(2, owner.slots_T, k_new_BHTd.to(self.k_BHSd.dtype))
            self.v_BHSd.index_copy_(2, owner.slots_T, v_new_BHTd.to(self.v_BHSd.dtype))
            return self.k_BHSd, self.v_BHSd
        start, end = owner.length - k_new_BHTd.shape[-2], owner.length
        self.k_BHSd[:, :, start:end] = k_new_BHTd
        self.v_BHSd[:, :, start:end] = v_new_BHTd
        return self.k_BHSd[:, :, :end], self.v_BHSd[:, :, :end]

    @property
    def mask_B1TS(self) -> Tensor | None:
        """The attention mask of the current forward (True = may attend), or None for the plain causal one."""
        return self.owner.mask_B1TS


class KVCache:
    """Per-layer key/value buffers of shape (batch, heads, max_len, head_dim), plus the slot bookkeeping.

    Use: `cache = KVCache.for_model(model, batch_size, max_len, pad_B=...)`, then `model(prompt_BT,
    kv_cache=cache)` once (the prefill: one causal pass over the whole prompt) and `model(next_B1,
    kv_cache=cache)` per generated token; `TransformerLM.forward` calls `reserve` and hands each layer its
    `LayerKVCache`. `pad_B` (B,) counts the left-padding slots of each row (None: no padding).
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_heads: int,
        max_len: int,
        head_dim: int,
        *,
        pad_B: Tensor | None = None,
        static: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if max_len < 1 or batch_size < 1:
            raise ConfigError(f"a KV cache needs max_len >= 1 and batch_size >= 1, got {max_len} and {batch_size}.")
        self.batch_size = batch_size
        self.max_len = max_len
        self.static = static
        self.length = 0  # slots claimed so far
        self.reserve_advances = True  # False while a compiled or graphed step does `advance` itself
        shape = (batch_size, num_heads, max_len, head_dim)
        # Zeros, not empty: a static step multiplies unclaimed slots by probability 0, and 0 * NaN garbage is NaN.
        self.layers = [
            LayerKVCache(
                self, torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)
            )
            for _ in range(num_layers)
        ]
        if pad_B is not None:
            pad_B = torch.as_tensor(pad_B, dtype=torch.long, device=device)
            if pad_B.shape != (batch_size,):
                raise ShapeError(f"pad_B must have shape ({batch_size},), one count per row, got {tuple(pad_B.shape)}.")
        self.pad_B = pad_B
        self.key_slot_S = torch.arange(max_len, device=device)
        self.next_slot = torch.zeros((), dtype=torch.long, device=device)  # the static mode's write position
        self.slots_T = self.key_slot_S[:0]
        self.mask_B1TS: Tensor | None = None

    @classmethod
    def for_model(
        cls,
        model: torch.nn.Module,
        batch_size: int,
        max_len: int,
        *,
        pad_B: Tensor | None = None,
        static: bool = False,
    ) -> KVCache:
        """A cache shaped for `model` (a TransformerLM), on its device and in its parameters' dtype.

        For a fast-path model it also holds the session's concatenated projection weights.
        """
        config = model.config
        check_cacheable(config)
        if max_len > config.context_length:
            raise ConfigError(
                f"a KV cache of {max_len} slots exceeds the model's context_length {config.context_length}; "
                "shorten the prompt or generate fewer tokens."
            )
        weight = model.token_embeddings.weight
        cache = cls(
            config.num_layers,
            batch_size,
            config.num_heads,
            max_len,
            config.head_dim,
            pad_B=pad_B,
            static=static,
            device=weight.device,
            dtype=weight.dtype,
        )
        if config.fast:
            for layer, packed in zip(cache.layers, pack_projections(model), strict=True):
                layer.packed_weights = packed
        return cache

    def reserve(self, idx_BT: Tensor) -> Tensor:
        """Claim the next T slots for the (B, T) tokens `idx_BT`; return their absolute positions.

        Positions are (T,) without padding (the same for every row) and (B, T) with it. Also sets the
        attention mask the layers read for this forward (`mask_B1TS`).
        """
        if idx_BT.dim() != 2 or idx_BT.shape[0] != self.batch_size:
            raise ShapeError(
                f"with a KV cache the model input must be (batch {self.batch_size}, new tokens), "
                f"got {tuple(idx_BT.shape)}."
            )
        num_new = idx_BT.shape[1]
        if self.static:
            if self.reserve_advances:
                self.advance(num_new)
            # Slots come from a device tensor, so the same captured step serves every position.
            self.slots_T = self.next_slot + torch.arange(num_new, device=self.next_slot.device)
            self.next_slot.add_(num_new)
            num_keys = self.max_len
        else:
            start = self.length
            self.advance(num_new)
            self.slots_T = self.key_slot_S[start : start + num_new]
            num_keys = start + num_new
        self.mask_B1TS = self._attention_mask(num_keys)
        if self.pad_B is None:
            return self.slots_T
        return (self.slots_T - self.pad_B.unsqueeze(-1)).clamp(min=0)  # padding slots get a harmless 0

    def advance(self, num_new: int) -> None:
        """The host half of a forward over num_new tokens: check the capacity, count the slots, re-pack weights.

        `reserve` calls it, unless `reserve_advances` is False (a compiled or graphed step calls it itself).
        """
        if self.length + num_new > self.max_len:
            raise ShapeError(
                f"the KV cache holds {self.max_len} slots, {self.length} used; it cannot take {num_new} more "
                "(allocate it for the prompt plus every token to generate)."
            )
        self.length += num_new
        for layer in self.layers:
            if layer.packed_weights is not None:
                layer.packed_weights.refresh()

    def _attention_mask(self, num_keys: int) -> Tensor | None:
        if self.pad_B is None and not self.static:
            return None  # the backends' own causal mask, aligned bottom-right, is exactly right
        key_slot_11S = self.key_slot_S[:num_keys].view(1, 1, -1)
        query_slot_1T1 = self.slots_T.view(1, -1, 1)
        allowed_BTS = key_slot_11S <= query_slot_1T1
        if self.pad_B is not None:
            real_key_B1S = key_slot_11S >= self.pad_B.view(-1, 1, 1)
            allowed_BTS = allowed_BTS & (real_key_B1S | (key_slot_11S == query_slot_1T1))
        return allowed_BTS.unsqueeze(1)  # one mask shared by every head

    def snapshot(self) -> tuple[int, Tensor]:
        """The write position, to `restore` after throw-away forwards (warm-up, compilation, graph capture)."""
        return self.length, self.next_slot.clone()

    def restore(self, state: tuple[int, Tensor]) -> None:
        self.length = state[0]
        self.next_slot.copy_(state[1])


def check_cacheable(config: ModelConfig) -> None:
    """Refuse a model whose earlier positions attend to later ones: their keys and values change each step."""
    if not config.causal:
        raise ConfigError(
            "this model was trained without the causal mask (model.causal = false), so earlier positions "
            "depend on later ones and cannot be cached; decode it without the cache."
        )
