"""Kernel-level timings at the tinystories-17m training shape: the QKV split + RoPE, and SDPA's attention kernels.

    python benchmarks/kernels.py [--out benchmarks/results/kernels-h100.json]     # CUDA
    python benchmarks/kernels.py --cpu-smoke                                      # checks this script

1. QKV split + RoPE + head permute, (N, T, 3D) -> three (N, H, T, Dh), forward and forward + backward, for
   - "torch": the PyTorch ops the fast path runs (split, rearrange, RotaryPositionalEmbedding), eager;
   - "torch compiled": the same through torch.compile (inductor's fused kernel, as inside a compiled step);
   - "triton": `scratchlm.nn.triton_rope` (`model.kernels = "triton"`).
   GB/s counts the bytes that must move: the forward reads 3·N·T·D elements and writes as many, the
   backward the same again (the cos/sin tables are tiny and stay in cache).
2. Causal SDPA forward + backward at (N, H, T, Dh), per kernel SDPA can pick (flash, cuDNN, memory-efficient),
   and the default choice: head dim 32 is a poor shape for flash attention (NOTES.md §3).
Median of --repeats timed calls after warm-up, CUDA-synchronized. Prints a table, then the JSON.
--cpu-smoke runs everything tiny on the CPU (Triton in its interpreter), to check the script without a GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if "--cpu-smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined

import torch
from einops import rearrange
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from machine_info import describe_machine, emit
from scratchlm.errors import first_line
from scratchlm.nn.positions import RotaryPositionalEmbedding
from scratchlm.nn.triton_rope import rope_split_heads

SDPA_KERNELS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}


def median_ms(run: Callable[[], object], device: torch.device, repeats: int, warmup: int = 5) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def torch_rope_heads(qkv_NT3D: torch.Tensor, rope: RotaryPositionalEmbedding, heads: int):
    q, k, v = (rearrange(x, "n t (h d) -> n h t d", h=heads) for x in qkv_NT3D.chunk(3, dim=-1))
    positions_1T = torch.arange(qkv_NT3D.shape[1], device=qkv_NT3D.device).unsqueeze(0)
    return rope(q, positions_1T), rope(k, positions_1T), v


def rope_rows(shape: dict, device: torch.device, dtype: torch.dtype, repeats: int) -> list[dict]:
    n, t, h, dh = shape["batch"], shape["seq"], shape["heads"], shape["head_dim"]
    rope = RotaryPositionalEmbedding(10000.0, dh, t, device=device)
    qkv = torch.randn(n, t, 3 * h * dh, device=device, dtype=dtype, requires_grad=True)
    grads = [torch.randn(n, h, t, dh, device=device, dtype=dtype) for _ in range(3)]
    variants: dict[str, Callable] = {
        "torch": lambda x: torch_rope_heads(x, rope, h),
        "torch compiled": torch.compile(lambda x: torch_rope_heads(x, rope, h)),
        "triton": lambda x: rope_split_heads(x, rope.cos_TP, rope.sin_TP, None, h),
    }
    moved_bytes = 2 * qkv.numel() * qkv.element_size()  # read once, written once
    rows = []
    for name, fn in variants.items():
        row: dict = {"kernel": "qkv split + rope", "variant": name}
        try:
            with torch.no_grad():
                row["forward_ms"] = median_ms(lambda fn=fn: fn(qkv), device, repeats)
            row["forward_backward_ms"] = median_ms(
                lambda fn=fn: torch.autograd.backward(fn(qkv), grads), device, repeats
            )
            row["forward_GB_s"] = moved_bytes / row["forward_ms"] / 1e6
            row["forward_backward_GB_s"] = 2 * moved_bytes / row["forward_backward_ms"] / 1e6
        except Exception as exc:  # one broken variant must not cost the others (or a lease)
            row["error"] = f"{type(exc).__name__}: {first_line(exc)}"
        rows.append(row)
    return rows


def sdpa_rows(shape: dict, device: torch.device, dtype: torch.dtype, repeats: int) -> list[dict]:
    n, t, h, dh = shape["batch"], shape["seq"], shape["heads"], shape["head_dim"]
    q, k, v = (torch.randn(n, h, t, dh, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn_like(q)
    flops = 4 * n * h * t * t * dh / 2  # causal: half of QK^T and PV, 2 FLOPs per multiply-add
    rows = []
    for name, backend in [("default", None), *SDPA_KERNELS.items()]:
        row: dict = {"kernel": "causal sdpa", "variant": name}

        def step() -> None:
            out = scaled_dot_product_attention(q, k, v, is_causal=True)
            out.backward(grad)

        try:
            if backend is None:
                row["forward_backward_ms"] = median_ms(step, device, repeats)
            else:
                with sdpa_kernel(backend):
                    row["forward_backward_ms"] = median_ms(step, device, repeats)
            # backward = 2.5x the forward's matmul FLOPs (dV, dP, dQ, dK, plus the recomputed QK^T)
            row["forward_backward_TFLOP_s"] = 3.5 * flops / row["forward_backward_ms"] / 1e9
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {first_line(exc)}"
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU: checks the script")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per row on CUDA (default 50; smoke: 2)")
    parser.add_argument("--out", help="write the JSON results here")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.cpu_smoke:
        device, dtype, repeats = torch.device("cpu"), torch.float32, 2
        shape = {"batch": 2, "seq": 16, "heads": 2, "head_dim": 8}
    else:
        if not torch.cuda.is_available():
            sys.exit("kernels.py measures CUDA kernels: run it on a GPU, or pass --cpu-smoke to check the script.")
        device, dtype, repeats = torch.device("cuda"), torch.bfloat16, args.repeats
        shape = {"batch": 128, "seq": 256, "heads": 16, "head_dim": 32}  # tinystories-17m at batch 128
    rows = rope_rows(shape, device, dtype, repeats) + sdpa_rows(shape, device, dtype, repeats)
    print(f"{'kernel':<18} {'variant':<15} {'fwd ms':>8} {'fwd+bwd ms':>11} {'GB/s or TFLOP/s':>16}")
    for r in rows:
        if "error" in r:
            print(f"{r['kernel']:<18} {r['variant']:<15} error: {r['error']}")
            continue
        rate = r.get("forward_backward_GB_s", r.get("forward_backward_TFLOP_s"))
        fwd = f"{r['forward_ms']:.4f}" if "forward_ms" in r else "-"
        print(f"{r['kernel']:<18} {r['variant']:<15} {fwd:>8} {r['forward_backward_ms']:>11.4f} {rate:>16.1f}")
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    emit(
        {
            "benchmark": "kernels",
            "device": device_name,
            "torch": torch.__version__,
            "dtype": str(dtype).removeprefix("torch."),
            "shape": shape,
            "machine": describe_machine(),
            "rows": rows,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
