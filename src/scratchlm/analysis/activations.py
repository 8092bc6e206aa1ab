"""Activation memory of one training step: what autograd keeps from the forward pass for the backward pass.

Two numbers, side by side in `scratchlm account --batch-size B`:
- `activation_estimate`: the textbook count (as in the CS336 resource-accounting problem), one term per
  tensor a from-scratch pre-norm block has to keep; each term's name says its shape.
- `measure_saved_activations`: what scratchlm's own model really saves, counted by running one forward
  pass under `torch.autograd.graph.saved_tensors_hooks`. On the "meta" device (the default) no memory is
  allocated and nothing is computed, so GPT-2 XL at batch 64 is measured in a second on a laptop.

A saved tensor is counted once per storage: the views of one tensor that several ops save (q, k and v
read the same normed input) share it. Parameters and buffers are not activations and are left out. The
measurement is float32 without autocast: under bf16 autocast, matmul outputs halve but the bf16 copies of
the weights are saved as well, which only a real CUDA step can count (`torch.cuda.max_memory_allocated`).
It is also eager: torch.compile's partitioner recomputes cheap pointwise ops in the backward instead of
saving them, so a compiled step keeps less.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scratchlm.config import ModelConfig
from scratchlm.errors import ConfigError


@dataclass(frozen=True)
class SavedActivations:
    """Bytes autograd saved in one forward pass, in total and by the part of the model that saved them."""

    total: int
    by_part: dict[str, int]  # "embeddings", "attention", "ffn", "norms", "residual", "head and loss"


def _part(module_name: str) -> str:
    """The model part a (possibly nested) module name belongs to, e.g. layers.3.attn.q_proj -> attention."""
    if module_name.startswith("layers."):
        parts = module_name.split(".")
        if len(parts) == 2:
            return "residual"  # the block itself: residual adds and dropout
        return {"attn": "attention", "ffn": "ffn", "ln1": "norms", "ln2": "norms"}.get(parts[2], parts[2])
    if module_name in ("token_embeddings", "position_embeddings"):
        return "embeddings"
    if module_name == "ln_final":
        return "norms"
    return "head and loss"  # lm_head, and the loss and embedding dropout computed in the model's own forward


@contextmanager
def _module_scope(model: nn.Module) -> Iterator[list[str]]:
    """A stack of the names of the modules whose forward is running, kept by forward hooks."""
    stack: list[str] = [""]

    def enter(name: str) -> Callable[..., None]:
        return lambda *_: stack.append(name)

    def leave(*_: object) -> None:  # a forward hook that returned the popped name would replace the output
        stack.pop()

    handles = []
    for name, module in model.named_modules():
        if module is not model:
            handles += [module.register_forward_pre_hook(enter(name)), module.register_forward_hook(leave)]
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


def _flash_attention(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool, dropout_p: float, mask: Tensor | None = None
) -> Tensor:
    """The sdpa backend as a GPU (or a real CPU run) computes it: a flash kernel that keeps q, k, v, the output
    and the (B, H, T) log-sum-exp, never the T x T scores. On "meta", PyTorch's sdpa dispatcher has no fused
    kernel and falls back to its math path, which keeps the scores: this calls the kernel's own op instead."""
    assert mask is None and q.shape[-2] == k.shape[-2]  # training: full causal (or not) self-attention
    out, _lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p, causal)
    return out


@contextmanager
def _sdpa_as_flash(device: torch.device) -> Iterator[None]:
    from scratchlm.nn import attention

    if device.type != "meta":
        yield
        return
    sdpa = attention.ATTENTION_BACKENDS["sdpa"]
    attention.ATTENTION_BACKENDS["sdpa"] = _flash_attention
    try:
        yield
    finally:
        attention.ATTENTION_BACKENDS["sdpa"] = sdpa


