"""Activation memory: the textbook count, and the measurement of what scratchlm's model saves for backward.

The measurement runs on the "meta" device (nothing allocated, nothing computed); here it is checked, byte
for byte, against the same forward pass run for real on the CPU, where the saved tensors hold memory."""

from __future__ import annotations

import json

import pytest

from scratchlm.analysis.accounting import gpt2_config
from scratchlm.analysis.activations import activation_estimate, measure_saved_activations
from scratchlm.cli import main
from scratchlm.config import ModelConfig

TINY = {"vocab_size": 97, "context_length": 16, "d_model": 32, "num_layers": 2, "num_heads": 4}


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"dropout": 0.1},
        {"fast": True, "attention_backend": "sdpa"},
        {"fast": True},
        {"ffn": "gelu", "norm": "layernorm", "positional": "learned", "tie_embeddings": True},
        {"positional": "none", "norm": "none", "norm_position": "post"},
    ],
    ids=["reference", "dropout", "fast-sdpa", "fast-reference-attention", "gpt2-style", "no-norm"],
)
def test_the_meta_measurement_equals_a_real_cpu_forward_byte_for_byte(extra: dict) -> None:
    config = ModelConfig(**TINY, **extra)
    on_meta = measure_saved_activations(config, batch_size=3)
    on_cpu = measure_saved_activations(config, batch_size=3, device="cpu")
    assert on_meta == on_cpu
    assert on_meta.total == sum(on_meta.by_part.values()) > 0


def test_a_shorter_sequence_is_measured_at_its_own_length() -> None:
    config = ModelConfig(**TINY)
    short = measure_saved_activations(config, batch_size=2, seq_len=8)
    assert short == measure_saved_activations(config, batch_size=2, seq_len=8, device="cpu")
    assert short.total < measure_saved_activations(config, batch_size=2).total


def test_flash_attention_and_the_fused_loss_keep_no_t_by_t_scores_or_logits() -> None:
    """At T = 1024 the reference path's attention keeps (B, H, T, T) tensors; sdpa's flash kernel keeps only
    q, k, v, the output and a (B, H, T) log-sum-exp, and the fused head + loss keeps no (B, T, V) logits."""
    reference = ModelConfig.from_dict(gpt2_config("gpt2-small").to_dict())
    fast = ModelConfig.from_dict({**reference.to_dict(), "fast": True, "attention_backend": "sdpa"})
    b, t, d, h, v = 4, 1024, 768, 12, 50257
    ref, flash = measure_saved_activations(reference, b), measure_saved_activations(fast, b)
    per_layer_scores = 4 * b * h * t * t
    assert ref.by_part["attention"] > 12 * 2 * per_layer_scores  # at least scores and probabilities
    assert flash.by_part["attention"] < 12 * per_layer_scores
    assert ref.by_part["head and loss"] >= 2 * 4 * b * t * v  # logits and their softmax
    assert flash.by_part["head and loss"] < 4 * b * t * v  # d/dh (B·T·D) and d/dW (V·D), computed ahead
    assert flash.by_part["head and loss"] >= 4 * (b * t * d + v * d)


def test_the_fast_swiglu_keeps_its_gate_up_output_and_not_the_sigmoid() -> None:
    """Per layer, the fused FFN keeps its input x (N·D), the concatenated [W_1; W_3] (2F·D, a copy, not a
    parameter), the gate|up output (2F·N) and W_2's input (F·N); the reference also keeps sigmoid(gate) and
    silu(gate) but no concatenation: N·D + 5F·N."""
    fast, reference = ModelConfig(**TINY, fast=True), ModelConfig(**TINY)
    assert fast.d_ff is not None
    n, d, f, layers, fp32 = 3 * TINY["context_length"], TINY["d_model"], fast.d_ff, TINY["num_layers"], 4
    kept = measure_saved_activations(fast, batch_size=3).by_part["ffn"]
    assert kept == layers * fp32 * (n * d + 2 * f * d + 3 * f * n)
    assert measure_saved_activations(reference, batch_size=3).by_part["ffn"] == layers * fp32 * (n * d + 5 * f * n)


