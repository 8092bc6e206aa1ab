"""The full TransformerLM: parity with an independent reference, causality, variants, config, accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scratchlm.analysis.accounting import flops_per_token, param_counts
from scratchlm.config import ModelConfig
from scratchlm.errors import ConfigError, ShapeError
from scratchlm.model import TransformerLM
from scratchlm.presets import list_presets, model_config_from_preset

from .test_nn_positions import rope_via_complex

F64 = torch.float64


def tiny(**overrides: object) -> ModelConfig:
    base = {"vocab_size": 61, "context_length": 24, "d_model": 32, "num_layers": 2, "num_heads": 4, "d_ff": 80}
    return ModelConfig(**{**base, **overrides})


def reference_lm(weights: dict[str, torch.Tensor], c: ModelConfig, idx: torch.Tensor) -> torch.Tensor:
    """The handout's pre-norm RoPE/SwiGLU LM from PyTorch's own ops, reading only the state dict."""
    x = F.embedding(idx, weights["token_embeddings.weight"])
    positions = torch.arange(idx.shape[-1])
    for i in range(c.num_layers):
        w = {k.removeprefix(f"layers.{i}."): v for k, v in weights.items() if k.startswith(f"layers.{i}.")}
        h = F.rms_norm(x, (c.d_model,), w["ln1.weight"], eps=c.norm_eps)
        q, k, v = (F.linear(h, w[f"attn.{n}_proj.weight"]) for n in "qkv")
        split = lambda t: t.unflatten(-1, (c.num_heads, c.head_dim)).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        q, k = rope_via_complex(q, positions, c.rope_theta), rope_via_complex(k, positions, c.rope_theta)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(-2)
        x = x + F.linear(attn, w["attn.output_proj.weight"])
        h = F.rms_norm(x, (c.d_model,), w["ln2.weight"], eps=c.norm_eps)
        gated = F.silu(F.linear(h, w["ffn.w1.weight"])) * F.linear(h, w["ffn.w3.weight"])
        x = x + F.linear(gated, w["ffn.w2.weight"])
    return F.linear(F.rms_norm(x, (c.d_model,), weights["ln_final.weight"], eps=c.norm_eps), weights["lm_head.weight"])


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
def test_full_model_matches_independent_reference_in_float64(backend: str) -> None:
    c = tiny(attention_backend=backend)
    model = TransformerLM(c).double()
    with torch.no_grad():  # non-trivial gains so a misplaced norm weight would show
        for name, p in model.named_parameters():
            if name.endswith(("ln1.weight", "ln2.weight", "ln_final.weight")):
                p.uniform_(0.5, 1.5)
    idx = torch.randint(0, c.vocab_size, (3, 17))
    targets = torch.randint(0, c.vocab_size, (3, 17))
    logits, loss = model(idx, targets)
    expected = reference_lm(model.state_dict(), c, idx)
    torch.testing.assert_close(logits, expected, rtol=1e-10, atol=1e-10)
    ref_loss = F.cross_entropy(expected.flatten(0, 1), targets.flatten())
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)


def test_state_dict_uses_the_handout_names() -> None:
    keys = set(TransformerLM(tiny(num_layers=1)).state_dict())
    assert keys == {
        "token_embeddings.weight",
        "layers.0.ln1.weight",
        "layers.0.attn.q_proj.weight",
        "layers.0.attn.k_proj.weight",
        "layers.0.attn.v_proj.weight",
        "layers.0.attn.output_proj.weight",
        "layers.0.ln2.weight",
        "layers.0.ffn.w1.weight",
        "layers.0.ffn.w2.weight",
        "layers.0.ffn.w3.weight",
        "ln_final.weight",
        "lm_head.weight",
    }


def test_backends_share_weights_and_agree_on_the_whole_model_with_gradients() -> None:
    ref = TransformerLM(tiny(attention_backend="reference")).double()
    fast = TransformerLM(tiny(attention_backend="sdpa")).double()
    fast.load_state_dict(ref.state_dict())
    idx = torch.randint(0, 61, (2, 24))
    _, loss_ref = ref(idx, idx)
    _, loss_fast = fast(idx, idx)
    torch.testing.assert_close(loss_fast, loss_ref, rtol=1e-12, atol=1e-12)
    loss_ref.backward()
    loss_fast.backward()
    for (name, a), b in zip(ref.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-12, msg=name)


VARIANTS = [
    {},
    {"positional": "sinusoidal"},
    {"positional": "learned"},
    {"positional": "none"},
    {"norm": "layernorm"},
    {"norm": "none"},
    {"norm_position": "post"},
    {"ffn": "silu", "d_ff": None},
    {"ffn": "gelu", "d_ff": None},
    {"tie_embeddings": True},
    {"attention_backend": "sdpa", "positional": "learned", "norm": "layernorm"},
]


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_every_variant_is_causal_and_trains_one_step(overrides: dict) -> None:
    model = TransformerLM(tiny(**overrides)).double()
    idx = torch.randint(0, 61, (2, 20))
    changed = idx.clone()
    changed[:, 12:] = (changed[:, 12:] + 1) % 61
    logits, _ = model(idx)
    logits_changed, _ = model(changed)
    torch.testing.assert_close(logits[:, :12], logits_changed[:, :12], rtol=0, atol=1e-12)
    assert not torch.allclose(logits[:, 12:], logits_changed[:, 12:])
    _, loss = model(idx, changed)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_the_unmasked_model_leaks_the_future() -> None:
    model = TransformerLM(tiny(causal=False)).double()
    idx = torch.randint(0, 61, (1, 20))
    changed = idx.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 61
    assert not torch.allclose(model(idx)[0][:, 0], model(changed)[0][:, 0])


def test_tied_embeddings_share_one_matrix_and_count_it_once() -> None:
    model = TransformerLM(tiny(tie_embeddings=True))
    assert model.lm_head.weight is model.token_embeddings.weight
    untied = TransformerLM(tiny())
    assert untied.num_params() - model.num_params() == 61 * 32


@pytest.mark.parametrize("init", ["cs336", "gpt2"])
def test_a_tied_model_starts_near_ln_v_and_as_a_reset_one_does(init: str) -> None:
    """The shared matrix is also the output layer: a fresh tied model must not keep the Embedding's std-1
    init (first loss ~200 at d_model 256), and building and reset_parameters() must agree on its scale."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=1000, context_length=32, d_model=256, num_layers=2, num_heads=4,
                         tie_embeddings=True, init=init)  # fmt: skip
    model = TransformerLM(config)
    idx, targets = torch.randint(0, 1000, (4, 32)), torch.randint(0, 1000, (4, 32))
    with torch.no_grad():  # random targets: with targets = idx the std-1 tied matrix predicts itself (loss 0)
        fresh_loss = float(model(idx, targets)[1])
        fresh_std = float(model.lm_head.weight.std())
        model.reset_parameters()
        reset_std = float(model.lm_head.weight.std())
    assert fresh_loss < math.log(1000) + 1.0, fresh_loss
    assert fresh_std == pytest.approx(reset_std, rel=0.05)


