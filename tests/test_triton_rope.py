"""The Triton QKV-split + RoPE kernel (`model.kernels = "triton"`) against the PyTorch ops it replaces.

On a machine without a GPU the kernel runs in Triton's interpreter (conftest sets TRITON_INTERPRET=1), which
executes the same program with NumPy: float64 and float32 results must equal the reference path's bit for
bit (same operations, same order). bfloat16 is checked to one bf16 step here, because Triton 3.9's
interpreter truncates float32 -> bfloat16 where the GPU (and PyTorch) round to nearest even; the CUDA test
checks the GPU kernel against PyTorch exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from einops import rearrange

from scratchlm.config import ModelConfig
from scratchlm.errors import ConfigError
from scratchlm.model import TransformerLM
from scratchlm.nn.positions import RotaryPositionalEmbedding

pytest.importorskip("triton", reason="the Triton kernel needs the triton package (the test extra installs it)")
from scratchlm.nn.triton_rope import rope_split_heads

F64 = torch.float64


def reference_heads(qkv: torch.Tensor, rope: RotaryPositionalEmbedding, positions: torch.Tensor | None, heads: int):
    """The reference path's arithmetic: split, rearrange to heads, rotate q and k."""
    q, k, v = (rearrange(x, "... t (h d) -> ... h t d", h=heads) for x in qkv.chunk(3, dim=-1))
    if positions is None:
        positions = torch.arange(qkv.shape[-2])
    positions = positions.unsqueeze(-2)
    return rope(q, positions), rope(k, positions), v


def rope_for(head_dim: int, dtype: torch.dtype, max_len: int = 96) -> RotaryPositionalEmbedding:
    rope = RotaryPositionalEmbedding(10000.0, head_dim, max_len)
    return rope.to(dtype) if dtype == F64 else rope  # float64 models get float64 tables, others float32


def values_and_input_gradient(fn, qkv: torch.Tensor, weights: list[torch.Tensor]):
    qkv = qkv.detach().clone().requires_grad_()
    outputs = fn(qkv)
    loss = sum((out.to(F64) * w).sum() for out, w in zip(outputs, weights, strict=True))
    (grad,) = torch.autograd.grad(loss, qkv)
    return [out.detach() for out in outputs], grad


# (batch dims, positions, heads, head dim): T not a multiple of the 64-position tile, a head dim whose pair
# count (3) is not a power of two, no batch dim at all, two batch dims.
SHAPES = [((2,), 70, 3, 6), ((), 5, 2, 8), ((2, 3), 17, 4, 4), ((1,), 64, 1, 32)]


@pytest.mark.parametrize(("lead", "seq_len", "heads", "head_dim"), SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_equals_reference_exactly_in_values_and_gradient(lead, seq_len, heads, head_dim, dtype) -> None:
    g = torch.Generator().manual_seed(seq_len)
    rope = rope_for(head_dim, dtype)
    qkv = torch.randn(*lead, seq_len, 3 * heads * head_dim, generator=g, dtype=dtype)
    weights = [torch.randn(*lead, heads, seq_len, head_dim, generator=g, dtype=F64) for _ in range(3)]
    ours, our_grad = values_and_input_gradient(
        lambda x: rope_split_heads(x, rope.cos_TP, rope.sin_TP, None, heads), qkv, weights
    )
    theirs, their_grad = values_and_input_gradient(lambda x: reference_heads(x, rope, None, heads), qkv, weights)
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine.shape == ref.shape and mine.dtype == ref.dtype and mine.is_contiguous()
        torch.testing.assert_close(mine, ref, rtol=0, atol=0)
    torch.testing.assert_close(our_grad, their_grad, rtol=0, atol=0)


def test_bfloat16_within_one_rounding_step_and_the_v_part_exact() -> None:
    g = torch.Generator().manual_seed(1)
    rope = rope_for(8, torch.bfloat16)
    qkv = torch.randn(2, 33, 3 * 4 * 8, generator=g).to(torch.bfloat16)
    weights = [torch.randn(2, 4, 33, 8, generator=g, dtype=F64) for _ in range(3)]
    ours, our_grad = values_and_input_gradient(
        lambda x: rope_split_heads(x, rope.cos_TP, rope.sin_TP, None, 4), qkv, weights
    )
    theirs, their_grad = values_and_input_gradient(lambda x: reference_heads(x, rope, None, 4), qkv, weights)
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine.dtype == torch.bfloat16
        # One bf16 step (8 mantissa bits): |x| 2^-7 relative, plus a floor for values near zero.
        torch.testing.assert_close(mine, ref, rtol=2**-7, atol=2**-9)
    torch.testing.assert_close(ours[2], theirs[2], rtol=0, atol=0)  # v is only moved, never rounded
    torch.testing.assert_close(our_grad, their_grad, rtol=2**-7, atol=2**-9)


@pytest.mark.parametrize("per_row", [False, True])
def test_explicit_positions_shared_or_per_row(per_row: bool) -> None:
    g = torch.Generator().manual_seed(2)
    rope = rope_for(6, F64)
    qkv = torch.randn(3, 9, 3 * 2 * 6, generator=g, dtype=F64)
    # Offsets as a KV cache or packed sequences would give them: not 0..T-1.
    positions = torch.randint(0, 90, (3, 9) if per_row else (9,), generator=g)
    weights = [torch.randn(3, 2, 9, 6, generator=g, dtype=F64) for _ in range(3)]
    ours, our_grad = values_and_input_gradient(
        lambda x: rope_split_heads(x, rope.cos_TP, rope.sin_TP, positions, 2), qkv, weights
    )
    theirs, their_grad = values_and_input_gradient(lambda x: reference_heads(x, rope, positions, 2), qkv, weights)
    for mine, ref in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, ref, rtol=0, atol=0)
    torch.testing.assert_close(our_grad, their_grad, rtol=0, atol=0)


