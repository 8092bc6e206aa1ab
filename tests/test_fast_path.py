"""The fast path (`model.fast = true`): the reference path's parameters and state dict, the same function.

Float64 parity with explicit tolerances for the fused matmuls and the fused LM-head loss; checkpoints
cross-load between the paths; torch.compile keeps the plain state dict. CUDA-only checks (flash attention
is really selected, bf16 agreement) skip on machines without a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from scratchlm.config import ModelConfig, RunConfig
from scratchlm.data.trajectories import generate_trajectories
from scratchlm.data.trajectory_io import save_trajectories
from scratchlm.device import allow_only, configure_cuda
from scratchlm.errors import ConfigError
from scratchlm.model import TransformerLM
from scratchlm.nn.fused import linear_cross_entropy, qkv_projection, swiglu_gate_up
from scratchlm.presets import resolve_tables
from scratchlm.train.checkpoint import read_checkpoint
from scratchlm.train.compile import compile_for_training
from scratchlm.train.trainer import train

F64 = torch.float64


@pytest.fixture
def debug_data(tmp_path: Path) -> str:
    path = tmp_path / "traj.pkl"
    save_trajectories(generate_trajectories(64, seq_length=20, seed=3, fast=True), path)
    return str(path)


def tiny(**overrides: object) -> ModelConfig:
    base = {"vocab_size": 61, "context_length": 24, "d_model": 32, "num_layers": 2, "num_heads": 4, "d_ff": 80}
    return ModelConfig(**{**base, **overrides})


def test_fused_projections_equal_the_separate_matmuls() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 16, generator=g, dtype=F64)
    wq, wk, wv = (torch.randn(16, 16, generator=g, dtype=F64) for _ in range(3))
    for fused, plain in zip(qkv_projection(x, wq, wk, wv), (x @ wq.T, x @ wk.T, x @ wv.T), strict=True):
        torch.testing.assert_close(fused, plain, rtol=1e-13, atol=1e-13)
    w1, w3 = torch.randn(40, 16, generator=g, dtype=F64), torch.randn(40, 16, generator=g, dtype=F64)
    torch.testing.assert_close(swiglu_gate_up(x, w1, w3), F.silu(x @ w1.T) * (x @ w3.T), rtol=1e-13, atol=1e-13)


def test_the_fused_swiglu_backward_is_the_true_gradient() -> None:
    """Its backward recomputes SiLU rather than keeping it (`_SiLUGateTimesUp`): checked against
    finite differences in float64, and against autograd through F.silu, for x, W_1 and W_3."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 6, generator=g, dtype=F64, requires_grad=True)
    w1, w3 = (torch.randn(5, 6, generator=g, dtype=F64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(swiglu_gate_up, (x, w1, w3))
    grad_BTF = torch.randn(2, 3, 5, generator=g, dtype=F64)
    fused = torch.autograd.grad(swiglu_gate_up(x, w1, w3), (x, w1, w3), grad_BTF)
    plain = torch.autograd.grad(F.silu(x @ w1.T) * (x @ w3.T), (x, w1, w3), grad_BTF)
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_tokens", [1, 4, 7, 1000])
def test_linear_cross_entropy_matches_torch_in_value_and_both_gradients(chunk_tokens: int) -> None:
    g = torch.Generator().manual_seed(chunk_tokens)
    h = torch.randn(3, 7, 16, generator=g, dtype=F64, requires_grad=True)
    w = torch.randn(50, 16, generator=g, dtype=F64, requires_grad=True)
    targets = torch.randint(0, 50, (3, 7), generator=g)
    targets[0, :3] = -100  # ignored positions leave the mean and get no gradient
    loss = linear_cross_entropy(h, w, targets, chunk_tokens=chunk_tokens)
    (2.5 * loss).backward()  # a non-unit upstream gradient must scale both saved gradients
    h_ref, w_ref = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = F.cross_entropy((h_ref @ w_ref.T).flatten(0, 1), targets.flatten(), ignore_index=-100)
    (2.5 * ref).backward()
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h.grad, h_ref.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=1e-10, atol=1e-12)
    assert h.grad[0, :3].abs().max() == 0


def test_linear_cross_entropy_without_autograd_computes_the_same_loss() -> None:
    h, w = torch.randn(3, 5, 8, dtype=F64), torch.randn(20, 8, dtype=F64, requires_grad=True)
    targets = torch.randint(0, 20, (3, 5))
    with torch.no_grad():
        loss = linear_cross_entropy(h, w, targets, chunk_tokens=4)
    ref = F.cross_entropy((h @ w.detach().T).flatten(0, 1), targets.flatten())
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)


def test_linear_cross_entropy_with_every_target_ignored_is_nan_like_the_reference() -> None:
    h, w = torch.randn(2, 4, 8, dtype=F64), torch.randn(10, 8, dtype=F64)
    targets = torch.full((2, 4), -100)
    assert torch.isnan(linear_cross_entropy(h, w, targets))
    assert torch.isnan(F.cross_entropy((h @ w.T).flatten(0, 1), targets.flatten(), ignore_index=-100))


