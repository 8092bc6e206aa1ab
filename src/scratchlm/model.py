"""The decoder-only transformer LM, read top to bottom: a Block, then the TransformerLM built from blocks.

Contract (as nanoGPT's): `forward(idx, targets=None) -> (logits, loss)`. Parameter names follow the
CS336/CSE599-O handout, so its adapters are glue and checkpoints interoperate:
token_embeddings.weight, layers.{i}.ln1.weight, layers.{i}.attn.{q,k,v,output}_proj.weight,
layers.{i}.ln2.weight, layers.{i}.ffn.{w1,w2,w3}.weight, ln_final.weight, lm_head.weight
(w3 only for SwiGLU; plus position_embeddings.weight for learned positions, .bias entries for LayerNorm,
and no norm weights at all for norm = "none").

Shapes: B = batch (any leading dims), T = positions, D = d_model, V = vocabulary.

`config.fast` switches on the fast path over the same parameters (`scratchlm.nn.fused`): fused QKV and
SwiGLU gate|up matmuls, and, when targets are given, the LM head fused with the loss, so forward then
returns no logits (None): the full (B, T, V) tensor is what the fusion avoids.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from scratchlm.config import ModelConfig
from scratchlm.errors import ConfigError, ShapeError
from scratchlm.nn.attention import CausalSelfAttention
from scratchlm.nn.ffn import MLP, SwiGLU
from scratchlm.nn.functional import cross_entropy, dropout
from scratchlm.nn.fused import autocast_dtype, linear_cross_entropy
from scratchlm.nn.layers import Embedding, Linear, build_norm
from scratchlm.nn.positions import (
    LearnedPositionalEmbedding,
    RotaryPositionalEmbedding,
    SinusoidalPositionalEmbedding,
)

if TYPE_CHECKING:
    from scratchlm.infer.kv_cache import KVCache, LayerKVCache

IGNORE_INDEX = -100  # a target equal to this contributes nothing to the loss
INDEX_DTYPES = (torch.int64, torch.int32)  # what indexing and the loss take as they are


def _is_integer(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    # Plain Python on the dims: torch.broadcast_shapes cost ~24 us a call here (1.8 us this way), paid on
    # every forward that passes positions, such as a caller's own one-token decode loop.
    if len(shape) > len(target):
        return False
    return all(dim == 1 or dim == want for dim, want in zip(reversed(shape), reversed(target), strict=False))


class Block(nn.Module):
    """One transformer block. Pre-norm: x + attn(ln1(x)), then + ffn(ln2(x)).

    Post-norm (the 2017 original, for ablations): ln1(x + attn(x)), then ln2(x + ffn(x)).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        *,
        rope: RotaryPositionalEmbedding | None = None,
        norm: str = "rmsnorm",
        norm_position: str = "pre",
        norm_eps: float = 1e-5,
        ffn: str = "swiglu",
        causal: bool = True,
        dropout: float = 0.0,
        attention_backend: str = "reference",
        fast: bool = False,
        kernels: str = "torch",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.pre_norm = norm_position == "pre"
        self.dropout = dropout
        self.ln1 = build_norm(norm, d_model, norm_eps, device, dtype)
        self.attn = CausalSelfAttention(
            d_model,
            num_heads,
            rope=rope,
            causal=causal,
            backend=attention_backend,
            dropout=dropout,
            fused=fast,
            kernels=kernels,
            device=device,
            dtype=dtype,
        )
        self.ln2 = build_norm(norm, d_model, norm_eps, device, dtype)
        self.ffn: SwiGLU | MLP = (
            SwiGLU(d_model, d_ff, device=device, dtype=dtype, fused=fast)
            if ffn == "swiglu"
            else MLP(d_model, d_ff, device=device, dtype=dtype, activation=ffn)
        )

    def forward(
        self, x_BTD: Tensor, token_positions: Tensor | None = None, kv_cache: LayerKVCache | None = None
    ) -> Tensor:
        # Decoding a fast-path model: the FFN reads [W_1; W_3] concatenated once per session (infer/packed_weights.py).
        ffn = self.ffn if kv_cache is None or kv_cache.packed is None else kv_cache.packed.ffn
        if self.pre_norm:
            # The residual stream itself is never normalized: a clean path from embeddings to the head.
            x_BTD = x_BTD + self._drop(self.attn(self.ln1(x_BTD), token_positions, kv_cache))
            return x_BTD + self._drop(ffn(self.ln2(x_BTD)))
        x_BTD = self.ln1(x_BTD + self._drop(self.attn(x_BTD, token_positions, kv_cache)))
        return self.ln2(x_BTD + self._drop(ffn(x_BTD)))

    def _drop(self, x: Tensor) -> Tensor:
        return dropout(x, self.dropout, self.training)