def measure_saved_activations(
    config: ModelConfig, batch_size: int, seq_len: int | None = None, *, device: str = "meta"
) -> SavedActivations:
    """Bytes saved for backward by one training forward pass (dropout as configured) of a (batch, seq_len)
    batch, default seq_len the full context. `device="cpu"` runs it for real (the tests compare the two)."""
    from scratchlm.model import TransformerLM

    seq = config.context_length if seq_len is None else seq_len
    assert config.d_ff is not None  # filled in by ModelConfig.__post_init__
    widest = max(config.d_model, 2 * config.d_ff, config.vocab_size, config.num_heads * seq)
    if batch_size * seq * widest * 8 >= 2**63:  # a tensor's byte size must fit in int64, even on meta
        raise ConfigError(
            f"batch size {batch_size} is too large to count: a ({batch_size}, {seq}, {widest}) activation "
            "has more bytes than a tensor can; give a smaller one."
        )
    torch_device = torch.device(device)
    with torch_device:
        model = TransformerLM(config)
    model.train()
    model.check_token_ids = False  # its value check reads the ids back, which meta tensors cannot do
    not_activations = {_storage_key(t) for t in [*model.parameters(), *model.buffers()]}
    idx_BT = torch.zeros(batch_size, seq, dtype=torch.long, device=torch_device)
    seen: set[int] = set()
    by_part: dict[str, int] = defaultdict(int)
    with _module_scope(model) as scope:

        def pack(t: Tensor) -> Tensor:
            key = _storage_key(t)
            if key not in not_activations and key not in seen:
                seen.add(key)
                by_part[_part(scope[-1])] += t.untyped_storage().nbytes()
            return t

        with _sdpa_as_flash(torch_device), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            _, loss = model(idx_BT, idx_BT)
    del loss  # the graph, and with it every saved tensor, goes here
    return SavedActivations(total=sum(by_part.values()), by_part=dict(by_part))


def _storage_key(t: Tensor) -> int:
    # The storage's own address: the same for every view of a tensor, also on "meta" (where data_ptr() is 0
    # for all). Saved tensors stay alive until the graph is freed, so no address is reused meanwhile.
    return t.untyped_storage()._cdata


@dataclass(frozen=True)
class ActivationEstimate:
    """The textbook count: every op's output kept once, in values (not bytes), as the CS336 accounting
    problem lists them. B batch, T positions, D d_model, F d_ff, H heads, V vocabulary, L layers. Dropout
    masks, softmax statistics and the copies an implementation makes are not in it: the measurement has them."""

    norms: int  # 2 per block + the final one (pre-norm): B·T·D each
    qkv_projections: int  # q, k, v: 3·B·T·D per layer
    attention_scores: int  # q·k^T: B·H·T² per layer
    attention_softmax: int  # B·H·T² per layer
    attention_values: int  # the weighted sum of v: B·T·D per layer
    output_projection: int  # B·T·D per layer
    ffn_hidden: int  # SwiGLU: W1 x, SiLU, W3 x and the gated product, 4·B·T·F per layer (an MLP: W1 x, act: 2)
    ffn_output: int  # W2: B·T·D per layer
    logits: int  # the LM head: B·T·V
    cross_entropy: int  # the softmax over the logits: B·T·V

    @property
    def total(self) -> int:
        return sum(vars(self).values())


def activation_estimate(config: ModelConfig, batch_size: int, seq_len: int | None = None) -> ActivationEstimate:
    c = config
    t = c.context_length if seq_len is None else seq_len
    btd, bht2, btv = batch_size * t * c.d_model, batch_size * c.num_heads * t * t, batch_size * t * c.vocab_size
    layers = c.num_layers
    assert c.d_ff is not None  # filled in by ModelConfig.__post_init__
    norms = 0 if c.norm == "none" else (2 * layers + (c.norm_position == "pre")) * btd
    return ActivationEstimate(
        norms=norms,
        qkv_projections=layers * 3 * btd,
        attention_scores=layers * bht2,
        attention_softmax=layers * bht2,
        attention_values=layers * btd,
        output_projection=layers * btd,
        ffn_hidden=layers * (4 if c.ffn == "swiglu" else 2) * batch_size * t * c.d_ff,
        ffn_output=layers * btd,
        logits=btv,
        cross_entropy=btv,
    )