def test_backward_takes_strided_gradients_and_unused_outputs() -> None:
    g = torch.Generator().manual_seed(3)
    rope = rope_for(4, F64)
    qkv = torch.randn(2, 7, 3 * 3 * 4, generator=g, dtype=F64, requires_grad=True)
    q, k, _ = rope_split_heads(qkv, rope.cos_TP, rope.sin_TP, None, 3)
    # q's gradient arrives transposed (non-contiguous), v is not used at all (its gradient is None).
    w_q = torch.randn(2, 7, 3, 4, generator=g, dtype=F64).transpose(1, 2)
    (q * w_q + k.square()).sum().backward()
    ref_qkv = qkv.detach().clone().requires_grad_()
    rq, rk, _ = reference_heads(ref_qkv, rope, None, 3)
    (rq * w_q + rk.square()).sum().backward()
    torch.testing.assert_close(qkv.grad, ref_qkv.grad, rtol=0, atol=0)
    assert qkv.grad[..., 2 * 12 :].abs().sum() == 0  # no gradient flows into the unused v columns


def tiny(**overrides: object) -> ModelConfig:
    base = {"vocab_size": 61, "context_length": 24, "d_model": 32, "num_layers": 2, "num_heads": 4, "d_ff": 80}
    return ModelConfig(**{**base, "fast": True, **overrides})


def assert_same_loss_and_gradients(
    base: TransformerLM,
    loss_base: torch.Tensor,
    ours: TransformerLM,
    loss_ours: torch.Tensor,
    tol: float,
    grad_tol: float,
) -> None:
    loss_base.backward()
    loss_ours.backward()
    torch.testing.assert_close(loss_ours, loss_base, rtol=tol, atol=tol)
    grads_base = dict(base.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, grads_base[name].grad, rtol=grad_tol, atol=grad_tol / 10, msg=name)


def test_model_with_the_kernel_matches_the_fast_path_in_loss_and_every_gradient() -> None:
    torch.manual_seed(0)
    base = TransformerLM(tiny(), dtype=F64)
    ours = TransformerLM(tiny(kernels="triton"), dtype=F64)
    ours.load_state_dict(base.state_dict())  # same parameters, same state-dict layout
    assert ours.state_dict().keys() == base.state_dict().keys()
    idx = torch.randint(0, 61, (3, 24))
    targets = torch.randint(0, 61, (3, 24))
    assert_same_loss_and_gradients(base, base(idx, targets)[1], ours, ours(idx, targets)[1], 1e-13, 1e-12)


def test_evaluation_and_decoding_take_the_pytorch_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without autograd recording (evaluation, generation) the kernel is never called, so a model trained
    # with it needs no triton afterwards; with autograd recording, it is.
    torch.manual_seed(0)
    ref = TransformerLM(tiny(fast=False), dtype=F64)
    ours = TransformerLM(tiny(kernels="triton"), dtype=F64)
    ours.load_state_dict(ref.state_dict())

    def no_kernel(*args: object) -> None:
        raise AssertionError("the Triton kernel ran")

    for block in ours.layers:
        monkeypatch.setattr(block.attn, "_triton_rope_split_heads", no_kernel)
    idx = torch.randint(0, 61, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], ref(idx)[0], rtol=1e-12, atol=1e-12)
    with pytest.raises(AssertionError, match="the Triton kernel ran"):
        ours(idx, idx)


