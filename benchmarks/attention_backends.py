"""Forward+backward step time of the two attention backends ("reference" and "sdpa"), by model shape.

CPU (default): the debug preset (batch 16) and the scratch1-quick shape (batch 32), float32; MFU is null
there (a CPU has no datasheet peak here). With --device cuda: the CS336 TinyStories shape (tinystories-17m,
batch 128, bf16 autocast) as well, with MFU against the GPU's datasheet bf16 peak for that row. Each step is
timed alone (synchronized on CUDA) after 3 untimed warm-up steps; the median is reported. Prints a table,
then one JSON line; --out writes the JSON to a file.

    python benchmarks/attention_backends.py [--device cpu|cuda] [--steps 20] [--out benchmarks/results/X.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch

from machine_info import describe_machine, device_from, emit, require, run_main
from scratchlm.analysis.accounting import flops_per_token, param_counts, peak_flops
from scratchlm.model import TransformerLM
from scratchlm.presets import model_config_from_preset


def time_steps(
    model: TransformerLM, batch: int, device: torch.device, dtype: torch.dtype | None, steps: int
) -> list[float]:
    """Seconds per forward+backward step (after 3 warm-up steps)."""
    c = model.config
    idx = torch.randint(0, c.vocab_size, (batch, c.context_length), device=device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    times = []
    for i in range(steps + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            _, loss = model(idx, idx)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (adds the tinystories-17m row)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row, after 3 warm-up steps (default 20)")
    parser.add_argument("--out", help="write the JSON results here")
    args = parser.parse_args()
    require(args.steps >= 1, f"--steps must be at least 1, got {args.steps}.")
    device = device_from(args.device)
    torch.manual_seed(0)
    cases = [("debug", 16, None), ("scratch1-quick", 32, None)]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        cases.append(("tinystories-17m", 128, torch.bfloat16))
    rows = []
    for preset, batch, dtype in cases:
        for backend in ("reference", "sdpa"):
            config = model_config_from_preset(preset, [f"model.attention_backend={backend}"])
            model = TransformerLM(config, device=device)
            seconds = statistics.median(time_steps(model, batch, device, dtype, args.steps))
            tokens_per_s = batch * config.context_length / seconds
            peak = peak_flops(torch.cuda.get_device_name(device), "bf16") if dtype == torch.bfloat16 else None
            achieved = flops_per_token(config) * tokens_per_s
            rows.append(
                {
                    "preset": preset,
                    "backend": backend,
                    "batch": batch,
                    "context": config.context_length,
                    "dtype": str(dtype or torch.get_default_dtype()).removeprefix("torch."),
                    "params": param_counts(config).total,
                    "ms_per_step": round(seconds * 1e3, 3),
                    "tokens_per_s": round(tokens_per_s),
                    "tflops": round(achieved / 1e12, 4),
                    "mfu": round(achieved / peak, 4) if peak else None,
                }
            )
    print(f"{'preset':16s} {'backend':10s} {'batch':>5s} {'ms/step':>9s} {'tokens/s':>10s} {'TFLOP/s':>8s} {'MFU':>6s}")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        print(
            f"{r['preset']:16s} {r['backend']:10s} {r['batch']:5d} {r['ms_per_step']:9.2f} "
            f"{r['tokens_per_s']:10d} {r['tflops']:8.3f} {mfu:>6s}"
        )
    for preset in dict.fromkeys(r["preset"] for r in rows):
        ref, fast = (
            next(r for r in rows if r["preset"] == preset and r["backend"] == b) for b in ("reference", "sdpa")
        )
        print(f"{preset}: sdpa is {ref['ms_per_step'] / fast['ms_per_step']:.2f}x the reference backend's speed")
    result = {
        "benchmark": "attention_backends",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "machine": describe_machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "steps": args.steps,
        "rows": rows,
    }
    emit(result, args.out)


if __name__ == "__main__":
    run_main(main)
