"""One decode step compiled with torch.compile, its elementwise work fused into a few kernels per layer.

Why: an eager one-token step at this project's sizes is ~50 small kernels per layer, each paying a launch
(from Python on a CPU or a GPU, or from a CUDA graph's replay) that costs more than its arithmetic.
Compiling merges the norms, RoPE, reshapes, residual adds, masking and softmax into a handful of kernels
around the matmuls: the tinystories-17m fast-path step (4 layers, static cache) is 195 kernel-launching
ATen ops eager and 38 kernel or library calls compiled, counted on the CPU by
benchmarks/decode_kernels.py. On a GPU the compiled step can then be captured as a CUDA graph
(cuda_graph.py), which also removes the launches from Python.

One compile per session shape, not per token:
- the cache is static (kv_cache.py): fixed shapes, and the write position is a device tensor, so every
  step presents the same tensors and dynamo's guards hold from the second token on;
- the one part of a forward that changes per token on the host, the Python slot count, stays out of the
  compiled code: the cache's `reserve_advances` is False and `__call__` runs `KVCache.advance` before it;
- `dynamic=False` specializes every shape: a changed shape is a visible recompile, not a silently dynamic
  kernel (tests/test_compiled_decode.py counts the graphs: one per shape, so no graph breaks either);
- one module-level torch.compile (`_compiled_forward`), so dynamo's cache is shared by every session: a
  second generation with the same batch, cache size, padding and dtype compiles nothing. Past dynamo's
  `recompile_limit` shapes in one process (8 by default) new shapes run the same step eagerly: slower,
  still exact (not fullgraph=True, which would make that an error); reaching the limit logs a warning
  that says so and how to raise it.

The prefill stays eager: it runs once per generation with a shape (B, P) that changes with every prompt,
so compiling it would mean one compile per prompt length (or dynamic shapes) to save one forward whose
kernels are already large. Sampling stays outside as well (sampling.py): a torch.Generator argument is
not traceable, and a greedy argmax inside would save one launch next to the step's dozens.
Shapes: B = batch rows, V = vocabulary.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import torch
from torch import Tensor

from scratchlm.errors import ConfigError
from scratchlm.infer.kv_cache import KVCache
from scratchlm.model import TransformerLM

logger = logging.getLogger(__name__)


def _forward_one_token(model: TransformerLM, cache: KVCache, tokens_B1: Tensor) -> Tensor:
    logits_B1V, _ = model(tokens_B1, kv_cache=cache)
    return logits_B1V[:, -1]


@functools.cache
def _compiled_forward() -> Callable[[TransformerLM, KVCache, Tensor], Tensor]:
    return torch.compile(_forward_one_token, dynamic=False)


def _compiled_shapes() -> int | None:
    """How many shapes dynamo holds compiled code for (None where this torch's private API differs)."""
    try:
        from torch._dynamo.eval_frame import _debug_get_cache_entry_list

        return len(_debug_get_cache_entry_list(_forward_one_token.__code__))
    except (ImportError, AttributeError, TypeError):
        return None


@functools.cache
def _warn_once(shapes: int, setting: str) -> None:
    logger.warning(
        "the compiled decode step now holds %d shapes, the limit torch._dynamo.config.%s: any further "
        "batch size or cache length in this process decodes eagerly (same tokens, slower); reuse shapes or "
        "raise the limit, e.g. torch._dynamo.config.%s = %d.",
        shapes,
        setting,
        setting,
        2 * shapes,
    )


def _recompile_limit() -> tuple[str, int] | None:
    """dynamo's per-function limit and its name: `recompile_limit`, `cache_size_limit` in older torch."""
    for setting in ("recompile_limit", "cache_size_limit"):
        limit = getattr(torch._dynamo.config, setting, None)
        if isinstance(limit, int):
            return setting, limit
    return None


def _warn_at_recompile_limit() -> None:
    shapes, limit = _compiled_shapes(), _recompile_limit()
    if shapes is not None and limit is not None and shapes >= limit[1]:
        _warn_once(shapes, limit[0])


class CompiledDecodeStep:
    """`step(tokens_B) -> logits_BV`: one token per row through the compiled forward over a static cache.

    The cache must already hold the prompt. Construction runs one throw-away step (rewound afterwards),
    which compiles, or finds the code an earlier session of the same shapes compiled; its wall time is
    `compile_s`, logged and kept apart from decoding.
    """

    def __init__(self, model: TransformerLM, cache: KVCache) -> None:
        if not cache.static:
            raise ConfigError("compiled decoding needs a static KV cache (KVCache(..., static=True)).")
        self.model = model
        self.cache = cache
        self._forward = _compiled_forward()
        self.tokens_B1 = torch.zeros(cache.batch_size, 1, dtype=torch.long, device=cache.next_slot.device)
        cache.reserve_advances = False  # the compiled code runs no per-token Python: __call__ advances instead
        state = cache.snapshot()
        start = time.perf_counter()
        self.forward(self.tokens_B1)
        if self.tokens_B1.is_cuda:
            torch.cuda.synchronize(self.tokens_B1.device)
        self.compile_s = time.perf_counter() - start
        cache.restore(state)  # the slot it wrote is rewritten before any query may see it
        _warn_at_recompile_limit()
        logger.info(
            "decode step compiled in %.1f s (batch %d, %d cache slots; a repeat of earlier shapes reuses the code)",
            self.compile_s,
            cache.batch_size,
            cache.max_len,
            extra={"compile_s": self.compile_s},
        )

    def forward(self, tokens_B1: Tensor) -> Tensor:
        """The device half of a step, (B, 1) tokens -> (B, V) logits: what a CUDA graph captures."""
        with torch.no_grad():  # one grad mode, so one set of guards, whoever calls
            return self._forward(self.model, self.cache, tokens_B1)

    def __call__(self, tokens_B: Tensor) -> Tensor:
        self.cache.advance(1)  # the capacity check and the host-side count (and re-packing changed weights)
        self.tokens_B1.copy_(tokens_B.view(-1, 1))
        return self.forward(self.tokens_B1)
