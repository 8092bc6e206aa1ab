"""One decode step captured as a CUDA graph and replayed for every generated token.

At the sizes this project trains, a GPU decode step is a few hundred tiny kernels, and launching them from
Python costs more than running them. A static KV cache (kv_cache.py) gives the step fixed shapes and keeps
its write position in a device tensor, so the whole step (embedding, every layer, the head) is recorded
once and replayed with a single launch. Shapes: B = batch rows, V = vocabulary.

The math is the eager static-cache step's, which tests/test_kv_cache.py checks against uncached decoding on
the CPU; this file only adds the capture, so it needs a CUDA device. The step captured is the eager forward
by default, or any function of the same contract: `compiled_step.CompiledDecodeStep.forward`, whose fused
kernels then replay from the graph too (`decode_steps(..., compile=True, cuda_graph=True)`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scratchlm.errors import ConfigError
from scratchlm.infer.kv_cache import KVCache
from scratchlm.model import TransformerLM

WARMUP_STEPS = 2  # eager runs on a side stream first, so lazy initialization never happens inside a capture


class GraphedDecodeStep:
    """`step(tokens_B) -> logits_BV`: feeds one token per row through a captured forward over `cache`.

    The cache must be static and already hold the prompt; the returned logits live in a buffer the next
    call overwrites (copy them to keep them). `forward(tokens_B1) -> logits_BV` is the step to capture
    (default: the eager model forward over `cache`); it must leave the host half of the cache's
    bookkeeping to this class (`KVCache.advance`), which replays cannot run.
    """

    def __init__(self, model: TransformerLM, cache: KVCache, forward: Callable[[Tensor], Tensor] | None = None) -> None:
        device = model.token_embeddings.weight.device
        if device.type != "cuda":
            raise ConfigError(f"CUDA-graph decoding needs the model on a CUDA device, not {device}.")
        if not cache.static:
            raise ConfigError("CUDA-graph decoding needs a static KV cache (KVCache(..., static=True)).")
        if forward is None:
            forward = _eager_forward(model, cache)
        self.cache = cache
        self.tokens_B1 = torch.zeros(cache.batch_size, 1, dtype=torch.long, device=device)
        cache.reserve_advances = False  # a replay runs no Python: __call__ advances the cache instead
        # Warm-up and capture each run the step once; rewinding the write position afterwards makes those
        # runs leave no trace (the slots they wrote are rewritten before any query may see them).
        state = cache.snapshot()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                forward(self.tokens_B1)
                cache.restore(state)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits_BV = forward(self.tokens_B1)
        cache.restore(state)

    def __call__(self, tokens_B: Tensor) -> Tensor:
        self.cache.advance(1)  # the capacity check and the host-side count (and re-packing changed weights)
        self.tokens_B1.copy_(tokens_B.view(-1, 1))
        self.graph.replay()  # advances the device-side write position itself
        return self.logits_BV


def _eager_forward(model: TransformerLM, cache: KVCache) -> Callable[[Tensor], Tensor]:
    def forward(tokens_B1: Tensor) -> Tensor:
        logits_B1V, _ = model(tokens_B1, kv_cache=cache)
        return logits_B1V[:, -1]

    return forward
