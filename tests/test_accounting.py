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
    assert main(["account", "--d-model", "64"]) == 2
    assert "missing --num-layers" in capsys.readouterr().err
