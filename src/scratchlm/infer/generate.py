"""Autoregressive generation: prompts in, continuations out, one sampled token per row and step.

Shapes: B = prompts (rows), P = the longest prompt, T = positions, V = vocabulary.

- Batched prompts of different lengths are left-padded into one KV cache: row b's prompt fills the last
  len_b of the first P slots, its positions still count from 0, and an attention mask hides the padding
  (see kv_cache.py). The prefill is one causal pass over the (B, P) block; each later forward feeds one
  token per row at its true position.
- Without the cache (`use_cache=False`) every step runs the plain forward over each row's whole sequence so
  far, rows of equal prompt length batched together (they stay equal): the reference the cache must
  reproduce, and the baseline of benchmarks/decode.py.
- The context window is a hard limit, checked before any work: the longest prompt plus max_new_tokens must
  fit in context_length. There is no sliding window: a model has no positions past its context, and
  re-basing positions as a window slides would make cached and uncached decoding disagree.
- A row stops at its first stop token (left out of its output) while the others go on; stopped rows still
  ride along in the batched forwards, their draws ignored. Generation ends when every row has stopped.
- Sampling is `sampling.sample_next_token` (temperature 0 = greedy, top-k, top-p); its only randomness is
  the `generator` passed in, so a seeded torch.Generator reproduces a generation exactly.
- Faster steps (`compile`, `cuda_graph`, either or both) run over a static cache whose size is rounded up
  to a multiple of STATIC_SLOTS_MULTIPLE; the prefill stays eager, and sampling always runs here, outside
  the compiled or captured step, so a seeded generator draws exactly as in eager decoding.
"""

from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from scratchlm.config import ModelConfig
from scratchlm.errors import ConfigError, ShapeError
from scratchlm.infer.kv_cache import KVCache, check_cacheable
from scratchlm.infer.sampling import check_sampling_args, sample_next_token, seeded_generator
from scratchlm.model import TransformerLM

logger = logging.getLogger(__name__)

# B prompts as id lists or a (B, T) tensor, or one prompt as a flat list of ids or a (T,) tensor (NumPy arrays too).
Prompts = Sequence[Sequence[int]] | Sequence[int] | Tensor
PAD_ID = 0  # what fills padding slots; any valid id works, as the mask hides them
# Static caches come in multiples of 16 slots (capped at the context): aligned rows for the fused attention
# kernels, and generations of nearby lengths share one compiled step. Unused slots are masked out.
STATIC_SLOTS_MULTIPLE = 16


@dataclass
class DecodeStep:
    """One step of `decode_steps`: every row's new token and the logits it was drawn from.

    tokens_B (B,) int64; logits_BV (B, V') float, V' = the vocabulary sampled from; done_B (B,) bool, True
    for rows that have produced a stop token at this step or before (their later tokens mean nothing).
    setup_s: seconds spent so far building the compiled or graphed step (0 for eager decoding), so that a
    tokens/s figure can leave a one-time compile out.
    """

    index: int
    tokens_B: Tensor
    logits_BV: Tensor
    done_B: Tensor
    setup_s: float = 0.0


@dataclass
class Generation:
    """What `generate` returns: per row, the prompt, the new tokens (stop token excluded), and why it ended."""

    prompts: list[list[int]]
    tokens: list[list[int]]
    stopped: list[bool]  # True: ended at a stop token; False: at max_new_tokens
    setup_s: float = 0.0  # seconds spent compiling or capturing the decode step, included in the call's time

    def sequences(self) -> list[list[int]]:
        """Prompt followed by its continuation, per row."""
        return [p + t for p, t in zip(self.prompts, self.tokens, strict=True)]


