"""Attention maps: the softmax weights of every layer and head for one input.

The attention modules do not keep their weights (the fused backend never materializes them), so a forward
hook records each layer's input and the maps are recomputed from the layer's own projections and RoPE:
the same math, read back. Shapes: L = layers, H = heads, T = positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from einops import einsum, rearrange
from torch import Tensor

from scratchlm.fileio import atomic_write
from scratchlm.model import TransformerLM
from scratchlm.nn.attention import CausalSelfAttention
from scratchlm.nn.functional import causal_mask, softmax

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


# Figure geometry, in inches and points at this resolution. The layout is computed from the number of layers,
# heads and positions and the measured width of the token labels, not searched by matplotlib's constrained
# layout or a tight bounding box: those re-measure every text artist, several times, and were most of the time
# `scratchlm report` and `scratchlm attention` spent.
_DPI = 110
_PAD = 0.1
_TICK_PT = 5.0
_PANEL_TITLE_PT = 7.0
_AXIS_LABEL_PT = 8.0
_TITLE_PT = 9.0
_TICK_SPACE = 0.12  # a tick mark (3.5 pt) and its pad (3.5 pt), with a little room
_COLORBAR_WIDTH = 0.12
_COLORBAR_LABEL = "attention weight\n(square-root scale)"
_KEY_LABEL = "key: the token attended to (tick labels are token values)"
_QUERY_LABEL = "query: the token attending"


def plot_attention_maps(maps_LHTT: Tensor, labels: list[str], path: str | Path, title: str = "") -> Path:
    """A grid: one row per layer, one column per head plus the head average; token labels on the axes."""
    return _save(attention_grid_figure(maps_LHTT, labels, title), path)


def plot_layer_means(maps_LHTT: Tensor, labels: list[str], path: str | Path, title: str = "") -> Path:
    """The head-averaged map of every layer, one larger panel each, with token labels on both axes."""
    return _save(layer_means_figure(maps_LHTT, labels, title), path)


def attention_grid_figure(maps_LHTT: Tensor, labels: list[str], title: str = "") -> Figure:
    """The figure plot_attention_maps saves: one row per layer, one column per head plus the head mean, one
    colorbar. Token labels sit on the outer panels only: every panel has the same key and query axes."""
    from matplotlib.colors import PowerNorm

    layers, heads, seq, _ = maps_LHTT.shape
    side = _panel_side(seq, smallest=1.7, largest=3.0)
    ticks = _ticks(seq, side)
    shown = [labels[i] for i in ticks]
    fig, text = _figure_and_measure()
    label_extent = max((text(s, _TICK_PT)[0] for s in shown), default=0.0)
    column_gap, mean_gap = 0.08, 0.25  # the mean column stands apart: it is not a head
    title_band = text("L0 mean", _PANEL_TITLE_PT)[1] + 0.1
    row_step = side + title_band
    left = _PAD + text(_QUERY_LABEL, _AXIS_LABEL_PT)[1] + 0.08 + label_extent + _TICK_SPACE
    bottom = _PAD + text(_KEY_LABEL, _AXIS_LABEL_PT)[1] + 0.08 + label_extent + _TICK_SPACE
    top = _PAD + (text(title, _TITLE_PT)[1] + 0.1 if title else 0.0) + title_band
    panels_width = (heads + 1) * side + (heads - 1) * column_gap + mean_gap
    panels_height = layers * row_step - title_band
    width = max(
        left + panels_width + _colorbar_margin(text),
        2 * _PAD + text(title, _TITLE_PT)[0],
        2 * _PAD + text(_KEY_LABEL, _AXIS_LABEL_PT)[0],
    )
    height = max(top + panels_height + bottom, 2 * _PAD + text(_QUERY_LABEL, _AXIS_LABEL_PT)[0])
    fig.set_size_inches(width, height)
    values = maps_LHTT.detach().float().cpu()
    # One scale for every panel, so the one colorbar reads them all; gamma 0.5: early queries put all their
    # weight on few keys and would wash out the rest.
    norm = PowerNorm(0.5, vmin=0.0, vmax=float(values.max()))
    interpolation = _interpolation(seq, side)
    image = None
    for layer in range(layers):
        y0 = height - top - side - layer * row_step
        panels = [(values[layer, h], f"L{layer} H{h}") for h in range(heads)]
        panels.append((values[layer].mean(0), f"L{layer} mean"))
        for col, (panel, name) in enumerate(panels):
            x0 = left + col * (side + column_gap) + (mean_gap - column_gap if col == heads else 0.0)
            ax = fig.add_axes((x0 / width, y0 / height, side / width, side / height))
            image = ax.imshow(panel.numpy(), cmap="viridis", norm=norm, aspect="auto", interpolation=interpolation)
            _token_ticks(ax, ticks, shown, x=layer == layers - 1, y=col == 0)
            # fig.text, not ax.set_title: a title re-places itself against the axes' ticks at every draw
            fig.text((x0 + side / 2) / width, (y0 + side + 0.05) / height, name, fontsize=_PANEL_TITLE_PT, ha="center")
    stack_bottom = height - top - panels_height
    _colorbar(fig, image, left + panels_width + 0.2, stack_bottom, panels_height)
    if title:
        fig.text(0.5, 1 - _PAD / height, title, fontsize=_TITLE_PT, ha="center", va="top", parse_math=False)
    x = _clamped_centre(left + panels_width / 2, text(_KEY_LABEL, _AXIS_LABEL_PT)[0], width)
    fig.text(x / width, _PAD / height, _KEY_LABEL, fontsize=_AXIS_LABEL_PT, ha="center", va="bottom")
    y = _clamped_centre(stack_bottom + panels_height / 2, text(_QUERY_LABEL, _AXIS_LABEL_PT)[0], height)
    fig.text(_PAD / width, y / height, _QUERY_LABEL, fontsize=_AXIS_LABEL_PT, rotation=90, ha="left", va="center")
    return fig


def layer_means_figure(maps_LHTT: Tensor, labels: list[str], title: str = "") -> Figure:
    """The figure plot_layer_means saves: one larger panel per layer, token labels on both axes of each."""
    from matplotlib.colors import PowerNorm

    layers, _, seq, _ = maps_LHTT.shape
    side = _panel_side(seq, smallest=3.4, largest=5.0)
    ticks = _ticks(seq, side)
    shown = [labels[i] for i in ticks]
    fig, text = _figure_and_measure()
    label_band = max((text(s, _TICK_PT)[0] for s in shown), default=0.0) + _TICK_SPACE
    axis_label = text("key (attended to)", _PANEL_TITLE_PT)
    left = _PAD + axis_label[1] + 0.06 + label_band
    gap = label_band + 0.2  # every panel keeps its own query labels: the panels are far apart to read across
    bottom = _PAD + axis_label[1] + 0.06 + label_band
    title_band = text("layer 0", _AXIS_LABEL_PT)[1] + 0.1
    top = _PAD + (text(title, _TITLE_PT)[1] + 0.1 if title else 0.0) + title_band
    panels_width = layers * side + (layers - 1) * gap
    width = max(left + panels_width + _colorbar_margin(text), 2 * _PAD + text(title, _TITLE_PT)[0])
    height = top + side + bottom
    fig.set_size_inches(width, height)
    means_LTT = maps_LHTT.detach().float().cpu().mean(1)
    norm = PowerNorm(0.5, vmin=0.0, vmax=float(means_LTT.max()))  # one scale, so the colorbar reads every panel
    interpolation = _interpolation(seq, side)
    image = None
    for layer in range(layers):
        x0 = left + layer * (side + gap)
        ax = fig.add_axes((x0 / width, bottom / height, side / width, side / height))
        image = ax.imshow(
            means_LTT[layer].numpy(), cmap="viridis", norm=norm, aspect="auto", interpolation=interpolation
        )
        _token_ticks(ax, ticks, shown, x=True, y=True)
        centre = (x0 + side / 2) / width
        fig.text(
            centre, (bottom + side + 0.05) / height, f"layer {layer}, mean over heads", fontsize=_AXIS_LABEL_PT,
            ha="center",
        )  # fmt: skip
        fig.text(centre, _PAD / height, "key (attended to)", fontsize=_PANEL_TITLE_PT, ha="center", va="bottom")
    fig.text(
        _PAD / width, (bottom + side / 2) / height, "query", fontsize=_PANEL_TITLE_PT, rotation=90, ha="left",
        va="center",
    )  # fmt: skip
    _colorbar(fig, image, left + panels_width + 0.2, bottom, side)
    if title:
        fig.text(0.5, 1 - _PAD / height, title, fontsize=_TITLE_PT, ha="center", va="top", parse_math=False)
    return fig


def _figure_and_measure() -> tuple[Figure, Callable[[str, float], tuple[float, float]]]:
    """A figure drawn by Agg, and text(s, points) -> (width, height) in inches, as that renderer draws s."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties

    # matplotlib's Figure, not pyplot's: nothing to close, and no global figure registry to leak into
    fig = Figure(dpi=_DPI)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fonts: dict[float, FontProperties] = {}

    def text(s: str, points: float) -> tuple[float, float]:
        if not s:
            return 0.0, 0.0
        font = fonts.setdefault(points, FontProperties(size=points))
        w, h, _ = renderer.get_text_width_height_descent(s, font, ismath=False)
        # a line of text is laid out at least as tall as the font's ascent + descent ("lp")
        line = renderer.get_text_width_height_descent("lp", font, ismath=False)[1]
        return w / _DPI, max(h, line) * 1.15 / _DPI

    return fig, text