def test_explicit_positions_shift_rope_consistently() -> None:
    model = TransformerLM(tiny()).double()
    idx = torch.randint(0, 61, (2, 8))
    same, _ = model(idx, token_positions=torch.arange(8))
    torch.testing.assert_close(same, model(idx)[0])
    shifted, _ = model(idx, token_positions=torch.arange(5, 13))
    # RoPE scores depend only on position differences, so a uniform shift changes nothing
    torch.testing.assert_close(shifted, same, rtol=1e-9, atol=1e-9)


def test_reset_parameters_reinitializes_everything() -> None:
    model = TransformerLM(tiny())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    model.reset_parameters()
    for name, value in model.state_dict().items():
        if name.endswith(("ln1.weight", "ln2.weight", "ln_final.weight")):
            assert torch.equal(value, torch.ones_like(value))
        else:
            assert value.std() > 0 and not torch.equal(value, before[name]), name


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32])
def test_narrow_integer_ids_give_the_int64_result(dtype: torch.dtype) -> None:
    # uint8 used to be read as a boolean mask by the embedding lookup, int16 refused by indexing.
    model = TransformerLM(tiny())
    idx, targets = torch.tensor([[1, 2, 3, 60]]), torch.tensor([[2, 3, 4, 5]])
    logits, loss = model(idx, targets)
    narrow_logits, narrow_loss = model(idx.to(dtype), targets.to(dtype))
    assert torch.equal(narrow_logits, logits) and torch.equal(narrow_loss, loss)