def generate(
    model: TransformerLM,
    prompts: Prompts,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Sequence[int] | int | None = (),
    generator: torch.Generator | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    vocab_limit: int | None = None,
    cuda_graph: bool = False,
    compile: bool = False,
) -> Generation:
    """Continue every prompt by up to max_new_tokens tokens; returns a Generation (`.tokens`, `.sequences()`).

    prompts: B non-empty lists of token ids, a (B, T) tensor, or one prompt (a list of ids or a (T,)
    tensor); prompts of different lengths are left-padded into one batch. The longest prompt plus
    max_new_tokens must fit in context_length (there is no sliding window). temperature 0 is greedy;
    top_k keeps the k most likely tokens, top_p the smallest set whose probability reaches p. stop_tokens
    (an id or a list of ids) end a row, and are left out of its tokens. seed: draw from a fresh
    torch.Generator seeded with it (or pass your own `generator`; not both); the batch shares it, so the
    same call draws the same tokens again, but a prompt's draws depend on the rows beside it.
    vocab_limit: sample only ids below it (a model whose vocabulary is padded past its tokenizer's).
    use_cache=False recomputes every position each step. cuda_graph (CUDA only) replays one captured
    decode step over a static cache (see cuda_graph.py). compile runs the decode step through torch.compile
    (compiled_step.py; compile time is logged apart); with cuda_graph too, the compiled step is what the
    graph captures. The model is in eval mode while generating, and back in its own mode after.

    Tokens stay on the device until the end, so without stop tokens there is no host sync per step.
    `decode_steps` takes the same arguments and yields each step as it is drawn (streaming).
    """
    rows = as_token_lists(prompts)
    stop_tokens = as_stop_tokens(stop_tokens)
    steps: list[Tensor] = []
    setup_s = 0.0
    for step in decode_steps(
        model,
        rows,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        stop_tokens=stop_tokens,
        generator=generator,
        seed=seed,
        use_cache=use_cache,
        vocab_limit=vocab_limit,
        cuda_graph=cuda_graph,
        compile=compile,
    ):
        steps.append(step.tokens_B)
        setup_s = step.setup_s
    new_BN = torch.stack(steps, dim=1).tolist()
    stop = set(stop_tokens)
    tokens, stopped = [], []
    for row in new_BN:
        end = next((i for i, token in enumerate(row) if token in stop), None)
        tokens.append(row if end is None else row[:end])
        stopped.append(end is not None)
    return Generation(rows, tokens, stopped, setup_s)


def decode_steps(
    model: TransformerLM,
    prompts: Prompts,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Sequence[int] | int | None = (),
    generator: torch.Generator | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    vocab_limit: int | None = None,
    cuda_graph: bool = False,
    compile: bool = False,
) -> Iterator[DecodeStep]:
    """An iterator of one DecodeStep per generated token (for streaming); arguments as in `generate`.

    The arguments are checked right away, not at the first step. The model is in eval mode while the
    iterator runs. A row's steps go on after its stop token until every row has stopped (see `done_B`).
    """
    check_model(model)
    rows = as_token_lists(prompts)
    stops = as_stop_tokens(stop_tokens)
    check_generation_args(model, rows, max_new_tokens, temperature, top_k, top_p, stops, vocab_limit)
    check_step_options(model, use_cache, cuda_graph, compile)
    # NumPy and 0-d tensor integers pass the checks; plain ints keep the cache sizes and slicing below Python ints.
    max_new_tokens = int(max_new_tokens)
    vocab_limit = None if vocab_limit is None else int(vocab_limit)
    if seed is not None:
        if generator is not None:
            raise ConfigError("pass a seed or a generator, not both (a generator carries its own seed).")
        generator = seeded_generator(seed, _device(model))
    sampling = (temperature, top_k, top_p, generator)
    steps = _StepOptions(cuda_graph=cuda_graph, compile=compile)
    return _decode(model, rows, max_new_tokens, sampling, stops, use_cache, vocab_limit, steps)


@dataclass(frozen=True)
class _StepOptions:
    """How the cached decode step runs: eagerly (both False), captured as a CUDA graph, compiled, or both."""

    cuda_graph: bool = False
    compile: bool = False

    @property
    def static(self) -> bool:
        return self.cuda_graph or self.compile


