"""RoPE against an independent complex-number formulation, its relative-position property, and the
additive position tables."""

from __future__ import annotations

import math

import pytest
import torch

from scratchlm.config import ModelConfig
from scratchlm.model import TransformerLM
from scratchlm.nn.positions import (
    ADDITIVE_POSITION_RMS,
    LearnedPositionalEmbedding,
    RotaryPositionalEmbedding,
    SinusoidalPositionalEmbedding,
)

F64 = torch.float64


def rope_via_complex(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Pairs (x[2k], x[2k+1]) as complex numbers times e^{i pos theta^(-2k/d)}: the RoFormer definition."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=F64) / d)
    rotation = torch.polar(torch.ones(1, dtype=F64), positions.to(F64).unsqueeze(-1) * freqs)
    pairs = torch.view_as_complex(x.to(F64).reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(pairs * rotation).flatten(-2).to(x.dtype)


@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 4)])
def test_rope_matches_the_complex_formulation_with_explicit_positions(batch_shape: tuple[int, ...]) -> None:
    rope = RotaryPositionalEmbedding(theta=10000.0, d_k=16, max_seq_len=64).double()
    x = torch.randn(*batch_shape, 9, 16, dtype=F64)
    positions = torch.randint(0, 64, (*batch_shape, 9))
    torch.testing.assert_close(rope(x, positions), rope_via_complex(x, positions, 10000.0), rtol=1e-12, atol=1e-12)


def test_rope_positions_broadcast_over_heads() -> None:
    rope = RotaryPositionalEmbedding(500.0, 8, 32).double()
    x_BHTD = torch.randn(2, 3, 5, 8, dtype=F64)
    positions_BT = torch.tensor([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
    out = rope(x_BHTD, positions_BT.unsqueeze(-2))
    for b in range(2):
        for h in range(3):
            expected = rope_via_complex(x_BHTD[b, h], positions_BT[b], 500.0)
            torch.testing.assert_close(out[b, h], expected, rtol=1e-12, atol=1e-12)


def test_rope_scores_depend_only_on_relative_position() -> None:
    rope = RotaryPositionalEmbedding(10000.0, 32, 512).double()
    q, k = torch.randn(32, dtype=F64), torch.randn(32, dtype=F64)

    def score(m: int, n: int) -> float:
        qm = rope(q.unsqueeze(0), torch.tensor([m]))
        kn = rope(k.unsqueeze(0), torch.tensor([n]))
        return float((qm * kn).sum())

    for offset in (0, 1, 5, 100):
        reference = score(offset, 0)
        for shift in (1, 37, 300):
            assert score(offset + shift, shift) == pytest.approx(reference, rel=1e-10, abs=1e-10)
    assert score(0, 0) == pytest.approx(float(q @ k), rel=1e-12)  # position 0 is no rotation


def test_rope_preserves_norms_and_dtype() -> None:
    rope = RotaryPositionalEmbedding(10000.0, 64, 128)
    x = torch.randn(4, 128, 64)
    out = rope(x, torch.arange(128))
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
    assert rope(x.to(torch.bfloat16), torch.arange(128)).dtype == torch.bfloat16


def test_rope_tables_are_rebuilt_not_rounded_when_the_module_moves() -> None:
    rope = RotaryPositionalEmbedding(10000.0, 16, 2048)
    assert rope.cos_TP.dtype == torch.float32
    rope.double()
    exact = torch.outer(torch.arange(2048, dtype=F64), 10000.0 ** (-torch.arange(0, 16, 2, dtype=F64) / 16)).cos()
    torch.testing.assert_close(rope.cos_TP, exact, rtol=0, atol=1e-15)
    rope.to(torch.bfloat16)
    assert rope.cos_TP.dtype == torch.float32  # a bf16 table would be off by up to 2e-3 in every entry
    assert not any(name.endswith(("cos_TP", "sin_TP")) for name in rope.state_dict())


def test_rope_rejects_odd_dimensions() -> None:
    with pytest.raises(ValueError, match="even"):
        RotaryPositionalEmbedding(10000.0, 7, 16)


def test_sinusoidal_table_follows_vaswani_and_has_the_stated_scale() -> None:
    table = SinusoidalPositionalEmbedding(d_model=64, max_seq_len=256).double()
    pe = table(torch.arange(256))
    t, i = 37, 5
    assert pe[t, 2 * i].item() == pytest.approx(math.sin(t / 10000 ** (2 * i / 64)), abs=1e-12)
    assert pe[t, 2 * i + 1].item() == pytest.approx(math.cos(t / 10000 ** (2 * i / 64)), abs=1e-12)
    assert pe.pow(2).mean().sqrt().item() == pytest.approx(ADDITIVE_POSITION_RMS, rel=0.02)


def test_learned_positions_start_at_the_sinusoid_scale() -> None:
    learned = LearnedPositionalEmbedding(2048, 128)
    rms = learned(torch.arange(2048)).pow(2).mean().sqrt().item()
    assert rms == pytest.approx(ADDITIVE_POSITION_RMS, rel=0.03)


@pytest.mark.parametrize("positional", ["rope", "sinusoidal"])
def test_a_model_built_in_float64_has_the_tables_of_one_moved_there(positional: str) -> None:
    config = ModelConfig(
        vocab_size=50, context_length=512, d_model=32, num_layers=1, num_heads=2, positional=positional
    )
    built = TransformerLM(config, dtype=torch.float64)
    moved = TransformerLM(config).double()
    moved.load_state_dict(built.state_dict())
    tables = [b for name, b in built.named_buffers() if name.endswith(("cos_TP", "sin_TP", "table_TD"))]
    assert tables and all(t.dtype == torch.float64 for t in tables)
    idx = torch.randint(0, 50, (1, 512), generator=torch.Generator().manual_seed(0))
    assert torch.equal(built(idx)[0], moved(idx)[0])  # far positions are where float32 tables drift (~1e-7)


def test_rope_gradient_matches_the_complex_formulation() -> None:
    # The backward of a rotation is the inverse rotation: a sign slip in either pair term fails here.
    rope = RotaryPositionalEmbedding(theta=10000.0, d_k=16, max_seq_len=64).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 16, dtype=F64, generator=gen)
    positions = torch.randint(0, 64, (2, 1, 9), generator=gen)
    grad_out = torch.randn(2, 3, 9, 16, dtype=F64, generator=gen)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    rope(x_ours, positions).backward(grad_out)
    rope_via_complex(x_ref, positions, 10000.0).backward(grad_out)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d_model", [8, 7])
def test_sinusoidal_table_equals_the_formula_at_every_entry(d_model: int) -> None:
    # An odd width has one more sine column than cosine columns; every entry is checked, not a sample.
    table = SinusoidalPositionalEmbedding(d_model=d_model, max_seq_len=40).double()
    positions = torch.arange(40, dtype=F64).unsqueeze(-1)
    columns = torch.arange(d_model, dtype=F64)
    angle = positions / 10000.0 ** ((columns - columns % 2) / d_model)
    expected = torch.where(columns % 2 == 0, angle.sin(), angle.cos())
    torch.testing.assert_close(table(torch.arange(40)), expected, rtol=1e-12, atol=1e-12)