VARIANTS = [
    {},
    {"attention_backend": "sdpa"},
    {"ffn": "silu", "d_ff": None},
    {"ffn": "gelu", "d_ff": None},
    {"tie_embeddings": True},
    {"positional": "learned", "norm": "layernorm"},
    {"norm_position": "post"},
]


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_fast_and_reference_paths_share_the_state_dict_and_agree_in_float64(overrides: dict) -> None:
    torch.manual_seed(0)
    ref = TransformerLM(tiny(**overrides)).double()
    fast = TransformerLM(tiny(**overrides, fast=True)).double()
    assert list(fast.state_dict()) == list(ref.state_dict())
    assert [p.shape for p in fast.parameters()] == [p.shape for p in ref.parameters()]
    fast.load_state_dict(ref.state_dict())
    idx = torch.randint(0, 61, (3, 24))
    targets = torch.roll(idx, -1, dims=1)
    targets[:, -1] = -100
    logits_ref, loss_ref = ref(idx, targets)
    logits_fast, loss_fast = fast(idx, targets)
    assert logits_fast is None  # the fused head never builds the (B, T, V) logits
    torch.testing.assert_close(loss_fast, loss_ref, rtol=1e-12, atol=1e-12)
    loss_ref.backward()
    loss_fast.backward()
    for (name, a), b in zip(ref.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-12, msg=name)
    # Without targets both return the logits, equal.
    torch.testing.assert_close(fast(idx)[0], ref(idx)[0], rtol=1e-12, atol=1e-12)
    assert logits_ref is not None


