"""Next-token sampling: greedy, temperature, top-k, top-p, and reproducibility through a torch.Generator."""

from __future__ import annotations

import pytest
import torch

from scratchlm.errors import ConfigError
from scratchlm.infer.sampling import filter_top_k, filter_top_p, sample_next_token


def test_temperature_zero_is_greedy():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, -1.0, 4.9]])
    assert sample_next_token(logits, temperature=0.0).tolist() == [1, 0]


def test_top_k_keeps_only_the_k_best():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    assert torch.isinf(filter_top_k(logits, 2)).tolist() == [[True, False, False, True]]
    generator = torch.Generator().manual_seed(0)
    draws = {int(sample_next_token(logits, top_k=1, generator=generator)) for _ in range(20)}
    assert draws == {1}


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = ~torch.isinf(filter_top_p(probs.log(), 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    kept_tiny = ~torch.isinf(filter_top_p(probs.log(), 1e-6))
    assert kept_tiny.tolist() == [[True, False, False, False]]  # the top token always survives


def test_a_prefix_whose_mass_is_exactly_p_is_the_whole_nucleus():
    # In float32 these prefixes sum to a hair under p; the nucleus must still stop at them.
    kept = ~torch.isinf(filter_top_p(torch.tensor([[0.4, 0.3, 0.1, 0.1, 0.1]]).log(), 0.8))
    assert kept.sum().item() == 3
    wrong = [
        (size, j)
        for size in range(1, 60)
        for j in range(1, size + 1)
        if (~torch.isinf(filter_top_p(torch.zeros(1, size), j / size))).sum().item() != j
    ]
    assert wrong == []


def test_a_seeded_generator_reproduces_draws_and_frequencies_follow_the_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0]]).expand(4000, 3)
    first = sample_next_token(logits, generator=torch.Generator().manual_seed(1))
    second = sample_next_token(logits, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, second)
    frequencies = torch.bincount(first, minlength=3).float() / 4000
    assert torch.allclose(frequencies, torch.softmax(logits[0], -1), atol=0.03)
    hot = sample_next_token(logits, temperature=100.0, generator=torch.Generator().manual_seed(1))
    assert torch.bincount(hot, minlength=3).min() > 1100  # a high temperature flattens toward uniform


@pytest.mark.parametrize(
    "kwargs", [{"temperature": -1.0}, {"top_k": 0}, {"top_k": 1.5}, {"top_p": 0.0}, {"top_p": 1.5}]
)
def test_bad_sampling_arguments_are_rejected(kwargs):
    with pytest.raises(ConfigError):
        sample_next_token(torch.zeros(1, 3), **kwargs)


@pytest.mark.parametrize("temperature", [float("inf"), 1e39, 1e38])
def test_top_k_one_is_the_argmax_at_any_temperature(temperature):
    # A huge temperature flattens the tempered logits into ties; the ranking must still be the model's.
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.5]]).expand(200, 4)
    draws = sample_next_token(logits, temperature=temperature, top_k=1, generator=torch.Generator().manual_seed(0))
    assert draws.tolist() == [1] * 200
    two = sample_next_token(logits, temperature=temperature, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(two.tolist()) == {1, 3}  # the two best, about uniformly at this temperature


def test_the_nucleus_of_a_flattened_distribution_takes_the_model_s_best_tokens():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.5]]).expand(400, 4)
    draws = sample_next_token(logits, temperature=float("inf"), top_p=0.5, generator=torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {1, 3}  # uniform probabilities: half the mass is the two best tokens


def test_an_infinite_temperature_with_a_filter_never_draws_nan():
    logits = torch.tensor([[0.0, 3.0, float("-inf"), 2.5]])
    counts = torch.zeros(4)
    for seed in range(50):
        generator = torch.Generator().manual_seed(seed)
        counts[sample_next_token(logits, temperature=float("inf"), top_k=3, generator=generator)] += 1
    assert counts[2] == 0 and counts[[0, 1, 3]].min() > 5
