"""Linear, Embedding and the normalization layers, from scratch.

Only `nn.Module`, `nn.Parameter` and `nn.init.trunc_normal_` are used from torch.nn (the handout's rule).
Every layer separates construction from initialization: `reset_parameters()` can be called again.
Shapes: `...` is any number of leading batch dims.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scratchlm.errors import ConfigError, ShapeError


class Linear(nn.Module):
    """y = x W^T without bias; W is stored (d_out, d_in) like nn.Linear, so rows are output features."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Variance 2/(d_in + d_out) (Glorot, the CS336 handout's init) sits between 1/d_in, which keeps the
        # forward activations' scale, and 1/d_out, which keeps the gradients'; truncation at 3 sigma
        # removes the rare huge initial weights.
        std = math.sqrt(2.0 / (self.in_features + self.out_features))
        nn.init.trunc_normal_(self.weight, mean=0.0, std=std, a=-3.0 * std, b=3.0 * std)

    def forward(self, x: Tensor) -> Tensor:
        # (..., d_in) @ (d_in, d_out): the same contraction as einsum("... i, o i -> ... o"), without its
        # per-call parsing (3x less overhead for the one-token matmuls of decoding).
        return x @ self.weight.T

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Embedding(nn.Module):
    """Lookup table (num_embeddings, embedding_dim): row i is the vector of token i."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        init_std: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.init_std = init_std
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # N(0, 1) truncated at 3 sigma by default (the handout's): unit-scale vectors, the scale every norm
        # layer brings its activations to.
        std = self.init_std
        nn.init.trunc_normal_(self.weight, mean=0.0, std=std, a=-3.0 * std, b=3.0 * std)

    def forward(self, token_ids: Tensor) -> Tensor:
        """(...) integer ids -> (..., embedding_dim)."""
        return self.weight[as_index(token_ids, "Embedding: token ids")]

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}"


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * g over the last dim: (..., d_model) -> (..., d_model).

    Computed in (at least) float32 and returned in the input dtype.
    """

    def __init__(
        self,
        d_model: int,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(d_model, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        in_dtype = x.dtype
        # Squares of fp16 activations overflow past ~256, and a bf16 mean of squares keeps 8 significant
        # bits; float64 inputs stay float64.
        x = x.to(torch.promote_types(in_dtype, torch.float32))
        inv_rms = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (x * inv_rms * self.weight).to(in_dtype)

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}"


class LayerNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) * g + b over the last dim, (..., d_model), for the normalization ablations.

    Computed like RMSNorm in (at least) float32; the variance is the biased one (mean of squared deviations),
    as in torch's layer_norm.
    """

    def __init__(
        self,
        d_model: int,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(d_model, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(d_model, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        in_dtype = x.dtype
        x = x.to(torch.promote_types(in_dtype, torch.float32))
        centered = x - x.mean(dim=-1, keepdim=True)
        inv_std = torch.rsqrt(centered.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (centered * inv_std * self.weight + self.bias).to(in_dtype)

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}"


class NoNorm(nn.Module):
    """The identity, standing in for a norm layer in the "no normalization" ablation."""

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: Tensor) -> Tensor:
        return x


def build_norm(
    kind: str, d_model: int, eps: float, device: torch.device | str | None, dtype: torch.dtype | None
) -> nn.Module:
    """The norm layer named by ModelConfig.norm ("rmsnorm", "layernorm" or "none").

    A name added to config.NORMS must be added here too (and to `analysis.accounting.param_counts`): an
    unknown name is an error rather than a model that silently trains without normalization.
    """
    if kind == "rmsnorm":
        return RMSNorm(d_model, eps, device=device, dtype=dtype)
    if kind == "layernorm":
        return LayerNorm(d_model, eps, device=device, dtype=dtype)
    if kind == "none":
        return NoNorm()
    raise ConfigError(f"no norm layer is built for {kind!r}; add it to scratchlm.nn.layers.build_norm.")


def as_index(ids: Tensor, what: str) -> Tensor:
    """Integer ids as an index tensor: uint8 (or bool) indexing would select rows as a mask, and int8 / int16
    are not index dtypes at all."""
    if ids.dtype in (torch.int64, torch.int32):
        return ids
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ShapeError(f"{what} must be integers, got {ids.dtype}; convert with .long().")
    return ids.long()
