"""The fast path's SwiGLU in an eager training step: time and kept bytes of three forms, side by side.

Each form computes SiLU(x W_1.T) * (x W_3.T) from one (D -> 2F) matmul and is timed forward + backward
(the matmul included, since that is what a training step pays), at each preset's own FFN shape and
tokens per step (B·T; `--max-tokens` caps it so the large presets fit a short run on a CPU):
- `autograd, from-scratch SiLU`: plain autograd over `x * sigmoid(x)`, the fast path before 2026-12-03;
- `autograd, F.silu`: plain autograd over PyTorch's fused SiLU;
- `_SiLUGateTimesUp`: the fast path now (`scratchlm.nn.fused.packed_swiglu_gate_up`), which keeps only the
  gate|up output and recomputes SiLU in the backward.
Kept bytes are what autograd holds between forward and backward beyond the input x and the weight
(`saved_tensors_hooks`, counting each storage once). Medians of `--repeats` rounds, the forms interleaved
in each round so machine load hits them alike. Prints a table, then the JSON.

    python benchmarks/swiglu_backward.py [--presets shakespeare-char,...] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from machine_info import describe_machine, emit, require, run_main
from scratchlm.nn.functional import silu
from scratchlm.nn.fused import packed_swiglu_gate_up
from scratchlm.presets import resolve_run_config


def autograd_scratch_silu(x_ND: Tensor, w_13: Tensor) -> Tensor:
    gate_NF, up_NF = (x_ND @ w_13.T).chunk(2, dim=-1)
    return silu(gate_NF) * up_NF


def autograd_torch_silu(x_ND: Tensor, w_13: Tensor) -> Tensor:
    gate_NF, up_NF = (x_ND @ w_13.T).chunk(2, dim=-1)
    return F.silu(gate_NF) * up_NF


FORMS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "autograd, from-scratch SiLU": autograd_scratch_silu,
    "autograd, F.silu": autograd_torch_silu,
    "_SiLUGateTimesUp": packed_swiglu_gate_up,
}


def kept_bytes(form: Callable[[Tensor, Tensor], Tensor], x_ND: Tensor, w_13: Tensor) -> int:
    """Bytes autograd keeps for the backward, besides x and W (the callers' own tensors)."""
    storages: dict[int, int] = {}
    own = {x_ND.untyped_storage().data_ptr(), w_13.untyped_storage().data_ptr()}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out_NF = form(x_ND, w_13)
    # The output itself is the next op's (W_2's) input, kept by that op and not by this one.
    storages.pop(out_NF.untyped_storage().data_ptr(), None)
    return sum(storages.values())


def step_ms(form: Callable[[Tensor, Tensor], Tensor], x_ND: Tensor, w_13: Tensor, grad_NF: Tensor) -> float:
    start = time.perf_counter()
    torch.autograd.grad(form(x_ND, w_13), (x_ND, w_13), grad_NF)
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="scratch1-quick,scratch1,shakespeare-char,capstone-10m,tinystories-17m")
    parser.add_argument("--max-tokens", type=int, default=16384, help="cap on the tokens per step (B·T)")
    parser.add_argument("--repeats", type=int, default=9, help="rounds; each times every form once")
    parser.add_argument("--out", help="write the JSON results here")
    args = parser.parse_args()
    require(args.repeats >= 1, f"--repeats must be at least 1, got {args.repeats}.")
    require(args.max_tokens >= 1, f"--max-tokens must be at least 1, got {args.max_tokens}.")
    rows = []
    for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
        run_config = resolve_run_config(preset)  # the preset's own batch, as training resolves it
        config = run_config.model
        tokens = min(run_config.train.batch_size * config.context_length, args.max_tokens)
        d, f = config.d_model, config.d_ff
        assert f is not None
        g = torch.Generator().manual_seed(0)
        x_ND = torch.randn(tokens, d, generator=g, requires_grad=True)
        w_13 = (torch.randn(2 * f, d, generator=g) * d**-0.5).requires_grad_()
        grad_NF = torch.randn(tokens, f, generator=g)
        grads = {name: torch.autograd.grad(form(x_ND, w_13), (x_ND, w_13), grad_NF) for name, form in FORMS.items()}
        first = grads["autograd, F.silu"]
        for name, pair in grads.items():  # the forms agree, or their times say nothing
            for a, b in zip(pair, first, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)
        times: dict[str, list[float]] = {name: [] for name in FORMS}
        for form in FORMS.values():  # one untimed call each
            step_ms(form, x_ND, w_13, grad_NF)
        for _ in range(args.repeats):
            for name, form in FORMS.items():
                times[name].append(step_ms(form, x_ND, w_13, grad_NF))
        for name, form in FORMS.items():
            rows.append(
                {
                    "preset": preset,
                    "tokens": tokens,
                    "d_model": d,
                    "d_ff": f,
                    "form": name,
                    "ms_median": statistics.median(times[name]),
                    "ms": times[name],
                    "kept_bytes": kept_bytes(form, x_ND, w_13),
                }
            )
    print(f"{'preset':<17} {'N x D x F':<18} {'form':<28} {'ms fwd+bwd':>11} {'vs old':>7} {'kept MiB':>9}")
    for row in rows:
        old = next(r for r in rows if r["preset"] == row["preset"] and r["form"] == "autograd, from-scratch SiLU")
        shape = f"{row['tokens']} x {row['d_model']} x {row['d_ff']}"
        print(
            f"{row['preset']:<17} {shape:<18} {row['form']:<28} {row['ms_median']:>11.2f}"
            f" {row['ms_median'] / old['ms_median']:>6.2f}x {row['kept_bytes'] / 2**20:>9.2f}"
        )
    emit(
        {
            "benchmark": "swiglu_backward",
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "rows": rows,
            "torch": torch.__version__,
            "machine": describe_machine(),
        },
        args.out,
    )


if __name__ == "__main__":
    run_main(main)
