"""Compiled decoding and packed projection weights change the speed of decoding, never its tokens.

- `compile=True` (torch.compile over a static cache, scratchlm.infer.compiled_step): the same greedy tokens
  as eager cached and uncached decoding, per-step logits within LOGIT_RTOL, batched prompts of different
  lengths, every positional scheme, seeded sampling unchanged, and one compiled graph per generation
  shape: none after the first decode step, none for a second generation of the same shape, and past
  dynamo's recompile limit an eager step, still exact.
- Packed projections (fast-path models, scratchlm.infer.packed_weights): the same logits as the separate
  matmuls in float64 to 1e-12, one QKV and one W_1|W_3 matmul per layer, re-packed when the weights change
  mid-generation, never in the state dict, released when decoding ends.
CUDA-only checks (the compiled step captured as a CUDA graph) skip on machines without a GPU.
"""

from __future__ import annotations

import gc
import types
import weakref
from collections.abc import Callable

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import scratchlm.infer.kv_cache as kv_cache_module
from scratchlm.config import POSITIONALS, ModelConfig
from scratchlm.errors import ConfigError
from scratchlm.infer import compiled_step
from scratchlm.infer.compiled_step import CompiledDecodeStep
from scratchlm.infer.generate import DecodeStep, decode_steps, generate
from scratchlm.infer.kv_cache import KVCache
from scratchlm.infer.packed_weights import pack_projections
from scratchlm.model import TransformerLM
from scratchlm.optim import AdamW

CONTEXT = 24
VOCAB = 37
PROMPT_LENGTHS = (5, 1, 9)  # left-padded into one batch
NEW_TOKENS = CONTEXT - 9  # the longest row fills the context exactly
# Float32 logits of compiled and eager steps differ only in the order of their sums (fused kernels reduce
# norms, softmax and matmuls in other orders): ~1e-6 of the logits' scale here, at most tens of float32
# ulps through two layers. 1e-5 of the scale (as for the cache's own tests) bounds that with room and is
# far below the gaps between the logits that greedy decoding picks from.
LOGIT_RTOL = 1e-5
F64_ATOL = 1e-12


def make_model(positional: str = "rope", backend: str = "reference", **overrides: object) -> TransformerLM:
    shape = {"vocab_size": VOCAB, "context_length": CONTEXT, "d_model": 32, "num_layers": 2, "num_heads": 4}
    config = ModelConfig(**{**shape, **overrides}, positional=positional, attention_backend=backend)
    return TransformerLM(config).eval()


def make_prompts() -> list[list[int]]:
    return [torch.randint(0, VOCAB, (n,)).tolist() for n in PROMPT_LENGTHS]