@torch.no_grad()  # on a generator function this covers each resumption, not the caller's code between yields
def _decode(
    model: TransformerLM,
    rows: list[list[int]],
    max_new_tokens: int,
    sampling: tuple[float, int | None, float | None, torch.Generator | None],
    stop_tokens: list[int],
    use_cache: bool,
    vocab_limit: int | None,
    steps: _StepOptions,
) -> Iterator[DecodeStep]:
    was_training, checks_ids = model.training, model.check_token_ids
    model.eval()
    # Prompt ids were checked on the host (check_generation_args) and sampled ids are < V by construction,
    # so the forward's own id check would only cost a device->host sync per step.
    model.check_token_ids = False
    try:
        next_logits = _cached_logits if use_cache else _uncached_logits
        timings = {"setup_s": 0.0}  # written by the logits source when it builds a compiled or graphed step
        logits_source = next_logits(model, rows, max_new_tokens, steps, timings)
        stop_T = torch.tensor(stop_tokens, dtype=torch.long, device=_device(model))
        done_B = torch.zeros(len(rows), dtype=torch.bool, device=stop_T.device)
        tokens_B = None
        for index in range(max_new_tokens):
            logits_BV = logits_source.send(tokens_B)
            if vocab_limit is not None:
                logits_BV = logits_BV[:, :vocab_limit]
            tokens_B = sample_next_token(logits_BV, *sampling)
            if stop_tokens:
                done_B = done_B | torch.isin(tokens_B, stop_T)
            yield DecodeStep(index, tokens_B, logits_BV, done_B, timings["setup_s"])
            if stop_tokens and bool(done_B.all()):
                break
        logits_source.close()
    finally:
        model.train(was_training)
        model.check_token_ids = checks_ids