def test_the_fast_attention_with_rope_keeps_no_more_of_the_qkv_output_than_without() -> None:
    """Without RoPE, q, k and v are views of one (N, 3D) matmul output that attention keeps. RoPE gives q and k
    their own storage, and v is copied out of the output too, so v alone does not keep it alive (that was
    2·N·D more per layer). RoPE then adds its cos and sin rows, gathered once for q and once for k
    (4·T·Dh/2), and one (N, D) copy of the attention output: SDPA writes its output in q's layout, T-major
    for a view of the matmul output (so the output projection reads it as it is) but head-major after RoPE."""
    by_positional = {
        positional: measure_saved_activations(
            ModelConfig(**TINY, fast=True, attention_backend="sdpa", positional=positional), batch_size=3
        ).by_part["attention"]
        for positional in ("rope", "none")
    }
    n, d, t, layers, fp32 = 3 * TINY["context_length"], TINY["d_model"], TINY["context_length"], TINY["num_layers"], 4
    head_dim = d // TINY["num_heads"]
    assert by_positional["rope"] - by_positional["none"] == layers * fp32 * (n * d + 4 * t * head_dim // 2)


def test_the_textbook_count_by_hand() -> None:
    # B 2, T 4, D 8, H 2, F 16, V 10, one pre-norm SwiGLU block: B·T·D = 64, B·H·T² = 64, B·T·F = 128, B·T·V = 80.
    config = ModelConfig(vocab_size=10, context_length=4, d_model=8, num_layers=1, num_heads=2, d_ff=16)
    e = activation_estimate(config, batch_size=2)
    assert (e.norms, e.qkv_projections, e.attention_scores, e.attention_softmax) == (3 * 64, 3 * 64, 64, 64)
    assert (e.attention_values, e.output_projection, e.ffn_hidden, e.ffn_output) == (64, 64, 4 * 128, 64)
    assert (e.logits, e.cross_entropy) == (80, 80)
    assert e.total == 192 + 192 + 64 + 64 + 64 + 64 + 512 + 64 + 80 + 80
    mlp = activation_estimate(ModelConfig.from_dict({**config.to_dict(), "ffn": "gelu"}), batch_size=2)
    assert mlp.ffn_hidden == 2 * 128


def test_account_batch_size_prints_both_counts_and_the_json_carries_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["account", "--preset", "debug", "--batch-size", "3"]) == 0
    out = capsys.readouterr().out
    assert "activations kept for backward at batch 3 x" in out
    assert "textbook count (each op's output once):" in out
    assert "measured, scratchlm's reference path (reference attention):" in out
    assert main(["account", "--preset", "debug", "--batch-size", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["activations"]
    from scratchlm.presets import model_config_from_preset

    config = model_config_from_preset("debug")
    measured = measure_saved_activations(config, 3)
    assert report["measured_bytes"] == {**measured.by_part, "total": measured.total}
    assert report["estimate_bytes"]["total"] == 4 * activation_estimate(config, 3).total
    assert (report["batch_size"], report["seq_len"]) == (3, config.context_length)


def test_account_without_batch_size_counts_no_activations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["account", "--preset", "debug", "--json"]) == 0
    assert "activations" not in json.loads(capsys.readouterr().out)


def test_account_refuses_a_batch_size_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["account", "--preset", "debug", "--batch-size", "0"]) == 2
    assert capsys.readouterr().err.strip() == "scratchlm: error: --batch-size must be at least 1, got 0."


def test_account_refuses_a_batch_size_too_large_for_a_tensor(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["account", "--model", "gpt2-xl", "--batch-size", str(10**14)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scratchlm: error: batch size 100000000000000 is too large to count:"), err
    assert main(["account", "--model", "gpt2-xl", "--batch-size", str(10**6), "--json"]) == 0  # large is fine
    assert json.loads(capsys.readouterr().out)["activations"]["measured_bytes"]["total"] > 10**15


def test_a_gpt2_shape_at_a_new_width_keeps_d_ff_four_times_d_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["account", "--model", "gpt2-small", "--d-model", "1536", "--json"]) == 0
    model = json.loads(capsys.readouterr().out)["model"]
    assert (model["d_model"], model["d_ff"]) == (1536, 6144)
    assert main(["account", "--preset", "debug", "--d-model", "128", "--json"]) == 0  # presets: SwiGLU's 8/3 rule
    model = json.loads(capsys.readouterr().out)["model"]
    assert model["d_ff"] == ModelConfig(**{**TINY, "d_model": 128}).d_ff