def assert_logits_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = LOGIT_RTOL) -> None:
    """rtol relative to the logits' scale (an elementwise relative test is meaningless for logits near 0)."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


def assert_same_decoding(actual: list[DecodeStep], expected: list[DecodeStep], rtol: float = LOGIT_RTOL) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert torch.equal(a.tokens_B, e.tokens_B), f"step {e.index}"
        assert_logits_close(a.logits_BV, e.logits_BV, rtol)


def greedy(model: TransformerLM, prompts: list[list[int]], **options: object) -> list[DecodeStep]:
    return list(decode_steps(model, prompts, max_new_tokens=NEW_TOKENS, temperature=0.0, **options))


def compiled_graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    # Every test compiles from scratch: no compiled code or counts carried over from another test, and
    # dynamo's per-function recompile limit (8) is never reached by the file as a whole.
    torch._dynamo.reset()
    counters.clear()
    compiled_step._warn_once.cache_clear()


# ------------------------------------------------------------------------------------------ compiled


def test_compiled_greedy_decoding_equals_eager_cached_and_uncached_decoding_and_compiles_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = make_model("rope", "reference")
    prompts = make_prompts()
    eager = greedy(model, prompts)
    uncached = greedy(model, prompts, use_cache=False)
    # error_on_recompile: any guard failing after the first compile (a per-token shape or Python value
    # leaking into the compiled code) raises instead of silently compiling again.
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = greedy(model, prompts, compile=True)
        assert compiled_graphs() == 1  # one graph for all NEW_TOKENS - 1 decode steps
        # A second generation of the same shape finds the compiled code; sampling, outside the compiled
        # step, draws the same tokens from the same seeded generator as eager decoding.
        sampled = {
            flag: generate(
                model, prompts, max_new_tokens=NEW_TOKENS, top_k=10, generator=torch.Generator().manual_seed(3),
                compile=flag,
            ).tokens
            for flag in (True, False)
        }  # fmt: skip
        assert compiled_graphs() == 1
    assert sampled[True] == sampled[False]
    assert_same_decoding(compiled, eager)
    assert_same_decoding(compiled, uncached)
    assert "recompile_limit" not in caplog.text
    # Past dynamo's recompile limit a new shape (16 static slots, not 24) runs the same step eagerly, exactly,
    # and the log says so once.
    with torch._dynamo.config.patch(recompile_limit=1), caplog.at_level("WARNING", "scratchlm"):
        options = {"max_new_tokens": 4, "temperature": 0.0}
        fallback = list(decode_steps(model, prompts, compile=True, **options))
        assert_same_decoding(fallback, list(decode_steps(model, prompts, **options)))
    assert compiled_graphs() == 1
    assert caplog.text.count("decodes eagerly") == 1


def test_the_recompile_limit_warning_reads_the_older_torch_name_too(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch before 2.7 names the limit cache_size_limit and has no recompile_limit (pyproject allows 2.4).
    monkeypatch.setattr(torch._dynamo, "config", types.SimpleNamespace(cache_size_limit=2))
    monkeypatch.setattr(compiled_step, "_compiled_shapes", lambda: 2)
    with caplog.at_level("WARNING", "scratchlm"):
        compiled_step._warn_at_recompile_limit()
    assert "torch._dynamo.config.cache_size_limit = 4" in caplog.text


def test_packed_weights_see_every_kind_of_weight_change_and_only_changes() -> None:
    model = make_model(fast=True)
    (layer, *_) = pack_projections(model)
    attn, ffn = model.layers[0].attn, model.layers[0].ffn

    def assert_packed_current() -> None:
        layer.refresh()
        torch.testing.assert_close(
            layer.qkv_weight, torch.cat((attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight))
        )
        torch.testing.assert_close(layer.gate_up_weight, torch.cat((ffn.w1.weight, ffn.w3.weight)))

    qkv_memory = layer.qkv_weight.data_ptr()
    with torch.no_grad():
        attn.k_proj.weight.mul_(2.0)  # in place: the version counter moves
    assert_packed_current()
    attn.q_proj.weight = torch.nn.Parameter(torch.randn_like(attn.q_proj.weight))  # a new Parameter
    assert_packed_current()
    ffn.w3.weight.data = torch.randn_like(ffn.w3.weight)  # new storage under the same Parameter, same version
    assert_packed_current()
    assert layer.qkv_weight.data_ptr() == qkv_memory  # re-packed in place: compiled code and graphs stay valid
    for fused in (True, False):  # an optimizer step; torch's fused AdamW kernel bumps no version counter itself
        optimizer = AdamW(model.parameters(), lr=0.1, fused=fused, foreach=not fused)
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()
        assert_packed_current()
    watched = layer._watch
    layer.refresh()  # nothing changed: nothing re-packed
    assert layer._watch is watched
    with torch.inference_mode():  # weights without a version counter: their address is still watched
        frozen = make_model(fast=True)
        (frozen_layer, *_) = pack_projections(frozen)
        frozen_layer.refresh()
        assert frozen_layer._watch[0][3] is None


@pytest.mark.parametrize("positional", POSITIONALS)
def test_every_positional_scheme_decodes_the_same_compiled_with_packed_weights_changed_mid_generation(
    positional: str,
) -> None:
    # fast=True: the compiled step reads the packed projections too; sdpa: the other attention backend; one
    # layer: half the compile time (the test above has two).
    model = make_model(positional, "sdpa", fast=True, num_layers=1)
    prompts = make_prompts()
    new_weights = make_model(positional, "sdpa", fast=True, num_layers=1).state_dict()

    def decode(**options: object) -> list[DecodeStep]:
        """Greedy decoding with the weights replaced in place after step 4 (a re-pack mid-generation)."""
        original = {name: tensor.clone() for name, tensor in model.state_dict().items()}
        steps = []
        for step in decode_steps(model, prompts, max_new_tokens=NEW_TOKENS, temperature=0.0, **options):
            steps.append(step)
            if step.index == 4:
                model.load_state_dict(new_weights)
        model.load_state_dict(original)
        return steps

    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = decode(compile=True)
    assert compiled_graphs() == 1
    assert_same_decoding(compiled, decode())


def test_compile_needs_the_cache_and_a_static_one_in_one_clear_sentence() -> None:
    model = make_model()
    with pytest.raises(ConfigError, match=r"^compile=True compiles the cached decode step; it needs use_cache=True\.$"):
        decode_steps(model, [[1, 2]], max_new_tokens=4, compile=True, use_cache=False)
    with pytest.raises(ConfigError, match=r"^cuda_graph=True needs the model on a CUDA device, not cpu"):
        decode_steps(model, [[1, 2]], max_new_tokens=4, compile=True, cuda_graph=True)
    with pytest.raises(ConfigError, match="needs a static KV cache"):
        CompiledDecodeStep(model, KVCache.for_model(model, 1, 8))


# ------------------------------------------------------------------------------------------ packed weights


class CountMatmuls(torch.overrides.TorchFunctionMode):
    """Counts `a @ b` calls (every projection and the LM head; the sdpa backend's attention is no matmul)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None):
        if func in (torch.Tensor.matmul, torch.Tensor.__matmul__, torch.matmul):
            self.count += 1
        return func(*args, **(kwargs or {}))


def reference_and_fast_float64(**overrides: object) -> tuple[TransformerLM, TransformerLM]:
    """A reference-path model and a fast-path one with the same float64 weights."""
    reference = make_model("rope", "sdpa", **overrides).double()
    fast = make_model("rope", "sdpa", fast=True, **overrides).double()
    fast.load_state_dict(reference.state_dict())
    return reference, fast


@pytest.mark.parametrize("ffn", ["swiglu", "silu"])
def test_packed_projections_equal_the_separate_matmuls_in_float64_with_fewer_matmuls(ffn: str) -> None:
    reference, fast = reference_and_fast_float64(ffn=ffn)
    prompts = make_prompts()
    runs = {model: greedy(model, prompts) for model in (reference, fast)}
    assert_same_decoding(runs[fast], runs[reference], rtol=F64_ATOL)
    # One decode step after a prefill: per layer q|k|v (one matmul packed, three not), the output
    # projection, the FFN (W_1|W_3 one matmul packed, two not; the ungated MLP has only W_1) and W_2;
    # then the LM head.
    per_layer = {"swiglu": (4, 7), "silu": (4, 6)}[ffn]
    for model, expected in zip((fast, reference), per_layer, strict=True):
        cache = KVCache.for_model(model, 1, 8)
        assert all((layer.packed_weights is not None) == model.config.fast for layer in cache.layers)
        with torch.no_grad():
            model(torch.tensor([[1, 2, 3]]), kv_cache=cache)
            with CountMatmuls() as matmuls:
                model(torch.tensor([[4]]), kv_cache=cache)
        assert matmuls.count == expected * model.config.num_layers + 1


def test_packed_weights_follow_in_place_changes_stay_out_of_the_state_dict_and_are_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference, fast = reference_and_fast_float64()
    keys = list(fast.state_dict())
    new_weights = make_model("rope", "sdpa").double().state_dict()
    prompts = make_prompts()
    unchanged = greedy(reference, prompts)
    packed_refs: list[weakref.ref] = []
    real_pack = kv_cache_module.pack_projections

    def tracked_pack(model: torch.nn.Module) -> list:
        layers = real_pack(model)
        packed_refs.extend(weakref.ref(t) for layer in layers for t in (layer.qkv_weight, layer.gate_up_weight))
        return layers

    monkeypatch.setattr(kv_cache_module, "pack_projections", tracked_pack)
    runs: dict[TransformerLM, list[DecodeStep]] = {}
    for model in (reference, fast):
        runs[model] = []
        for step in decode_steps(model, prompts, max_new_tokens=NEW_TOKENS, temperature=0.0):
            runs[model].append(step)
            if step.index == 4:  # an in-place change mid-generation, as load_state_dict (or an optimizer) makes
                model.load_state_dict(new_weights)
                assert list(model.state_dict()) == keys  # the packed copies are no parameters or buffers
    assert_same_decoding(runs[fast], runs[reference], rtol=F64_ATOL)
    # The change mattered, so a stale packed copy would have been caught above.
    assert not torch.allclose(runs[fast][6].logits_BV, unchanged[6].logits_BV)
    # Released when decoding ends, and when a caller abandons the iterator part-way.
    abandoned = decode_steps(fast, prompts, max_new_tokens=NEW_TOKENS, temperature=0.0)
    next(abandoned)
    next(abandoned)
    del abandoned
    gc.collect()
    assert len(packed_refs) == 2 * 2 * fast.config.num_layers  # two generations, two packed weights per layer
    assert all(ref() is None for ref in packed_refs)


def test_a_cached_forward_that_autograd_records_skips_the_packed_copies_and_gets_every_gradient() -> None:
    reference, fast = reference_and_fast_float64()
    grads = {}
    for model in (reference, fast):
        cache = KVCache.for_model(model, 1, 8)
        model(torch.tensor([[1, 2, 3]]), kv_cache=cache)[0].sum().backward()
        grads[model] = {name: p.grad for name, p in model.named_parameters()}
    for name, grad in grads[reference].items():
        torch.testing.assert_close(grads[fast][name], grad, rtol=1e-9, atol=1e-12, msg=name)


# ------------------------------------------------------------------------------------------ CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
@pytest.mark.parametrize("cuda_graph", [False, True], ids=["compiled", "compiled+graph"])
def test_compiled_decoding_on_a_gpu_matches_eager_cached_decoding(cuda_graph: bool, fast: bool) -> None:
    model = make_model("rope", "sdpa", fast=fast).cuda()
    prompts = make_prompts()
    eager = greedy(model, prompts)
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = greedy(model, prompts, compile=True, cuda_graph=cuda_graph)
        again = greedy(model, prompts, compile=True, cuda_graph=cuda_graph)
    # GPU float32 kernels (Triton against cuBLAS and the eager reductions) reorder more than the CPU's.
    assert_same_decoding(compiled, eager, rtol=1e-4)
    assert_same_decoding(again, compiled, rtol=1e-6)
    assert compiled_graphs() == 1
