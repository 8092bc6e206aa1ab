"""Attention maps: the softmax weights of every layer and head for one input.

The attention modules do not keep their weights (the fused backend never materializes them), so a forward
hook records each layer's input and the maps are recomputed from the layer's own projections and RoPE:
the same math, read back. Shapes: L = layers, H = heads, T = positions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from einops import einsum, rearrange
from torch import Tensor

from scratchlm.model import TransformerLM
from scratchlm.nn.attention import CausalSelfAttention
from scratchlm.nn.functional import causal_mask, softmax


@torch.no_grad()
def attention_maps(model: TransformerLM, idx_T: Tensor) -> Tensor:
    """(L, H, T, T) attention probabilities of `model` on one token sequence idx (T,)."""
    inputs: list[Tensor] = []
    hooks = [
        block.attn.register_forward_hook(lambda module, args, out: inputs.append(args[0])) for block in model.layers
    ]
    was_training = model.training
    model.eval()
    try:
        model(idx_T.unsqueeze(0))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    maps = [_probabilities(block.attn, x_1TD[0]) for block, x_1TD in zip(model.layers, inputs, strict=True)]
    return torch.stack(maps)


def _probabilities(attn: CausalSelfAttention, x_TD: Tensor) -> Tensor:
    q_HTd = rearrange(attn.q_proj(x_TD), "t (h d) -> h t d", h=attn.num_heads)
    k_HTd = rearrange(attn.k_proj(x_TD), "t (h d) -> h t d", h=attn.num_heads)
    if attn.rope is not None:
        positions_T = torch.arange(x_TD.shape[0], device=x_TD.device)
        q_HTd, k_HTd = attn.rope(q_HTd, positions_T), attn.rope(k_HTd, positions_T)
    scores_HTT = einsum(q_HTd, k_HTd, "h q d, h k d -> h q k") / math.sqrt(q_HTd.shape[-1])
    if attn.causal:
        scores_HTT = scores_HTT.masked_fill(~causal_mask(x_TD.shape[0], x_TD.shape[0], x_TD.device), -math.inf)
    return softmax(scores_HTT.float(), dim=-1)


def plot_attention_maps(maps_LHTT: Tensor, labels: list[str], path: str | Path, title: str = "") -> Path:
    """A grid: one row per layer, one column per head plus the head average; token labels on the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm

    layers, heads, seq, _ = maps_LHTT.shape
    cols = heads + 1
    # constrained layout keeps the super-labels and the colorbar clear of the tick labels
    fig, axes = plt.subplots(
        layers, cols, figsize=(2.2 * cols + 1.0, 2.2 * layers), squeeze=False, layout="constrained"
    )
    tick_every = max(1, seq // 10)
    ticks = list(range(0, seq, tick_every))
    # One scale for every panel, so the one colorbar reads them all; gamma 0.5: early queries put all their
    # weight on few keys and would wash out the rest.
    norm = PowerNorm(0.5, vmin=0.0, vmax=float(maps_LHTT.max()))
    image = None
    for layer in range(layers):
        panels: list[tuple[Any, str]] = [(maps_LHTT[layer, h], f"L{layer} H{h}") for h in range(heads)]
        panels.append((maps_LHTT[layer].mean(0), f"L{layer} mean"))
        for col, (panel, name) in enumerate(panels):
            ax = axes[layer, col]
            image = ax.imshow(panel.cpu().numpy(), cmap="viridis", norm=norm, aspect="auto")
            ax.set_title(name, fontsize=7)
            ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=5, rotation=90)
            ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=5)
    fig.colorbar(image, ax=list(axes.flat), shrink=0.6, label="attention weight (square-root scale)")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.supxlabel("key: the token attended to (tick labels are token values)", fontsize=8)
    fig.supylabel("query: the token attending", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_layer_means(maps_LHTT: Tensor, labels: list[str], path: str | Path, title: str = "") -> Path:
    """The head-averaged map of every layer, one larger panel each, with token labels on both axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm

    layers, _, seq, _ = maps_LHTT.shape
    fig, axes = plt.subplots(1, layers, figsize=(4.2 * layers, 4.4), squeeze=False)
    tick_every = max(1, seq // 25)
    ticks = list(range(0, seq, tick_every))
    means_LTT = maps_LHTT.mean(1)
    norm = PowerNorm(0.5, vmin=0.0, vmax=float(means_LTT.max()))  # one scale, so the colorbar reads every panel
    for layer in range(layers):
        ax = axes[0, layer]
        image = ax.imshow(means_LTT[layer].cpu().numpy(), cmap="viridis", norm=norm)
        ax.set_title(f"layer {layer}, mean over heads", fontsize=8)
        ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=5, rotation=90)
        ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=5)
        ax.set_xlabel("key (attended to)", fontsize=7)
    axes[0, 0].set_ylabel("query", fontsize=7)
    fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label="attention weight (square-root scale)")
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def offset_attention(maps_LHTT: Tensor, offset: int) -> Tensor:
    """(L, H) mean weight a query at t puts on the key at t + offset (e.g. +1: the next token, the target)."""
    seq = maps_LHTT.shape[-1]
    queries = torch.arange(max(0, -offset), min(seq, seq - offset))
    return maps_LHTT[..., queries, queries + offset].mean(-1)


def describe_attention(maps_LHTT: Tensor) -> list[str]:
    """One measured sentence per layer: where its heads put their weight (previous token, itself, the first
    token, mean look-back distance), and which head is the most previous-token-like."""
    layers, _, seq, _ = maps_LHTT.shape
    query_T1 = torch.arange(seq).unsqueeze(-1)
    distance_TT = (query_T1 - torch.arange(seq).unsqueeze(0)).clamp(min=0).float()
    uniform_lookback = (seq - 1) / 4  # a head spreading evenly over its causal window looks back t/2 on average
    sentences = []
    for layer in range(layers):
        layer_HTT = maps_LHTT[layer].float()
        previous_H = offset_attention(layer_HTT.unsqueeze(0), -1)[0]
        itself = float(offset_attention(layer_HTT.unsqueeze(0), 0).mean())
        first = float(layer_HTT[:, 1:, 0].mean())
        lookback = float((layer_HTT * distance_TT).sum(-1).mean())
        top = int(previous_H.argmax())
        sentences.append(
            f"Layer {layer}: {float(previous_H.mean()):.0%} of the weight on the previous token, {itself:.0%} on "
            f"the token itself, {first:.0%} on the first token; mean look-back {lookback:.1f} positions (an even "
            f"spread would give {uniform_lookback:.1f}). Head {top} is the most previous-token-like "
            f"({float(previous_H[top]):.0%})."
        )
    return sentences