class TransformerLM(nn.Module):
    """Token embeddings -> num_layers Blocks -> final norm -> LM head, built from one ModelConfig.

    TransformerLM(config, device=None, dtype=None): `device`/`dtype` place the parameters at construction
    (or build on "meta" and call `to_empty()` + `reset_parameters()`). The model keeps its own validated copy
    of `config`, so changing the caller's config afterwards does not change the model.

        config = ModelConfig(vocab_size=50257, context_length=256, d_model=256, num_layers=4, num_heads=8)
        model = TransformerLM(config)
        logits_BTV, loss = model(idx_BT, targets_BT)    # loss is None without targets
        model.num_params()                               # distinct parameters

    `config.fast = True` is the fused fast path over the same state dict (with targets it returns no
    logits). Train with `scratchlm.optim` (AdamW, get_lr_cosine_schedule, clip_grad_norm), save with
    `scratchlm.train.checkpoint.save_checkpoint`, rebuild from a checkpoint or run directory alone with
    `scratchlm.load_model`, and sample with `scratchlm.generate`.
    """

    def __init__(
        self,
        config: ModelConfig,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ConfigError(
                f"TransformerLM takes a ModelConfig, got {type(config).__name__}; build one with "
                "ModelConfig(**values) or ModelConfig.from_dict(values)."
            )
        # A dataclass can be changed after it was checked (config.positional = "alibi" would silently build a
        # model without positions); checking a copy again costs nothing and keeps the model's own fixed.
        c = self.config = dataclasses.replace(config)
        self.token_embeddings = Embedding(c.vocab_size, c.d_model, device=device, dtype=dtype)
        # One RoPE table shared by every layer: the rotation depends only on position.
        rope = (
            RotaryPositionalEmbedding(c.rope_theta, c.head_dim, c.context_length, device=device, dtype=dtype)
            if c.positional == "rope"
            else None
        )
        self.position_embeddings: nn.Module | None = None
        if c.positional == "sinusoidal":
            self.position_embeddings = SinusoidalPositionalEmbedding(
                c.d_model, c.context_length, device=device, dtype=dtype
            )
        elif c.positional == "learned":
            self.position_embeddings = LearnedPositionalEmbedding(
                c.context_length, c.d_model, device=device, dtype=dtype
            )
        self.layers = nn.ModuleList(
            Block(
                c.d_model,
                c.num_heads,
                c.d_ff,
                rope=rope,
                norm=c.norm,
                norm_position=c.norm_position,
                norm_eps=c.norm_eps,
                ffn=c.ffn,
                causal=c.causal,
                dropout=c.dropout,
                attention_backend=c.attention_backend,
                fast=c.fast,
                kernels=c.kernels,
                device=device,
                dtype=dtype,
            )
            for _ in range(c.num_layers)
        )
        # Post-norm blocks already end in a norm; a second one would only rescale.
        final_norm = c.norm if c.norm_position == "pre" else "none"
        self.ln_final = build_norm(final_norm, c.d_model, c.norm_eps, device, dtype)
        self.lm_head = Linear(c.d_model, c.vocab_size, device=device, dtype=dtype)
        # The fast path's fused head + loss; `scratchlm.train.compile` may swap in a compiled version.
        self.head_loss = linear_cross_entropy
        # Checking token ids against the vocabulary costs a host sync per call on a GPU, which stops the
        # CPU from queueing the next step ahead; the trainer turns it off when its data source already
        # guarantees the ids (checked once at setup).
        self.check_token_ids = True
        if c.init == "gpt2":
            self._init_gpt2()
        if c.tie_embeddings:
            self.lm_head.weight = self.token_embeddings.weight
            if c.init != "gpt2":
                # The shared matrix is read as output weights too: with the Embedding's std-1 init the first
                # logits would have std ~sqrt(d_model) (a loss near 200 on random targets at d_model 256, not
                # ln V). It takes lm_head's Linear init instead, as reset_parameters() (lm_head last) does.
                self.lm_head.reset_parameters()

    def reset_parameters(self) -> None:
        """(Re-)initialize every parameter, e.g. after building on the meta device and `to_empty()`."""
        if self.config.tie_embeddings:  # to_empty() gives each module a parameter of its own: share it again
            self.lm_head.weight = self.token_embeddings.weight
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        if self.config.init == "gpt2":
            self._init_gpt2()

    @torch.no_grad()
    def _init_gpt2(self) -> None:
        # GPT-2's scheme: small weights everywhere, so early training moves them relatively more; the two
        # projections that write into the residual stream shrink with depth, so the stream's variance does
        # not grow with the number of blocks. They are found by name: an FFN whose down projection is not
        # called `w2` would silently keep the unscaled std.
        std = 0.02
        residual_std = std / math.sqrt(2 * self.config.num_layers)
        for name, module in self.named_modules():
            if isinstance(module, (Linear, Embedding)):
                s = residual_std if name.endswith(("attn.output_proj", "ffn.w2")) else std
                nn.init.trunc_normal_(module.weight, mean=0.0, std=s, a=-3 * s, b=3 * s)

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        token_positions: Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[Tensor | None, Tensor | None]:
        """idx: (B, T) token ids, T <= context_length; targets: (B, T) next-token ids (or IGNORE_INDEX).

        Returns logits (B, T, V) and the mean cross-entropy over non-ignored targets (None without
        targets; with targets on the fast path the logits are None instead).
        token_positions: (B, T) or (T,) absolute positions, default 0..T-1.
        kv_cache (decoding, `scratchlm.infer.kv_cache`): idx holds only the T tokens after those already
        cached; the default positions are then their true ones, which the cache knows.
        """
        idx, targets, token_positions = self._checked_inputs(idx, targets, token_positions)
        seq_len = idx.shape[-1]
        x_BTD = self.token_embeddings(idx)
        if kv_cache is not None:
            cached_positions = kv_cache.reserve(idx)
            token_positions = cached_positions if token_positions is None else token_positions
        elif token_positions is None:
            token_positions = torch.arange(seq_len, device=idx.device)
        if self.position_embeddings is not None:
            x_BTD = x_BTD + self.position_embeddings(token_positions).to(x_BTD.dtype)
        x_BTD = dropout(x_BTD, self.config.dropout, self.training)
        if self.config.low_precision_residual and (residual_dtype := autocast_dtype(x_BTD.device.type)):
            x_BTD = x_BTD.to(residual_dtype)
        for i, block in enumerate(self.layers):
            x_BTD = block(x_BTD, token_positions, None if kv_cache is None else kv_cache.layers[i])
        h_BTD = self.ln_final(x_BTD)
        if self.config.fast and targets is not None:
            return None, self.head_loss(h_BTD, self.lm_head.weight, targets, ignore_index=IGNORE_INDEX)
        logits_BTV = self.lm_head(h_BTD)
        if targets is None:
            return logits_BTV, None
        return logits_BTV, cross_entropy(logits_BTV, targets, ignore_index=IGNORE_INDEX, validate=False)

    def _checked_inputs(
        self, idx: Tensor, targets: Tensor | None, token_positions: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The inputs, checked, with integer types narrower than int32 widened to int64.

        Indexing wants int32/int64 (a uint8 index would even be read as a mask); nanoGPT's token files are
        uint16. The value checks cost one host sync, so the trainer turns them off where its data source
        already guarantees the ids (`check_token_ids`).
        """
        widened = []
        for name, value in (("model input `idx`", idx), ("`targets`", targets), ("`token_positions`", token_positions)):
            if value is not None and not isinstance(value, Tensor):
                raise ShapeError(
                    f"{name} must be a torch.Tensor, got {type(value).__name__}; wrap it with torch.as_tensor(...)."
                )
            if value is not None and not _is_integer(value.dtype):
                raise ShapeError(f"{name} must hold integers, got dtype {value.dtype}; convert it with .long().")
            widened.append(value if value is None or value.dtype in INDEX_DTYPES else value.long())
        idx, targets, token_positions = widened
        self._check_inputs(idx, targets, token_positions)
        return idx, targets, token_positions

    def _check_inputs(self, idx: Tensor, targets: Tensor | None, token_positions: Tensor | None) -> None:
        c = self.config
        if idx.dim() == 0 or idx.shape[-1] == 0:
            raise ShapeError(
                f"model input `idx` must have shape (batch, seq_len) with seq_len >= 1, got {tuple(idx.shape)}."
            )
        if idx.shape[-1] > c.context_length:
            raise ShapeError(
                f"model input `idx` has {idx.shape[-1]} positions but context_length is {c.context_length}; "
                "crop the sequence (keep the last context_length tokens) or use a longer-context model."
            )
        if targets is not None and targets.shape != idx.shape:
            raise ShapeError(f"`targets` shape {tuple(targets.shape)} must equal `idx` shape {tuple(idx.shape)}.")
        if token_positions is not None and not _broadcasts_to(token_positions.shape, idx.shape):
            raise ShapeError(
                f"`token_positions` shape {tuple(token_positions.shape)} does not fit `idx` shape {tuple(idx.shape)}; "
                f"pass ({idx.shape[-1]},) positions shared by every row, or {tuple(idx.shape)}, one per token."
            )
        if not self.check_token_ids or torch.compiler.is_compiling():
            return
        if idx.is_cuda and torch.cuda.is_current_stream_capturing():
            return  # value checks are data-dependent; eager runs catch bad ids before compiled/graphed ones
        if idx.numel() == 0:
            return  # an empty batch holds no ids to check (and min() of nothing is an error); it gives empty logits
        # Every bound in one host transfer: one sync per step on a GPU, not one per bound.
        bounds = [idx.min(), idx.max()]
        if targets is not None:
            ignored = targets == IGNORE_INDEX
            bounds += [targets.masked_fill(ignored, 0).min(), targets.masked_fill(ignored, 0).max()]
        if token_positions is not None:
            bounds += [token_positions.min(), token_positions.max()]
        lo, hi, *rest = torch.stack([b.long() for b in bounds]).tolist()  # int32 and int64 bounds in one tensor
        target_bounds = rest[:2] if targets is not None else []
        position_bounds = rest[-2:] if token_positions is not None else []
        if lo < 0 or hi >= c.vocab_size:
            raise ShapeError(
                f"model input `idx` holds ids in [{lo}, {hi}] but vocab_size is {c.vocab_size}; check the "
                "tokenizer matches the model."
            )
        if target_bounds and (target_bounds[0] < 0 or target_bounds[1] >= c.vocab_size):
            raise ShapeError(
                f"`targets` holds ids in [{target_bounds[0]}, {target_bounds[1]}] outside [0, {c.vocab_size})"
                f" (use {IGNORE_INDEX} to ignore a position)."
            )
        if position_bounds and (position_bounds[0] < 0 or position_bounds[1] >= c.context_length):
            raise ShapeError(
                f"`token_positions` holds positions in [{position_bounds[0]}, {position_bounds[1]}] but the model "
                f"has positions [0, {c.context_length}); pass absolute positions below context_length."
            )

    def num_params(self, non_embedding: bool = False) -> int:
        """Distinct parameters (a tied matrix counts once). non_embedding drops the lookup tables."""
        params = {id(p): p for p in self.parameters()}
        if non_embedding:
            params.pop(id(self.token_embeddings.weight), None)
            if isinstance(self.position_embeddings, LearnedPositionalEmbedding):
                params.pop(id(self.position_embeddings.weight), None)
        return sum(p.numel() for p in params.values())
