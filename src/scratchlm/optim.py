"""AdamW, the cosine learning-rate schedule with warmup, and gradient clipping, from scratch.

Only the `torch.optim.Optimizer` base class is used from torch.optim (the handout's rule).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from scratchlm.errors import ConfigError

__all__ = ["AdamW", "clip_grad_norm", "get_lr_cosine_schedule", "weight_decay_param_groups"]


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay: Algorithm 2 of Loshchilov & Hutter (2019), the handout's Algorithm 1.

    Per parameter, with t counting this parameter's updates from 1:
        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
        a_t = lr · sqrt(1 - b2^t) / (1 - b1^t)          (bias correction folded into the step size)
        theta <- theta - a_t · m / (sqrt(v) + eps) - lr · wd · theta
    Both updates read the same theta_{t-1} (decay is applied first, in place), as in the paper's algorithm
    and torch.optim.AdamW, which the course's tests compare against. The handout lists the decay after the
    Adam update, on the updated theta; that differs by lr·wd·a_t·m/(sqrt(v) + eps) per step, second order in
    the step size. eps sits on sqrt(v), as in the handout's intent (its rendering sqrt(v + eps) is read as
    sqrt(v) + eps, the paper's).

    Three implementations of the same arithmetic: the per-parameter loop (`foreach=False`, the readable
    reference), a multi-tensor one (`foreach=True`: a handful of `torch._foreach_*` kernels per step, no
    Python loop over parameters; the default when every parameter is on a GPU), and `fused=True` (the fast
    path): PyTorch's fused AdamW kernel, one pass over parameters, gradients and both moments. That kernel
    puts eps on the bias-corrected sqrt(v_hat) = sqrt(v)/sqrt(1 - b2^t); passing it eps/sqrt(1 - b2^t) puts
    it back on sqrt(v), so the update is this one exactly (tests compare all three in float64).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        *,
        foreach: bool | None = None,
        fused: bool = False,
    ) -> None:
        if isinstance(params, nn.Module):
            raise ConfigError(
                f"AdamW takes parameters, not a {type(params).__name__}; pass model.parameters() "
                "(or weight_decay_param_groups(model, weight_decay))."
            )
        for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
            if not _is_number(value):
                raise ConfigError(f"AdamW: {name} must be a number, got {value!r} ({type(value).__name__}).")
        if not lr >= 0.0:
            raise ConfigError(f"AdamW: lr must be >= 0, got {lr}.")
        # A third beta would be silently ignored, a lone float fail deep inside; (b1, b2) is the only form.
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_is_number(b) for b in betas)):
            raise ConfigError(f"AdamW: betas must be a pair of numbers (beta1, beta2), got {betas!r}.")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ConfigError(f"AdamW: betas must each be in [0, 1), got {betas}.")
        if not eps >= 0.0:
            raise ConfigError(f"AdamW: eps must be >= 0, got {eps}.")
        if not weight_decay >= 0.0:
            raise ConfigError(f"AdamW: weight_decay must be >= 0, got {weight_decay}.")
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients.")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
            if group.get("fused", False):
                self._update_fused(group, params)
                continue
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.is_cuda for p in params)
            (self._update_foreach if foreach else self._update_reference)(group, params)
        return loss

    def _step_sizes(self, group: dict, params: list[Tensor]) -> list[float]:
        beta1, beta2 = group["betas"]
        lr = float(group["lr"])  # a 0-d tensor lr too: _foreach_addcdiv_ takes a list of Python numbers
        sizes = []
        for p in params:
            t = self.state[p]["step"]
            sizes.append(lr * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t))
        return sizes

    def _update_reference(self, group: dict, params: list[Tensor]) -> None:
        beta1, beta2 = group["betas"]
        for p, step_size in zip(params, self._step_sizes(group, params), strict=True):
            grad, state = p.grad, self.state[p]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            p.mul_(1.0 - group["lr"] * group["weight_decay"])
            m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
            p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size)

    def _update_foreach(self, group: dict, params: list[Tensor]) -> None:
        beta1, beta2 = group["betas"]
        grads = [p.grad for p in params]
        ms = [self.state[p]["exp_avg"] for p in params]
        vs = [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_mul_(params, 1.0 - float(group["lr"]) * group["weight_decay"])
        torch._foreach_mul_(ms, beta1)
        torch._foreach_add_(ms, grads, alpha=1.0 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, grads, grads, value=1.0 - beta2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(params, ms, denom, [-s for s in self._step_sizes(group, params)])

    def _update_fused(self, group: dict, params: list[Tensor]) -> None:
        beta1, beta2 = group["betas"]
        by_step: dict[int, list[Tensor]] = {}
        for p in params:  # one kernel call per distinct update count (normally a single one)
            by_step.setdefault(self.state[p]["step"], []).append(p)
        for t, ps in by_step.items():
            step_t = torch.full((), float(t), dtype=torch.float32, device=ps[0].device)
            torch._fused_adamw_(
                ps,
                [p.grad for p in ps],
                [self.state[p]["exp_avg"] for p in ps],
                [self.state[p]["exp_avg_sq"] for p in ps],
                [],
                [step_t] * len(ps),
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"] / math.sqrt(1.0 - beta2**t),
                amsgrad=False,
                maximize=False,
            )
            # The fused kernel writes the weights without bumping their version counters, by which a
            # decode cache's packed weights (infer/packed_weights.py) see that they changed.
            torch.autograd.graph.increment_version(ps)


def _is_number(value: object) -> bool:
    """A real number (Python, NumPy) or a 0-d tensor (torch.optim takes a tensor lr); not a bool."""
    if isinstance(value, Tensor):
        return value.dim() == 0 and value.is_floating_point()
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def weight_decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices (embeddings, projections, head) decay; vectors (norm gains, biases) do not."""
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def get_lr_cosine_schedule(
    it: int,
    max_learning_rate: float,
    min_learning_rate: float,
    warmup_iters: int,
    cosine_cycle_iters: int,
) -> float:
    """Learning rate at iteration `it`: linear warmup, cosine decay to the minimum, then the minimum.

    Warmup (it < Tw): it/Tw · max. Cosine (Tw <= it <= Tc): min + (1 + cos(pi (it-Tw)/(Tc-Tw)))/2 · (max-min).
    After (it > Tc): min. So the rate is exactly the minimum at it = Tc, and 0 at it = 0 when Tw > 0.
    Tc counts from 0, not from the end of warmup: it must be >= Tw (ConfigError otherwise).
    """
    if not 0 <= warmup_iters <= cosine_cycle_iters:
        # Tc < Tw would drop from the warmup straight to the minimum, with no cosine phase at all.
        raise ConfigError(
            f"the cosine schedule needs 0 <= warmup_iters <= cosine_cycle_iters, got warmup_iters {warmup_iters} "
            f"and cosine_cycle_iters {cosine_cycle_iters}; cosine_cycle_iters is the iteration the decay ends at, "
            "counted from 0 (warmup included)."
        )
    if it < warmup_iters:
        return it / warmup_iters * max_learning_rate
    if it > cosine_cycle_iters:
        return min_learning_rate
    if cosine_cycle_iters == warmup_iters:  # no cosine phase: warmup ends at the peak
        return max_learning_rate
    progress = (it - warmup_iters) / (cosine_cycle_iters - warmup_iters)
    return min_learning_rate + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_learning_rate - min_learning_rate)