# Run in a fresh process without the interpreter: torch.compile can only trace a real triton.jit kernel
# (an interpreted one is opaque to it). Tracing runs on fake tensors, so nothing launches on the CPU.
TRACE_SCRIPT = textwrap.dedent(
    """
    import torch
    from torch.func import functional_call
    from torch.fx.experimental.proxy_tensor import make_fx
    import scratchlm.nn.triton_rope as triton_rope
    from scratchlm.config import ModelConfig
    from scratchlm.model import TransformerLM

    triton_rope.INTERPRETING = True  # past the CPU guard: it is there for launches, and none happens here
    config = ModelConfig(vocab_size=61, context_length=24, d_model=32, num_layers=2, num_heads=4, d_ff=80,
                         fast=True, kernels="triton")
    model = TransformerLM(config)
    model.check_token_ids = False  # a data-dependent check, which fake tensors cannot answer
    idx = torch.randint(0, 61, (3, 24))
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())

    def loss_and_grads(params, buffers, idx):
        _, loss = functional_call(model, {**params, **buffers}, (idx, idx))
        return loss, torch.autograd.grad(loss, list(params.values()))

    joint = make_fx(loss_and_grads, tracing_mode="fake")(params, buffers, idx)
    targets = [str(node.target) for node in joint.graph.nodes]
    exported = torch._dynamo.export(model)(idx, idx)  # Dynamo: one graph or an error
    graph = [str(node.target) for node in exported.graph_module.graph.nodes]
    print("forward", targets.count("scratchlm.rope_split_heads.default"),
          "backward", targets.count("scratchlm.rope_split_heads_backward.default"),
          "dynamo", graph.count("scratchlm.rope_split_heads.default"))
    """
)


def test_torch_compile_traces_the_kernel_as_one_op_with_its_backward_in_one_graph() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    result = subprocess.run(
        [sys.executable, "-c", TRACE_SCRIPT], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-6:] == ["forward", "2", "backward", "2", "dynamo", "2"]


def test_config_rejects_the_kernel_where_it_cannot_apply() -> None:
    with pytest.raises(ConfigError, match=r"needs model.fast = true.*got fast = false"):
        tiny(kernels="triton", fast=False)
    with pytest.raises(ConfigError, match=r"model.positional = 'rope'.*positional = 'learned'"):
        tiny(kernels="triton", positional="learned")
    with pytest.raises(ConfigError, match=r"model\.kernels"):
        tiny(kernels="cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_kernel_equals_pytorch_exactly(dtype: torch.dtype) -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    rope = RotaryPositionalEmbedding(10000.0, 32, 256, device="cuda")
    qkv = torch.randn(4, 256, 3 * 16 * 32, generator=g, device="cuda").to(dtype)
    ours = rope_split_heads(qkv, rope.cos_TP, rope.sin_TP, None, 16)
    theirs = reference_heads(qkv, rope, torch.arange(256, device="cuda"), 16)
    for mine, ref in zip(ours, theirs, strict=True):
        # The reference computes a*cos - b*sin as two products and a difference; the GPU may contract it
        # into one fused multiply-add, so float32 agrees to a few ulps, bf16 to one rounding step.
        tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2**-7, "atol": 2**-9}
        torch.testing.assert_close(mine, ref, **tol)


@pytest.mark.cuda
def test_cuda_compiled_model_with_the_kernel_matches_the_fast_path() -> None:
    torch.manual_seed(0)
    cfg = {"vocab_size": 512, "context_length": 128, "d_model": 128, "num_layers": 2, "num_heads": 4}
    base = TransformerLM(tiny(**cfg), device="cuda")
    ours = TransformerLM(tiny(**cfg, kernels="triton"), device="cuda")
    ours.load_state_dict(base.state_dict())
    compiled = torch.compile(ours)
    idx = torch.randint(0, 512, (8, 128), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, loss_base = base(idx, idx)
        _, loss_ours = compiled(idx, idx)
    # bf16 autocast: the two graphs round differently, so agreement is to bf16 precision.
    assert_same_loss_and_gradients(base, loss_base, ours, loss_ours, 1e-2, 5e-2)
