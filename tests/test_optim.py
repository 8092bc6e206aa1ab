"""AdamW against torch.optim.AdamW, the two AdamW implementations against each other, the cosine
schedule's three regimes, and gradient clipping against torch.nn.utils.clip_grad_norm_."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from scratchlm.errors import ConfigError
from scratchlm.optim import AdamW, clip_grad_norm, get_lr_cosine_schedule, weight_decay_param_groups

F64 = torch.float64


def run_optimizer(make_opt, steps: int = 100, seed: int = 0) -> list[torch.Tensor]:
    """Minimize a fixed random quadratic-plus-noise objective; returns the final parameters."""
    gen = torch.Generator().manual_seed(seed)
    params = [
        torch.randn(5, 4, dtype=F64, generator=gen).requires_grad_(),
        torch.randn(7, dtype=F64, generator=gen).requires_grad_(),
    ]
    targets = [torch.randn(p.shape, dtype=F64, generator=gen) for p in params]
    opt = make_opt(params)
    for step in range(steps):
        opt.zero_grad()
        loss = sum(
            ((p - t) ** 2).sum() + 0.1 * (p * math.sin(step)).sum() for p, t in zip(params, targets, strict=True)
        )
        loss.backward()
        opt.step()
    return [p.detach() for p in params]


HYPER = {"lr": 3e-2, "betas": (0.9, 0.95), "weight_decay": 0.1}


@pytest.mark.parametrize("foreach", [False, True])
def test_adamw_equals_torch_exactly_when_eps_is_zero(foreach: bool) -> None:
    # With eps = 0 the handout's eps placement (on sqrt(v)) and torch's (on sqrt(v_hat)) coincide, so the
    # two implementations of Loshchilov & Hutter's algorithm 2 must agree to float64 rounding.
    ours = run_optimizer(lambda p: AdamW(p, eps=0.0, foreach=foreach, **HYPER))
    theirs = run_optimizer(lambda p: torch.optim.AdamW(p, eps=0.0, **HYPER))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_adamw_with_default_eps_stays_within_the_eps_placement_difference() -> None:
    ours = run_optimizer(lambda p: AdamW(p, eps=1e-8, **HYPER))
    theirs = run_optimizer(lambda p: torch.optim.AdamW(p, eps=1e-8, **HYPER))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_foreach_and_reference_loops_are_the_same_arithmetic() -> None:
    a = run_optimizer(lambda p: AdamW(p, foreach=False, **HYPER), seed=3)
    b = run_optimizer(lambda p: AdamW(p, foreach=True, **HYPER), seed=3)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-14, atol=1e-14)


def test_fused_kernel_is_the_same_arithmetic_as_the_reference_loop() -> None:
    # A large eps makes its placement matter: the fused kernel must get it back onto sqrt(v).
    hyper = {**HYPER, "eps": 1e-3}
    a = run_optimizer(lambda p: AdamW(p, foreach=False, **hyper), seed=5)
    b = run_optimizer(lambda p: AdamW(p, fused=True, **hyper), seed=5)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_adamw_matches_the_handout_update_by_hand() -> None:
    p = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    opt = AdamW([p], lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5)
    g = torch.tensor([0.3, -0.4], dtype=F64)
    theta = p.detach().clone()
    m = torch.zeros(2, dtype=F64)
    v = torch.zeros(2, dtype=F64)
    for t in (1, 2, 3):
        p.grad = g * t
        opt.step()
        m = 0.9 * m + 0.1 * g * t
        v = 0.99 * v + 0.01 * (g * t) ** 2
        alpha_t = 0.1 * math.sqrt(1 - 0.99**t) / (1 - 0.9**t)
        theta = theta - alpha_t * m / (v.sqrt() + 1e-8) - 0.1 * 0.5 * theta
        torch.testing.assert_close(p.detach(), theta, rtol=1e-14, atol=1e-14)


def test_adamw_state_round_trips_through_state_dict() -> None:
    params = [torch.randn(3, requires_grad=True)]
    opt = AdamW(params, lr=0.01)
    params[0].grad = torch.randn(3)
    opt.step()
    clone = AdamW([torch.nn.Parameter(params[0].detach().clone())], lr=0.01)
    clone.load_state_dict(opt.state_dict())
    state = next(iter(clone.state.values()))
    assert state["step"] == 1
    torch.testing.assert_close(state["exp_avg"], next(iter(opt.state.values()))["exp_avg"])


@pytest.mark.parametrize("kwargs", [{"lr": -1.0}, {"betas": (1.0, 0.9)}, {"eps": -1e-8}, {"weight_decay": -0.1}])
def test_adamw_rejects_invalid_hyperparameters(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        AdamW([torch.zeros(1, requires_grad=True)], **kwargs)


def test_weight_decay_groups_decay_matrices_only() -> None:
    from scratchlm.model import TransformerLM
    from scratchlm.presets import model_config_from_preset

    model = TransformerLM(model_config_from_preset("debug"))
    decay, no_decay = weight_decay_param_groups(model, 0.1)
    assert all(p.dim() == 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_cosine_schedule_three_regimes() -> None:
    kw = {"max_learning_rate": 1.0, "min_learning_rate": 0.1, "warmup_iters": 7, "cosine_cycle_iters": 21}
    assert get_lr_cosine_schedule(0, **kw) == 0.0
    assert get_lr_cosine_schedule(3, **kw) == pytest.approx(3 / 7)
    assert get_lr_cosine_schedule(7, **kw) == pytest.approx(1.0)
    assert get_lr_cosine_schedule(14, **kw) == pytest.approx(0.1 + 0.5 * 0.9)
    assert get_lr_cosine_schedule(21, **kw) == pytest.approx(0.1)
    assert get_lr_cosine_schedule(22, **kw) == 0.1
    assert get_lr_cosine_schedule(1000, **kw) == 0.1
    values = [get_lr_cosine_schedule(t, **kw) for t in range(7, 22)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    # no warmup and no cosine phase are both well defined
    assert get_lr_cosine_schedule(0, 1.0, 0.1, 0, 10) == 1.0
    assert get_lr_cosine_schedule(5, 1.0, 0.1, 5, 5) == 1.0


def test_cosine_schedule_matches_the_handout_reference_values() -> None:
    # the CS336 test's expected sequence for max 1, min 0.1, warmup 7, cycle 21 (first 25 iterations)
    expected = [
        0, 0.14285714285714285, 0.2857142857142857, 0.42857142857142855, 0.5714285714285714,
        0.7142857142857143, 0.8571428571428571, 1.0, 0.9887175604818206, 0.9554359905560885,
        0.9018241671106134, 0.8305704108364301, 0.7452476826029011, 0.6501344202803414,
        0.55, 0.44986557971965857, 0.3547523173970989, 0.26942958916356996, 0.19817583288938662,
        0.14456400944391146, 0.11128243951817937, 0.1, 0.1, 0.1, 0.1,
    ]  # fmt: skip
    actual = [get_lr_cosine_schedule(it, 1.0, 0.1, 7, 21) for it in range(25)]
    assert actual == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("max_norm", [0.01, 1.0, 1e6])
def test_clip_grad_norm_matches_torch(max_norm: float) -> None:
    shapes = [(5, 4), (7,), (3, 2, 2)]
    ours = [torch.randn(s, dtype=F64, requires_grad=True) for s in shapes]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    for a, b in zip(ours, theirs, strict=True):
        a.grad = torch.randn_like(a) * 3
        b.grad = a.grad.clone()
    frozen = torch.randn(2, requires_grad=True)  # no grad: must be skipped
    norm = clip_grad_norm([*ours, frozen], max_norm)
    ref_norm = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    torch.testing.assert_close(norm, ref_norm, rtol=1e-12, atol=1e-12)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)
    new_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in ours))
    assert new_norm <= max_norm + 1e-9


def test_a_norm_just_under_the_maximum_is_left_as_is() -> None:
    # torch's clip_grad_norm_ scales by max/(norm + 1e-6) clamped at 1, which shrinks this gradient too.
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    p.grad = torch.tensor([1 - 1e-7], dtype=torch.float64)
    clip_grad_norm([p], 1.0)
    assert p.grad.item() == 1 - 1e-7


def test_clip_grad_norm_without_grads_returns_zero() -> None:
    assert clip_grad_norm([torch.zeros(3, requires_grad=True)], 1.0).item() == 0.0


def run_two_groups(make_opt, steps: int = 30) -> list[torch.Tensor]:
    """Two groups with their own lr and weight decay. The vector skips every third step (grad None), so its
    update count, and with it its bias correction, falls behind that of the matrix in its group (the fused
    kernel's one-call-per-update-count split)."""
    gen = torch.Generator().manual_seed(11)
    matrix = torch.randn(4, 3, dtype=F64, generator=gen).requires_grad_()
    other = torch.randn(2, 5, dtype=F64, generator=gen).requires_grad_()
    vector = torch.randn(6, dtype=F64, generator=gen).requires_grad_()
    opt = make_opt(
        [
            {"params": [matrix, vector], "lr": 3e-2, "weight_decay": 0.1},
            {"params": [other], "lr": 1e-2, "weight_decay": 0.0},
        ]
    )
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = (matrix.sin() * (step + 1)).sum() + other.pow(3).sum() * 0.1
        if step % 3 != 2:
            loss = loss + (vector - step * 0.1).pow(2).sum()
        loss.backward()
        opt.step()
    return [p.detach() for p in (matrix, other, vector)]


@pytest.mark.parametrize("impl", ["reference", "foreach", "fused"])
def test_adamw_matches_torch_per_group_with_params_that_skip_steps(impl: str) -> None:
    # eps = 0 so the eps placement cannot differ: any gap is a per-group hyperparameter or step-count bug.
    kwargs = {"foreach": impl == "foreach", "fused": impl == "fused"}
    ours = run_two_groups(lambda groups: AdamW(groups, betas=(0.9, 0.95), eps=0.0, **kwargs))
    theirs = run_two_groups(lambda groups: torch.optim.AdamW(groups, betas=(0.9, 0.95), eps=0.0))
    for name, a, b in zip(("matrix", "other", "vector"), ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def test_clipping_fp16_gradients_with_a_large_norm_scales_them_as_torch_does() -> None:
    ours, theirs = (torch.nn.Parameter(torch.zeros(100, dtype=torch.float16)) for _ in range(2))
    for p in (ours, theirs):
        p.grad = torch.full((100,), 30.0, dtype=torch.float16)  # norm 300: its square overflows fp16
    norm = clip_grad_norm([ours], 1.0)
    expected = torch.nn.utils.clip_grad_norm_([theirs], 1.0)
    assert float(norm) == pytest.approx(float(expected), rel=1e-3)
    assert torch.allclose(ours.grad.float(), theirs.grad.float(), rtol=1e-3)
    assert float(ours.grad[0]) == pytest.approx(0.1, rel=1e-2)  # it was 0: every gradient zeroed


@pytest.mark.parametrize("foreach", [False, True])
def test_a_tensor_learning_rate_steps_on_every_path(foreach: bool) -> None:
    torch.manual_seed(0)
    start = torch.randn(3, 4)
    reference, with_tensor_lr = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    for p in (reference, with_tensor_lr):
        p.grad = torch.linspace(-1.0, 1.0, 12).reshape(3, 4)
    AdamW([reference], lr=1e-3, foreach=foreach).step()
    AdamW([with_tensor_lr], lr=torch.tensor(1e-3), foreach=foreach).step()
    assert torch.allclose(with_tensor_lr, reference, rtol=0, atol=1e-7)
    assert not torch.equal(reference, start)
