"""Accounting against hand-computed values for the handout's GPT-2 shapes, and the `account` command."""

from __future__ import annotations

import json

import pytest

from scratchlm.analysis.accounting import forward_flops, gpt2_config, param_counts, training_memory
from scratchlm.cli import main


def test_gpt2_xl_parameters_memory_and_flops_match_hand_counts() -> None:
    c = gpt2_config("gpt2-xl")
    d, f, v, layers, t = 1600, 6400, 50257, 48, 1024
    per_layer = 4 * d * d + 3 * d * f + 2 * d  # attention, SwiGLU, two RMSNorm gains
    assert param_counts(c).total == 2 * v * d + layers * per_layer + d == 2_127_057_600
    assert training_memory(c, 4).weights == 2_127_057_600 * 4  # ~8.5 GB in fp32
    flops = forward_flops(c)
    assert flops.attention_projections == layers * 8 * t * d * d
    assert flops.attention_scores == flops.attention_mixing == layers * 2 * t * t * d
    assert flops.ffn == layers * 3 * 2 * t * d * f
    assert flops.lm_head == 2 * t * d * v
    assert flops.total == pytest.approx(4.513e12, rel=1e-3)
    assert flops.shares()["ffn"] == pytest.approx(0.669, abs=1e-3)


def test_longer_context_shifts_flops_to_attention() -> None:
    short, long = forward_flops(gpt2_config("gpt2-xl")), forward_flops(gpt2_config("gpt2-xl", 16384))
    assert long.total / short.total == pytest.approx(33.1, abs=0.1)
    assert long.shares()["attention_scores"] > 7 * short.shares()["attention_scores"]


# Hand-computed with the handout's shapes (V 50,257, T 1,024, SwiGLU d_ff = 4·d): parameters
# 2·V·d + L·(4d² + 3·d·4d + 2d) + d; forward FLOPs L·(8·T·d² + 4·T²·d + 24·T·d²) + 2·T·d·V.
@pytest.mark.parametrize(
    ("name", "params", "flops", "ffn_share"),
    [
        ("gpt2-small", 190_460_160, 349_630_365_696, 0.4975),
        ("gpt2-medium", 505_629_696, 1_033_109_504_000, 0.5987),
        ("gpt2-large", 1_072_469_760, 2_257_754_521_600, 0.6420),
    ],
)
def test_the_smaller_gpt2_shapes_match_hand_counts(name: str, params: int, flops: int, ffn_share: float) -> None:
    config = gpt2_config(name)
    assert param_counts(config).total == params
    assert forward_flops(config).total == flops
    assert forward_flops(config).shares()["ffn"] == pytest.approx(ffn_share, abs=1e-4)


@pytest.mark.parametrize("name", ["gpt2-small", "gpt2-medium", "gpt2-large"])
def test_attention_share_grows_less_than_ffn_with_width(name: str) -> None:
    shares = forward_flops(gpt2_config(name)).shares()
    assert abs(sum(shares.values()) - 1.0) < 1e-12
    xl = forward_flops(gpt2_config("gpt2-xl")).shares()
    assert shares["ffn"] < xl["ffn"] and shares["lm_head"] > xl["lm_head"]


def test_account_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["account", "--model", "gpt2-small", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["d_model"] == 768 and report["forward_flops"]["total"] > 0
    assert main(["account", "--preset", "debug", "--d-model", "64"]) == 0
    assert "d_model 64" in capsys.readouterr().out
    assert main(["account", "--model", "gpt2-xl", "--context-length", "16384", "--json"]) == 0
    long = json.loads(capsys.readouterr().out)
    assert long["model"]["context_length"] == 16384
    assert long["forward_flops"]["total"] == pytest.approx(forward_flops(gpt2_config("gpt2-xl", 16384)).total)
    assert main(["account", "--d-model", "64"]) == 2
    assert "missing --num-layers" in capsys.readouterr().err


@pytest.mark.parametrize(
    "shape",
    [
        {},
        {"norm": "layernorm", "ffn": "gelu", "positional": "learned"},
        {"norm": "none", "ffn": "silu", "tie_embeddings": True},
        {"norm_position": "post", "positional": "sinusoidal", "tie_embeddings": True},
    ],
)
def test_param_counts_equal_the_built_models_parameters(shape: dict) -> None:
    from scratchlm.config import ModelConfig
    from scratchlm.model import TransformerLM

    config = ModelConfig(vocab_size=37, context_length=16, d_model=24, num_layers=2, num_heads=3, **shape)
    counts = param_counts(config)
    assert counts.total == sum(p.numel() for p in TransformerLM(config).parameters())
    assert counts.matmul == counts.non_embedding + (37 * 24 if config.tie_embeddings else 0)


def test_account_prints_small_memory_in_small_units_and_the_training_flops(capsys: pytest.CaptureFixture[str]) -> None:
    from scratchlm.analysis.accounting import flops_per_token
    from scratchlm.presets import model_config_from_preset

    assert main(["account", "--preset", "debug"]) == 0
    out = capsys.readouterr().out
    assert "0.00 GiB" not in out and "weights 144.62 KiB" in out  # 37,024 fp32 parameters
    config = model_config_from_preset("debug")
    assert f"training FLOPs per token at T = 64: {flops_per_token(config):.4g} (6N + 12·L·H·Q·T)" in out
    assert main(["account", "--preset", "debug", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train_flops_per_token"] == 6 * report["params"]["matmul"] + 12 * 2 * 4 * 8 * 64


def test_info_prints_the_n_its_flops_use_when_the_head_is_tied(capsys: pytest.CaptureFixture[str]) -> None:
    # With a tied head N counts the V x D matrix the non-embedding count leaves out: the 6N must be readable.
    assert main(["info", "--preset", "debug", "--set", "model.tie_embeddings=true"]) == 0
    out = capsys.readouterr().out
    n = 28_832  # 2 layers x (4·32² + 3·32·64 + 2·32) + final norm 32 + the tied 256 x 32 head
    assert f"N = {n:,} in matmuls" in out
    assert f"{6 * n + 12 * 2 * 4 * 8 * 64:.4g} (6N + 12·L·H·Q·T at T=64)" in out


@pytest.mark.parametrize(
    ("preset", "args", "overrides"),
    [
        ("shakespeare-char", ["--ffn", "gelu"], ['model.ffn="gelu"']),
        ("capstone-10m", ["--set", 'model.ffn="gelu"'], ['model.ffn="gelu"']),
        ("scratch1", ["--set", "model.d_model=128"], ["model.d_model=128"]),  # the preset's d_ff 1024 stays
    ],
)
def test_account_counts_the_model_train_builds_from_the_same_settings(
    capsys: pytest.CaptureFixture[str], preset: str, args: list[str], overrides: list[str]
) -> None:
    import torch

    from scratchlm.model import TransformerLM
    from scratchlm.presets import resolve_run_config

    assert main(["account", "--preset", preset, *args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    config = resolve_run_config(preset, None, overrides).model
    with torch.device("meta"):
        built = TransformerLM(config)
    assert report["model"]["d_ff"] == config.d_ff
    assert report["params"]["total"] == sum(p.numel() for p in built.parameters())
