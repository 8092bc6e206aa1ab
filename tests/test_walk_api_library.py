"""Using scratchlm as a library, as a notebook would: the top-level names, a hand-written training loop's
optimizer pieces, and the argument errors each give one sentence naming the fix."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import scratchlm
from scratchlm import ModelConfig, TransformerLM, generate
from scratchlm.errors import ConfigError, ShapeError
from scratchlm.optim import AdamW, clip_grad_norm, get_lr_cosine_schedule


def small_config(**overrides: object) -> ModelConfig:
    values = {"vocab_size": 50, "context_length": 16, "d_model": 32, "num_layers": 1, "num_heads": 2}
    return ModelConfig(**{**values, **overrides})


def test_dir_lists_the_lazy_top_level_names() -> None:
    # Notebook completion and dir() only see what __dir__ lists; the lazy names live in __getattr__.
    assert set(scratchlm.__all__) <= set(dir(scratchlm))


def test_a_config_changed_after_it_was_checked_is_checked_again() -> None:
    config = small_config()
    config.positional = "alibi"  # before: a model with no positions at all, silently
    with pytest.raises(ConfigError, match=r"model\.positional = 'alibi' is not one of"):
        TransformerLM(config)


def test_the_model_keeps_its_own_config() -> None:
    config = small_config()
    model = TransformerLM(config)
    config.num_layers = 3
    assert model.config.num_layers == 1 and model.config == small_config()


@pytest.mark.parametrize("fast", [False, True])
def test_an_empty_batch_gives_empty_logits(fast: bool) -> None:
    model = TransformerLM(small_config(fast=fast))
    logits, _ = model(torch.zeros(0, 4, dtype=torch.long))
    assert logits.shape == (0, 4, 50)


def test_positions_that_do_not_fit_the_input_name_the_shapes() -> None:
    model = TransformerLM(small_config())
    idx = torch.zeros(2, 6, dtype=torch.long)
    with pytest.raises(ShapeError, match=r"`token_positions` shape \(5,\) does not fit `idx` shape \(2, 6\)"):
        model(idx, token_positions=torch.arange(5))
    with pytest.raises(ShapeError, match="does not fit"):
        model(idx, token_positions=torch.zeros(3, 6, dtype=torch.long))
    for positions in (torch.arange(6), torch.arange(6).expand(2, 6), torch.arange(6)[None]):
        model(idx, token_positions=positions)  # shared, per row, or broadcast from one row


def test_the_position_shape_rule_is_torch_broadcasting() -> None:
    from scratchlm.model import _broadcasts_to

    def torch_rule(shape: torch.Size, target: torch.Size) -> bool:
        try:
            return torch.broadcast_shapes(shape, target) == target
        except RuntimeError:
            return False

    shapes = [torch.Size(dims) for rank in range(4) for dims in itertools.product((1, 2, 3), repeat=rank)]
    for shape, target in itertools.product(shapes, shapes):
        assert _broadcasts_to(shape, target) == torch_rule(shape, target), (shape, target)


def test_generate_refuses_a_module_that_is_not_a_transformer_lm() -> None:
    with pytest.raises(ConfigError, match="generate takes a scratchlm TransformerLM, got Linear"):
        generate(torch.nn.Linear(2, 2), [[1]], max_new_tokens=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": "1e-3"}, "lr must be a number, got '1e-3'"),
        ({"betas": (0.9, 0.95, 0.99)}, r"betas must be a pair of numbers"),
        ({"betas": 0.9}, r"betas must be a pair of numbers"),
        ({"weight_decay": None}, "weight_decay must be a number"),
    ],
)
def test_adamw_argument_errors_are_one_sentence(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AdamW([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_adamw_given_the_model_says_to_pass_its_parameters() -> None:
    with pytest.raises(ConfigError, match=r"pass model.parameters\(\)"):
        AdamW(torch.nn.Linear(2, 2))


def test_adamw_takes_a_tensor_learning_rate_as_torch_does() -> None:
    AdamW([torch.nn.Parameter(torch.zeros(2))], lr=torch.tensor(1e-3))


@pytest.mark.parametrize("max_norm", [0.0, -1.0, float("nan")])
def test_clip_grad_norm_refuses_a_bound_that_would_zero_or_flip_the_gradients(max_norm: float) -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.ones(3)
    with pytest.raises(ConfigError, match="max_l2_norm must be > 0"):
        clip_grad_norm([p], max_norm)
    assert torch.equal(p.grad, torch.ones(3))


def test_clip_grad_norm_takes_one_tensor_and_inf_only_measures() -> None:
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.full((4,), 3.0)
    assert clip_grad_norm(p, math.inf).item() == pytest.approx(6.0)
    assert torch.equal(p.grad, torch.full((4,), 3.0))
    assert clip_grad_norm(p, 1.0).item() == pytest.approx(6.0)  # before: no grads found, nothing clipped
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-5)


def test_cosine_schedule_refuses_a_cycle_that_ends_before_the_warmup() -> None:
    with pytest.raises(ConfigError, match="0 <= warmup_iters <= cosine_cycle_iters"):
        get_lr_cosine_schedule(5, 1.0, 0.1, warmup_iters=10, cosine_cycle_iters=5)
    assert get_lr_cosine_schedule(3, 1.0, 0.1, warmup_iters=3, cosine_cycle_iters=3) == 1.0