def test_input_errors_name_the_argument() -> None:
    model = TransformerLM(tiny())
    with pytest.raises(ShapeError, match="context_length is 24"):
        model(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ShapeError, match="vocab_size is 61"):
        model(torch.tensor([[1, 2, 61]]))
    with pytest.raises(ShapeError, match=r"must hold integers, got dtype torch.float32; convert it with .long\(\)"):
        model(torch.zeros(1, 4))
    with pytest.raises(ShapeError, match=r"must be a torch\.Tensor, got list; wrap it with torch\.as_tensor"):
        model([[1, 2]])
    with pytest.raises(ShapeError, match="`targets` must hold integers"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4))
    with pytest.raises(ShapeError, match=r"`token_positions` holds positions in \[-1, 2\] but the model has"):
        model(torch.zeros(1, 4, dtype=torch.long), token_positions=torch.arange(-1, 3))
    with pytest.raises(ShapeError, match=r"positions in \[22, 25\]"):
        model(torch.zeros(1, 4, dtype=torch.long), token_positions=torch.arange(22, 26))
    with pytest.raises(ConfigError, match="TransformerLM takes a ModelConfig, got dict"):
        TransformerLM({"vocab_size": 61})  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match="`targets` shape"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ShapeError, match="`targets` holds ids"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.full((1, 4), 99))
    _, loss = model(torch.zeros(1, 4, dtype=torch.long), torch.tensor([[1, -100, 2, -100]]))
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d_model": 30}, "divisible by model.num_heads"),
        ({"d_model": 36, "num_heads": 4}, "must be even"),
        ({"num_layers": 0}, "num_layers must be > 0"),
        ({"norm": "batchnorm"}, "model.norm"),
        ({"positional": "alibi"}, "model.positional"),
        ({"attention_backend": "flash9000"}, "attention_backend"),
        ({"dropout": 1.0}, "dropout"),
        ({"d_model": 32.5}, "d_model must be int"),
        ({"causal": "yes"}, "causal must be bool"),
        ({"num_heads": True}, "num_heads must be int"),
        ({"num_heads": np.bool_(True)}, "num_heads must be int"),
        ({"rope_theta": -1.0}, "rope_theta"),
    ],
)
def test_config_validation_gives_one_clear_message(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny(**overrides)


def test_odd_head_dim_is_fine_without_rope_and_ints_become_floats() -> None:
    c = tiny(d_model=36, num_heads=4, positional="sinusoidal", rope_theta=500)
    assert c.head_dim == 9 and isinstance(c.rope_theta, float)


def test_numpy_numbers_become_the_python_numbers_they_stand_for() -> None:
    # Sizes computed with NumPy in a notebook; a checkpoint's config must hold plain values.
    c = tiny(d_model=np.int64(32), num_heads=np.int32(2), dropout=np.float32(0.25), rope_theta=np.int64(500))
    assert (type(c.d_model), type(c.num_heads), type(c.dropout), type(c.rope_theta)) == (int, int, float, float)
    assert c == tiny(d_model=32, num_heads=2, dropout=0.25, rope_theta=500.0)


def test_from_dict_rejects_unknown_and_missing_keys_and_round_trips() -> None:
    c = tiny(ffn="silu", d_ff=None)
    assert ModelConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match=r"unknown model key.*valid keys: vocab_size"):
        ModelConfig.from_dict({**c.to_dict(), "n_embd": 3})
    with pytest.raises(ConfigError, match="missing required"):
        ModelConfig.from_dict({"vocab_size": 3})


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_builds_and_its_counts_match_the_module(name: str) -> None:
    config = model_config_from_preset(name)
    with torch.device("meta"):  # shapes only: the larger presets need no memory or init time
        model = TransformerLM(config)
    counts = param_counts(config)
    assert model.num_params() == counts.total
    assert model.num_params(non_embedding=True) == counts.non_embedding