def test_projections_fuse_only_while_autograd_records(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    import scratchlm.nn.attention as attention_module

    real = attention_module.qkv_projection
    monkeypatch.setattr(attention_module, "qkv_projection", lambda *a: calls.append("fused") or real(*a))
    model = TransformerLM(tiny(fast=True, num_layers=1))
    idx = torch.randint(0, 61, (1, 8))
    with torch.no_grad():
        model(idx)  # inference (decoding): a weight concatenation per token would cost more than it saves
    assert calls == []
    model(idx, idx)
    assert calls == ["fused"]


def test_low_precision_residual_changes_nothing_without_autocast_and_little_with_it() -> None:
    torch.manual_seed(0)
    plain = TransformerLM(tiny(fast=True))
    low = TransformerLM(tiny(fast=True, low_precision_residual=True))
    low.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 61, (2, 24))
    torch.testing.assert_close(low(idx, idx)[1], plain(idx, idx)[1], rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_low, loss_plain = low(idx, idx)[1], plain(idx, idx)[1]
    # The residual stream itself, as every block and the final norm receive it (the head's output is bf16
    # under autocast either way, so the logits' dtype would not tell).
    assert _stream_dtypes(low) == {torch.bfloat16} and _stream_dtypes(plain) == {torch.float32}
    assert loss_low != loss_plain  # the rounding happened ...
    torch.testing.assert_close(loss_low, loss_plain, rtol=2e-2, atol=2e-2)  # ... and changed the loss little


def _stream_dtypes(model: TransformerLM) -> set[torch.dtype]:
    seen: set[torch.dtype] = set()
    hooks = [
        m.register_forward_pre_hook(lambda _, args: seen.add(args[0].dtype)) for m in (*model.layers, model.ln_final)
    ]
    idx = torch.randint(0, 61, (2, 24))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(idx)
    for hook in hooks:
        hook.remove()
    return seen


def _train_debug(tmp_path: Path, name: str, *sets: str) -> Path:
    config = RunConfig.from_tables(
        resolve_tables("debug", None, ["train.max_steps=3", "train.eval_interval=3", "train.progress=false", *sets])
    )
    run_dir = tmp_path / name
    train(config, run_dir)
    return run_dir


@pytest.mark.parametrize("trained_fast", [True, False], ids=["fast->reference", "reference->fast"])
def test_a_checkpoint_of_one_path_loads_in_the_other_with_matching_outputs(
    tmp_path: Path, trained_fast: bool, debug_data: str
) -> None:
    run_dir = _train_debug(tmp_path, "run", f"model.fast={str(trained_fast).lower()}", f"data.path={debug_data}")
    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.pt", map_location="cpu")
    tables = ckpt["run_config"]["model"]
    saved = TransformerLM(ModelConfig(**tables))
    other = TransformerLM(ModelConfig(**{**tables, "fast": not trained_fast}))
    saved.load_state_dict(ckpt["model"])
    other.load_state_dict(ckpt["model"])  # strict: the same keys and shapes
    idx = torch.randint(0, saved.config.vocab_size, (2, saved.config.context_length))
    targets = torch.roll(idx, -1, dims=1)
    torch.testing.assert_close(other(idx)[0], saved(idx)[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(other(idx, targets)[1], saved(idx, targets)[1], rtol=1e-5, atol=1e-6)


def test_compiled_blocks_keep_the_plain_state_dict_and_compute_the_same_loss() -> None:
    torch.manual_seed(0)
    ref = TransformerLM(tiny(num_layers=2))
    fast = TransformerLM(tiny(num_layers=2, fast=True, attention_backend="sdpa"))
    fast.load_state_dict(ref.state_dict())
    keys = list(fast.state_dict())
    step_model = compile_for_training(fast, "blocks")
    assert step_model is fast and list(fast.state_dict()) == keys  # no `_orig_mod.` wrapper to save
    idx = torch.randint(0, 61, (2, 24))
    _, loss_ref = ref(idx, idx)
    _, loss_compiled = step_model(idx, idx)
    loss_ref.backward()
    loss_compiled.backward()
    torch.testing.assert_close(loss_compiled, loss_ref, rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(ref.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_the_fast_training_model_compiles_into_one_graph() -> None:
    """A graph break in the training forward or backward costs every compiled GPU step (CUDA graphs split
    at it) and passes every eager test, so Dynamo is asked for one graph, forward and backward (AOTAutograd
    traces the backward at compile time): `fullgraph=True` turns a break into an error. Inductor is not
    needed for that check; `aot_eager` keeps it to seconds."""
    torch.manual_seed(0)
    model = TransformerLM(tiny(fast=True, attention_backend="sdpa", dropout=0.0))
    idx = torch.randint(0, 61, (2, 24))
    _, loss_eager = model(idx, idx)
    grads_eager = torch.autograd.grad(loss_eager, list(model.parameters()))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    _, loss = compiled(idx, idx)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(loss, loss_eager, rtol=1e-5, atol=1e-6)
    for (name, _), a, b in zip(model.named_parameters(), grads, grads_eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_whole_model_compile_wraps_without_touching_the_model() -> None:
    model = TransformerLM(tiny(fast=True))
    keys = list(model.state_dict())
    wrapped = compile_for_training(model, "model")  # lazy: nothing compiles until the first call
    assert wrapped is not model and wrapped._orig_mod is model  # type: ignore[attr-defined]
    assert list(model.state_dict()) == keys  # the trainer saves `model`, never the wrapper


@pytest.mark.cuda
def test_flash_attention_is_selected_for_the_fast_path_on_a_gpu() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = TransformerLM(tiny(fast=True, attention_backend="sdpa", d_model=128, num_heads=2)).cuda()
    idx = torch.randint(0, 61, (2, 24), device="cuda")
    # Restricted to the flash kernel, SDPA raises instead of falling back when flash cannot run.
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
        _, loss = model(idx, idx)
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.cuda
@pytest.mark.parametrize("low_precision_residual", [False, True])
def test_fast_path_matches_the_reference_in_bf16_on_a_gpu(low_precision_residual: bool) -> None:
    torch.manual_seed(0)
    ref = TransformerLM(tiny(attention_backend="sdpa")).cuda()
    fast = TransformerLM(
        tiny(attention_backend="sdpa", fast=True, low_precision_residual=low_precision_residual)
    ).cuda()
    fast.load_state_dict(ref.state_dict())
    idx = torch.randint(0, 61, (4, 24), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, loss_ref = ref(idx, idx)
        _, loss_fast = fast(idx, idx)
    torch.testing.assert_close(loss_fast, loss_ref, rtol=1e-2, atol=1e-2)


def test_sdpa_kernel_switch_allows_one_kernel_alone_and_auto_leaves_the_switches() -> None:
    q = k = v = torch.randn(1, 2, 8, 4)
    states = [
        torch.backends.cuda.flash_sdp_enabled(),
        torch.backends.cuda.cudnn_sdp_enabled(),
        torch.backends.cuda.mem_efficient_sdp_enabled(),
        torch.backends.cuda.math_sdp_enabled(),
    ]
    switches = [
        torch.backends.cuda.enable_flash_sdp,
        torch.backends.cuda.enable_cudnn_sdp,
        torch.backends.cuda.enable_mem_efficient_sdp,
        torch.backends.cuda.enable_math_sdp,
    ]
    try:
        allow_only("flash")  # PyTorch's CPU build has a flash kernel too, so the switches bite here as well
        assert torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.math_sdp_enabled()
        assert not torch.backends.cuda.cudnn_sdp_enabled() and not torch.backends.cuda.mem_efficient_sdp_enabled()
        F.scaled_dot_product_attention(q, k, v, is_causal=True)
        allow_only("cudnn")  # no cuDNN kernel on a CPU: an error, not a silent fallback to the math kernel
        with pytest.raises(RuntimeError, match="No viable backend"):
            F.scaled_dot_product_attention(q, k, v, is_causal=True)
        configure_cuda(torch.device("cpu"), "auto")  # "auto" touches no switch
        assert not torch.backends.cuda.math_sdp_enabled()
    finally:
        for switch, state in zip(switches, states, strict=True):
            switch(state)


def test_sdpa_kernel_is_refused_off_cuda_and_unknown_names_are_listed() -> None:
    with pytest.raises(ConfigError, match=r"train.sdpa_kernel = 'flash' picks a CUDA attention kernel.*'auto'"):
        configure_cuda(torch.device("cpu"), "flash")
    configure_cuda(torch.device("cpu"), "auto")  # a no-op off CUDA
    with pytest.raises(ConfigError, match="sdpa_kernel"):
        RunConfig.from_tables(resolve_tables("debug", None, ['train.sdpa_kernel="flash2"']))