def _panel_side(seq: int, smallest: float, largest: float) -> float:
    """A square panel's side (inches): a pixel per position where that fits between the two bounds."""
    return min(max(seq / _DPI, smallest), largest)


def _interpolation(seq: int, side: float) -> str:
    # Nearest shows each weight as one block of pixels. A panel with fewer pixels than positions would drop
    # whole rows that way (a previous-token diagonal would break up), so it is resampled with smoothing.
    return "nearest" if side * _DPI >= seq else "antialiased"


def _ticks(seq: int, side: float) -> list[int]:
    """Every k-th position, as densely as labels of _TICK_PT fit along a panel of `side` inches."""
    fit = max(1, int(side * 72 / (_TICK_PT * 1.5)))
    return list(range(0, seq, math.ceil(seq / fit)))


def _token_ticks(ax: Any, ticks: list[int], shown: list[str], *, x: bool, y: bool) -> None:
    # parse_math off: a token such as "$x$" is text, not a formula (and "$\" would not parse at all)
    ax.set_xticks(ticks if x else [], shown if x else [], fontsize=_TICK_PT, rotation=90, parse_math=False)
    ax.set_yticks(ticks if y else [], shown if y else [], fontsize=_TICK_PT, parse_math=False)


def _colorbar_margin(text: Callable[[str, float], tuple[float, float]]) -> float:
    """Inches right of the panels: the gap, the colorbar, its tick labels and its two-line label."""
    ticks = text("0.000", 7.0)[0] + _TICK_SPACE
    return 0.2 + _COLORBAR_WIDTH + ticks + 0.08 + 2 * text("a", 7.0)[1] + _PAD


def _colorbar(fig: Figure, image: Any, x0: float, y0: float, height: float) -> None:
    width_in, height_in = fig.get_size_inches()
    cax = fig.add_axes((x0 / width_in, y0 / height_in, _COLORBAR_WIDTH / width_in, height / height_in))
    bar = fig.colorbar(image, cax=cax)
    cax.tick_params(labelsize=7.0)
    bar.set_label(_COLORBAR_LABEL, fontsize=7.0)


def _clamped_centre(centre: float, extent: float, total: float) -> float:
    """`centre`, moved just enough that a text `extent` long centred there stays inside [0, total]."""
    return min(max(centre, _PAD + extent / 2), total - _PAD - extent / 2)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    # Whole or not at all: a refused write (disk full, a folder or a pipe in its place, a file where --out's
    # folder should be) is one WriteError or DataError, and the figure drawn before is kept.
    with atomic_write(path) as fh:
        fig.savefig(fh, format=path.suffix[1:] or "png", dpi=_DPI)
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