def test_debug_preset_runs_forward_and_backward() -> None:
    model = TransformerLM(model_config_from_preset("debug"))
    idx = torch.randint(0, 256, (4, 32))
    logits, loss = model(idx, idx)
    assert logits.shape == (4, 32, 256)
    loss.backward()


@pytest.mark.parametrize("overrides", VARIANTS)
def test_param_counts_match_the_built_model(overrides: dict) -> None:
    config = tiny(**overrides)
    model = TransformerLM(config)
    counts = param_counts(config)
    assert model.num_params() == counts.total
    assert model.num_params(non_embedding=True) == counts.non_embedding
    assert counts.matmul == counts.non_embedding + (61 * 32 if config.tie_embeddings else 0)


def test_flops_per_token_follows_6n_plus_attention_and_matches_a_matmul_count() -> None:
    c = model_config_from_preset("tinystories-17m")
    n = param_counts(c).matmul
    assert flops_per_token(c) == 6 * n + 12 * 4 * 16 * 32 * 256
    assert flops_per_token(c, seq_len=128, training=False) == 2 * n + 4 * 4 * 16 * 32 * 128
    # count the forward matmuls of one sequence explicitly (2mnp each) and compare per token
    t, d, f, v, layers = 256, c.d_model, c.d_ff, c.vocab_size, c.num_layers
    per_layer = 2 * t * d * 3 * d + 2 * t * t * d * 2 + 2 * t * d * d + 2 * t * d * f * 3
    forward = layers * per_layer + 2 * t * d * v
    norm_params = (2 * layers + 1) * d  # counted in N by convention, negligible
    assert flops_per_token(c, training=False) == pytest.approx(forward / t + 2 * norm_params)


def test_gpt2_init_gives_small_weights_and_depth_scaled_residual_projections() -> None:
    torch.manual_seed(0)
    model = TransformerLM(tiny(init="gpt2", d_model=64, d_ff=192, num_layers=2))
    stds = {name: p.std().item() for name, p in model.named_parameters() if p.dim() == 2}
    residual = 0.02 / (2 * 2) ** 0.5
    for name, std in stds.items():
        expected = residual if name.endswith(("output_proj.weight", "w2.weight")) else 0.02
        assert abs(std - expected) < 0.12 * expected, (name, std, expected)
    again = TransformerLM(tiny(init="gpt2", d_model=64, d_ff=192, num_layers=2))
    again.reset_parameters()  # re-initializing keeps the scheme
    assert abs(again.token_embeddings.weight.std().item() - 0.02) < 0.003


@pytest.mark.parametrize("init", ["cs336", "gpt2"])
def test_building_on_meta_then_to_empty_keeps_embeddings_tied(init: str) -> None:
    config = ModelConfig(vocab_size=13, context_length=8, d_model=16, num_layers=1, num_heads=2,
                         tie_embeddings=True, init=init)  # fmt: skip
    model = TransformerLM(config, device="meta")
    model.to_empty(device="cpu")
    model.reset_parameters()
    assert model.lm_head.weight is model.token_embeddings.weight
    assert model.num_params() == TransformerLM(config).num_params()
    assert model.lm_head.weight.std() < 0.5  # the head's init, not the embedding's std 1, as when built directly
