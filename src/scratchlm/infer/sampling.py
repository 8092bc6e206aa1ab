"""Choosing the next token from logits: temperature, top-k and top-p (nucleus) filtering, then a draw.

Pure functions on a (B, V) logits tensor; randomness comes only from the `generator` argument, so a
seeded torch.Generator makes sampling reproducible without touching the global RNG.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from scratchlm.errors import ConfigError
from scratchlm.nn.functional import softmax

FLOAT32_TINY = torch.finfo(torch.float32).tiny
TOP_P_SLACK = 1e-6  # relative: float32 sums of probabilities are off by a few ulps; the nucleus is p to 1e-6


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """ConfigError unless temperature >= 0, top_k >= 1 (or None) and 0 < top_p <= 1 (or None)."""
    # Each message names the argument as the library and the CLI (--temperature, --top-k, --top-p) both spell it.
    # numbers.Real / Integral: a NumPy scalar (say a value read from a config array) is as good as a Python one.
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ConfigError(f"temperature (--temperature) must be a number >= 0 (0 means greedy), got {temperature!r}.")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, numbers.Real)):
        raise ConfigError(f"top_p (--top-p) must be a number in (0, 1], got {top_p!r}.")
    if not temperature >= 0.0:
        raise ConfigError(f"temperature (--temperature) must be >= 0 (0 means greedy), got {temperature}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1):
        raise ConfigError(f"top_k (--top-k) must be a positive integer (or left out), got {top_k!r}.")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p (--top-p) must be in (0, 1] (1 keeps every token), got {top_p}.")


# What torch.Generator.manual_seed accepts: a signed or an unsigned 64-bit integer.
SEED_RANGE = (-(2**63), 2**64 - 1)


def seeded_generator(seed: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded with `seed`, or a ConfigError naming the range a seed must lie in."""
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not low <= seed <= high:
        raise ConfigError(f"seed (--seed) must be an integer from -2**63 to 2**64 - 1, got {seed!r}.")
    return torch.Generator(device=device).manual_seed(int(seed))


def filter_top_k(logits_BV: Tensor, k: int) -> Tensor:
    """Keep the k largest logits per row (ties at the k-th value are all kept); the rest become -inf."""
    if k >= logits_BV.shape[-1]:
        return logits_BV
    kth_B1 = torch.topk(logits_BV, k, dim=-1).values[..., -1:]
    return logits_BV.masked_fill(logits_BV < kth_B1, float("-inf"))


def filter_top_p(logits_BV: Tensor, p: float, rank_BV: Tensor | None = None) -> Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p; the rest become -inf.

    rank_BV (default: logits_BV) orders the tokens: the untempered logits, so that where a huge temperature
    flattens logits_BV into ties the nucleus still takes the model's most likely tokens first.
    """
    order_BV = torch.sort(logits_BV if rank_BV is None else rank_BV, dim=-1, descending=True, stable=True).indices
    probs_BV = softmax(logits_BV.gather(-1, order_BV), dim=-1)
    # A token is dropped when the tokens ranked above it already reach p, so the top token always stays.
    # The slack absorbs float32 rounding: a prefix whose mass is p (0.4 + 0.3 + 0.1 against p = 0.8, or 2
    # of 3 equal tokens against 2/3) sums to a hair under p and would keep one token too many. (No float64:
    # MPS has none.)
    # A p below float32's smallest normal number would round to 0 and drop the top token too (all -inf).
    drop_sorted_BV = (probs_BV.cumsum(dim=-1) - probs_BV) >= max(p * (1.0 - TOP_P_SLACK), FLOAT32_TINY)
    drop_BV = torch.zeros_like(drop_sorted_BV).scatter(-1, order_BV, drop_sorted_BV)
    return logits_BV.masked_fill(drop_BV, float("-inf"))


def sample_next_token(
    logits_BV: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, V) logits -> (B,) int64 token ids. temperature 0 is greedy (argmax; top-k/top-p are moot)."""
    check_sampling_args(temperature, top_k, top_p)
    # As Python numbers: torch.topk takes no NumPy integer, and a NumPy float would leak its dtype into the math.
    temperature = float(temperature)
    top_k = None if top_k is None else int(top_k)
    top_p = None if top_p is None else float(top_p)
    if temperature == 0.0:
        return logits_BV.argmax(dim=-1)
    # Shifting the row max to 0 first keeps a tiny temperature finite: (l - max) / T only grows more
    # negative (to -inf at worst) and the softmax is the same; T is kept above float32's smallest normal
    # number, below which it would round to 0 and make the maxima 0 / 0.
    # Top-k and the nucleus's order are taken on the logits before the temperature: dividing by a huge (or
    # infinite) temperature rounds distinct logits to equal ones, and top_k=1 must stay the argmax.
    shifted_BV = logits_BV.float()
    shifted_BV = shifted_BV - shifted_BV.amax(dim=-1, keepdim=True)
    if top_k is not None:
        shifted_BV = filter_top_k(shifted_BV, top_k)
    scaled_BV = shifted_BV / max(temperature, FLOAT32_TINY)
    # A temperature that is inf in float32 makes -inf / inf = NaN: keep dropped tokens dropped (only then, so
    # the ordinary decode step pays no extra pass).
    if temperature >= torch.finfo(torch.float32).max:
        scaled_BV = scaled_BV.masked_fill(shifted_BV == float("-inf"), float("-inf"))
    if top_p is not None and top_p < 1.0:
        scaled_BV = filter_top_p(scaled_BV, top_p, rank_BV=shifted_BV)
    probs_BV = softmax(scaled_BV, dim=-1)
    return torch.multinomial(probs_BV, num_samples=1, generator=generator).squeeze(-1)