def _cached_logits(
    model: TransformerLM, rows: list[list[int]], max_new_tokens: int, steps: _StepOptions, timings: dict[str, float]
) -> Iterator[Tensor]:
    """A coroutine: first yields the prefill's last logits (B, V), then the logits after each token sent in."""
    device = _device(model)
    lengths = [len(row) for row in rows]
    longest = max(lengths)
    ids_BP = torch.full((len(rows), longest), PAD_ID, dtype=torch.long)
    for b, row in enumerate(rows):
        ids_BP[b, longest - len(row) :] = torch.tensor(row, dtype=torch.long)
    pad_B = None if min(lengths) == longest else torch.tensor([longest - n for n in lengths])
    # The last sampled token is never fed back, so the prompt plus max_new_tokens - 1 slots suffice.
    slots = longest + max_new_tokens - 1
    if steps.static:
        slots = min(model.config.context_length, -(-slots // STATIC_SLOTS_MULTIPLE) * STATIC_SLOTS_MULTIPLE)
    cache = KVCache.for_model(model, len(rows), slots, pad_B=pad_B, static=steps.static)
    logits_BPV, _ = model(ids_BP.to(device), kv_cache=cache)
    tokens_B = yield logits_BPV[:, -1]
    if steps.static:
        start = time.perf_counter()
        step = _static_step(model, cache, steps)
        timings["setup_s"] = time.perf_counter() - start
        while True:
            # A graph's output buffer is rewritten by the next replay; a compiled step returns a new tensor.
            logits_BV = step(tokens_B)
            tokens_B = yield logits_BV.clone() if steps.cuda_graph else logits_BV
    while True:
        logits_B1V, _ = model(tokens_B.unsqueeze(-1), kv_cache=cache)
        tokens_B = yield logits_B1V[:, -1]


def _static_step(model: TransformerLM, cache: KVCache, steps: _StepOptions) -> Callable[[Tensor], Tensor]:
    """The step over a static cache that already holds the prompt: compiled, graphed, or compiled then graphed."""
    forward = None  # GraphedDecodeStep's default: the eager forward
    if steps.compile:
        from scratchlm.infer.compiled_step import CompiledDecodeStep

        compiled = CompiledDecodeStep(model, cache)
        if not steps.cuda_graph:
            return compiled
        forward = compiled.forward
    from scratchlm.infer.cuda_graph import GraphedDecodeStep

    return GraphedDecodeStep(model, cache, forward)


def _uncached_logits(
    model: TransformerLM, rows: list[list[int]], max_new_tokens: int, steps: _StepOptions, timings: dict[str, float]
) -> Iterator[Tensor]:
    """The same coroutine as `_cached_logits`, but every step runs the plain forward over whole sequences."""
    device = _device(model)
    by_length: dict[int, list[int]] = {}
    for b, row in enumerate(rows):
        by_length.setdefault(len(row), []).append(b)
    # (row indices, their sequences so far (G, T)) per prompt length; one group when all lengths are equal
    groups = [
        (torch.tensor(members, device=device), torch.tensor([rows[b] for b in members], device=device))
        for members in by_length.values()
    ]
    tokens_B = None
    while True:
        if tokens_B is not None:
            groups = [(members, torch.cat([ids_GT, tokens_B[members, None]], dim=1)) for members, ids_GT in groups]
        if len(groups) == 1:
            logits_BV = model(groups[0][1])[0][:, -1]
        else:
            parts = [(members, model(ids_GT)[0][:, -1]) for members, ids_GT in groups]
            logits_BV = parts[0][1].new_empty(len(rows), parts[0][1].shape[-1])
            for members, logits_GV in parts:
                logits_BV[members] = logits_GV
        tokens_B = yield logits_BV


def as_token_lists(prompts: Prompts | Sequence[int]) -> list[list[int]]:
    """Prompts as plain lists of ints: from a (B, T) or (T,) tensor, a sequence of id sequences, or one
    sequence of ids (a single prompt)."""
    if isinstance(prompts, Tensor):
        if prompts.dim() == 1:
            prompts = prompts.unsqueeze(0)
        if prompts.dim() != 2 or prompts.is_floating_point() or prompts.dtype == torch.bool:
            raise ShapeError(
                f"prompts must be a (batch, length) tensor of integer token ids, got {tuple(prompts.shape)} "
                f"{prompts.dtype}."
            )
        return prompts.tolist()
    if isinstance(prompts, (str, bytes)):
        raise ShapeError("prompts must be token ids, not text; encode the text with the run's tokenizer first.")
    rows = list(prompts)
    if rows and all(_is_token_id(token) for token in rows):
        rows = [rows]  # one prompt given as a flat list of ids
    return [_token_row(b, row) for b, row in enumerate(rows)]


def _is_token_id(value: object) -> bool:
    """An integer (Python, NumPy, or a 0-d integer tensor); not a bool, not a float."""
    if isinstance(value, Tensor):
        return value.dim() == 0 and not value.is_floating_point() and value.dtype != torch.bool
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _token_row(b: int, row: object) -> list[int]:
    if isinstance(row, (str, bytes)):
        raise ShapeError(f"prompt {b} is text ({row[:20]!r}), not token ids; encode it with the run's tokenizer first.")
    if hasattr(row, "tolist"):  # a tensor or NumPy row
        row = row.tolist()
    if not isinstance(row, Sequence) or not all(_is_token_id(token) for token in row):
        raise ShapeError(
            f"prompt {b} must be a list of integer token ids, got {str(row)[:40]}; give ids such as [15496, 11]."
        )
    return [int(token) for token in row]


def as_stop_tokens(stop_tokens: Sequence[int] | int | None) -> list[int]:
    """A list of stop ids from one id, a sequence, tensor or array of them, or None (no stop tokens)."""
    if stop_tokens is None:
        return []
    if _is_token_id(stop_tokens):
        return [int(stop_tokens)]  # type: ignore[call-overload]
    if hasattr(stop_tokens, "tolist") and hasattr(stop_tokens, "reshape"):  # a tensor or NumPy array, 0-d too
        stop_tokens = stop_tokens.reshape(-1).tolist()
    if isinstance(stop_tokens, (str, bytes)) or not all(_is_token_id(t) for t in stop_tokens):
        raise ConfigError(f"stop_tokens must be a token id or a list of ids, got {stop_tokens!r}.")
    return [int(token) for token in stop_tokens]


def check_model(model: object) -> None:
    """A TransformerLM (or a wrapper that forwards its attributes, as torch.compile's does)."""
    if not isinstance(getattr(model, "config", None), ModelConfig):
        raise ConfigError(
            f"generate takes a scratchlm TransformerLM, got {type(model).__name__}; build one from a ModelConfig "
            "or load one with scratchlm.load_model(path)."
        )


def check_generation_args(
    model: TransformerLM,
    rows: list[list[int]],
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    stop_tokens: Sequence[int],
    vocab_limit: int | None,
) -> None:
    """Every argument error `decode_steps` can meet, raised before any model work (one sentence each)."""
    check_sampling_args(temperature, top_k, top_p)
    check_max_new_tokens(max_new_tokens)
    if not rows:
        raise ShapeError("no prompts were given; pass at least one list of token ids.")
    vocab, context = model.config.vocab_size, model.config.context_length
    for b, row in enumerate(rows):
        if not row:
            raise ShapeError(
                f"prompt {b} is empty; give at least one token (a text prompt can start from <|endoftext|>)."
            )
        if min(row) < 0 or max(row) >= vocab:
            raise ShapeError(
                f"prompt {b} holds ids in [{min(row)}, {max(row)}] but the model's vocabulary is [0, {vocab}); "
                "encode it with the tokenizer the model was trained with."
            )
    longest = max(len(row) for row in rows)
    if longest >= context:
        raise ConfigError(
            f"the prompt has {longest} tokens but the model's context_length is {context}, which leaves no room "
            f"to generate; shorten the prompt to at most {context - 1} tokens."
        )
    if longest + max_new_tokens > context:
        raise ConfigError(
            f"the prompt ({longest} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the model's "
            f"context_length {context}; generate at most {context - longest} tokens (there is no sliding window)."
        )
    bad_stops = [t for t in stop_tokens if not 0 <= t < vocab]
    if bad_stops:
        raise ConfigError(f"stop tokens {bad_stops} are outside the model's vocabulary [0, {vocab}).")
    if vocab_limit is not None and (not _is_token_id(vocab_limit) or not 1 <= vocab_limit <= vocab):
        raise ConfigError(f"vocab_limit must be in [1, {vocab}] (the model's vocabulary), got {vocab_limit}.")


def check_max_new_tokens(max_new_tokens: object) -> None:
    """ConfigError unless max_new_tokens is an integer >= 1 (Python or NumPy)."""
    # Named as the library and the CLI both spell it, so `scratchlm generate` raises this very sentence.
    if not _is_token_id(max_new_tokens) or max_new_tokens < 1:  # type: ignore[operator]
        raise ConfigError(
            f"max_new_tokens (--max-new-tokens) must be >= 1 (a whole number of tokens to generate), "
            f"got {max_new_tokens!r}."
        )


def check_step_options(model: TransformerLM, use_cache: bool, cuda_graph: bool, compile: bool) -> None:
    """The errors of `decode_steps`'s step options (use_cache, compile, cuda_graph), one sentence each."""
    if use_cache:
        check_cacheable(model.config)
    if compile and not use_cache:
        raise ConfigError("compile=True compiles the cached decode step; it needs use_cache=True.")
    if cuda_graph and not use_cache:
        raise ConfigError("cuda_graph replays a cached decode step; it needs use_cache=True.")
    device = _device(model)
    if cuda_graph and device.type != "cuda":
        raise ConfigError(f"cuda_graph=True needs the model on a CUDA device, not {device}; drop it on this device.")


def _device(model: TransformerLM) -> torch.device:
    return model.token_embeddings.weight.device
