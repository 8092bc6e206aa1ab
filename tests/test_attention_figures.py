"""The attention figures' fixed layout: every panel is there, the token labels are the right ones, and no text
overlaps another or runs off the figure, from one head and a handful of positions to many heads and long
word-piece labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from scratchlm.analysis.attention import attention_grid_figure, layer_means_figure, plot_attention_maps

WORDS = ["Once", "·upon", "·a", "·time,", "\\n", "·extraordi", "·Lily", "·said:", "·W", "∅", "·$x$", "·mmmmmmmmm"]
SHAPES = [(1, 1, 11, "ids"), (2, 2, 64, "ids"), (3, 12, 40, "words"), (2, 4, 200, "words")]


def causal_maps(layers: int, heads: int, seq: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(layers * 100 + heads)
    scores = torch.randn(layers, heads, seq, seq, generator=gen)
    return scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)


def token_labels(kind: str, seq: int) -> list[str]:
    return [str(100 + i) for i in range(seq)] if kind == "ids" else [WORDS[i % len(WORDS)] for i in range(seq)]


def visible_texts(fig) -> list:
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_window_extent"))]
    return [t for t in texts if t.get_visible() and t.get_text().strip() and t.figure is not None]


def assert_texts_apart_and_inside(fig) -> None:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = visible_texts(fig)
    boxes = np.array([t.get_window_extent(renderer).extents for t in texts])  # x0, y0, x1, y1 in pixels
    width, height = fig.canvas.get_width_height()
    outside = (boxes[:, 0] < -0.5) | (boxes[:, 1] < -0.5) | (boxes[:, 2] > width + 0.5) | (boxes[:, 3] > height + 0.5)
    assert not outside.any(), f"clipped: {[texts[i].get_text() for i in np.flatnonzero(outside)]}"
    # Two boxes overlap when they overlap on both axes; a pixel of slack for the rounding of glyph extents.
    x0, y0, x1, y1 = (boxes[:, k] for k in range(4))
    apart_x = (x1[:, None] <= x0[None, :] + 1) | (x1[None, :] <= x0[:, None] + 1)
    apart_y = (y1[:, None] <= y0[None, :] + 1) | (y1[None, :] <= y0[:, None] + 1)
    clash = ~(apart_x | apart_y)
    np.fill_diagonal(clash, False)
    pairs = [(texts[i].get_text(), texts[j].get_text()) for i, j in zip(*np.nonzero(np.triu(clash)), strict=True)]
    assert not pairs, f"overlapping texts: {pairs[:5]}"


def image_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


@pytest.mark.parametrize(("layers", "heads", "seq", "kind"), SHAPES)
def test_the_grid_has_every_head_panel_and_its_texts_stay_apart(layers: int, heads: int, seq: int, kind: str) -> None:
    labels = token_labels(kind, seq)
    fig = attention_grid_figure(causal_maps(layers, heads, seq), labels, "run: attention on validation window 0")
    panels = image_axes(fig)
    assert len(panels) == layers * (heads + 1)
    names = {t.get_text() for t in fig.texts}
    assert {f"L{layer} H{h}" for layer in range(layers) for h in range(heads)} <= names
    assert {f"L{layer} mean" for layer in range(layers)} <= names
    # The panels share both axes: token labels on the bottom row and the left column, each the label of its tick.
    labelled_x = [ax for ax in panels if ax.get_xticklabels()]
    labelled_y = [ax for ax in panels if ax.get_yticklabels()]
    assert len(labelled_x) == heads + 1 and len(labelled_y) == layers
    for ax in labelled_x + labelled_y:
        for axis in (ax.xaxis, ax.yaxis):
            ticks = [int(t) for t in axis.get_ticklocs()]
            if ticks:
                assert [t.get_text() for t in axis.get_ticklabels()] == [labels[i] for i in ticks]
                assert ticks[0] == 0 and seq - 1 - ticks[-1] < ticks[1] - ticks[0] if len(ticks) > 1 else True
    assert_texts_apart_and_inside(fig)


@pytest.mark.parametrize(("layers", "heads", "seq", "kind"), SHAPES)
def test_the_layer_means_label_both_axes_of_every_panel(layers: int, heads: int, seq: int, kind: str) -> None:
    labels = token_labels(kind, seq)
    fig = layer_means_figure(causal_maps(layers, heads, seq), labels, "run: validation window 0")
    panels = image_axes(fig)
    assert len(panels) == layers
    for ax in panels:
        for axis in (ax.xaxis, ax.yaxis):
            ticks = [int(t) for t in axis.get_ticklocs()]
            assert ticks and [t.get_text() for t in axis.get_ticklabels()] == [labels[i] for i in ticks]
    assert_texts_apart_and_inside(fig)


def test_a_short_sequence_gets_a_label_for_every_token(tmp_path) -> None:
    labels = token_labels("words", 12)
    fig = attention_grid_figure(causal_maps(2, 3, 12), labels)
    bottom_left = next(ax for ax in image_axes(fig) if ax.get_xticklabels() and ax.get_yticklabels())
    assert [t.get_text() for t in bottom_left.get_xticklabels()] == labels
    assert [t.get_text() for t in bottom_left.get_yticklabels()] == labels
    path = plot_attention_maps(causal_maps(2, 3, 12), labels, tmp_path / "plots" / "grid.png")
    assert path.read_bytes().startswith(b"\x89PNG")