@torch.no_grad()
def clip_grad_norm(parameters: Iterable[Tensor] | Tensor, max_l2_norm: float, eps: float = 1e-6) -> Tensor:
    """Scale all gradients in place so their global l2 norm is at most `max_l2_norm`; return the pre-clip norm.

    `parameters`: an iterable of tensors or a single tensor (as torch.nn.utils.clip_grad_norm_ takes).
    `max_l2_norm` must be > 0; math.inf measures the norm without clipping. The scale is max/(norm + eps)
    when norm exceeds max, else 1 (the result lands just under the maximum). It is applied as a tensor, so
    no host sync is needed; a NaN norm propagates for the caller to detect.
    """
    if not (_is_number(max_l2_norm) and max_l2_norm > 0):
        # 0 would zero every gradient (not "no clipping", as optim.grad_clip = 0 means), a negative value
        # would flip them all: both silently stop training.
        raise ConfigError(
            f"clip_grad_norm: max_l2_norm must be > 0, got {max_l2_norm!r}; pass math.inf to measure the norm "
            "without clipping, or skip the call."
        )
    if isinstance(parameters, Tensor):
        parameters = [parameters]  # iterating one tensor would yield its rows, which have no .grad
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    per_tensor_norms = torch._foreach_norm(grads)  # one fused kernel instead of a loop of reductions
    # Squared in float32: an fp16 norm above 256 squares to inf, and max / inf would zero every gradient.
    norms = torch.stack(per_tensor_norms)
    total_norm = norms.to(torch.promote_types(norms.dtype, torch.float32)).pow(2).sum().sqrt()
    # Only a norm above the maximum is scaled, as the CS336 handout has it: clamping max/(norm + eps) at 1
    # would also shrink norms within eps under the maximum.
    scale = torch.where(total_norm > max_l2_norm, max_l2_norm / (total_norm + eps), torch.ones_like(total_norm))
    torch._foreach_mul_(grads, scale)
    return total_norm
