"""Decode speed: tokens/s with and without the KV cache, by batch size, prompt length and tokens generated.

    python benchmarks/decode.py --out benchmarks/results/decode-cpu-2core.json    # CPU, the whole grid
    python benchmarks/decode.py --quick                                            # 3.5 min on 2 cores (measured)
    python benchmarks/decode.py --device cuda --model tinystories-17m --hf         # GPU: + CUDA graphs, + HF
    bash benchmarks/gpu_decode_check.sh                                            # GPU: the issue-9 check

Model: random weights, greedy decoding (no stop token, so every run produces exactly N tokens). `bench` is
256 wide, 4 layers, 8 heads, vocabulary 10,000, context 2,176 (= 128 + 2,048); `tinystories-17m` is that
preset's shape (512 wide, 4 layers, 16 heads, context 256).

Method, per (batch B, prompt P):
- cached: one generation of the longest N, timed at each N of the grid (the time to the N-th token,
  prefill included, is what a run asked for N tokens takes; the cache is sized for the longest run, which
  only adds zeroing time); one warm-up generation first; the median of --repeats runs.
- uncached: every step is the plain forward over the whole sequence so far, so a run of N tokens costs
  sum_{i<N} step(B, P + i). Runs whose estimated cost fits --uncached-budget-s are timed whole (median of
  repeats). Longer ones (a batch-16 run of 2,048 tokens would take hours on two cores) are estimated from
  step(B, L) timed at the first, middle and last step of every run and interpolated linearly; the JSON
  marks each cell "measured" or "estimated", and where both exist gives the estimate over the measurement.
- repeats: the median of --repeats runs, except that a run (or an uncached step) longer than 20 s (1 s) is
  timed once: that long a timing is stable, and repeating it would cost minutes.
- graph (CUDA only): the cached step over a static cache, captured once as a CUDA graph and replayed.
- compiled: the cached step over a static cache through torch.compile (scratchlm.infer.compiled_step);
  compiled+graph (CUDA only): that compiled step captured as a CUDA graph. Every (batch, cache size) is a
  compile of its own, so dynamo's recompile limit is raised to the grid's size (past the default 8, a cell
  would run eagerly under the compiled label, compile_s near 0).
- phases (cached, graph, compiled modes): each run is also timed at its first and second token, so a row
  splits into `first_token_s` (the prefill), `second_token_s` (the first decode step with its setup: a
  static step's compile lookup, warm-up steps and graph capture) and the N - 2 steps after them
  (`steady_ms_per_step`, `steady_tokens_per_s`). Short runs (240 tokens in gpu_decode_check.sh) are where
  the fixed costs weigh: tokens_per_s is what a user calling generate gets, steady_tokens_per_s the step.
- Static caches (graph, compiled) attend over every slot allocated, so those modes time each N with
  generations of its own, sized for it (a cache sized for the longest N would slow the short runs). The
  warm-up generation has the timed runs' cache size, so it is where the step compiles; its compile time
  (`compile_s`, from the library's log record) is reported apart, and the timed runs find the compiled
  code (each still pays its own first step and, with a graph, its capture, as a real generation would).
- --fast builds the model with `fast = true`: cached decoding then reads the projections concatenated
  once per generation (one QKV and one W_1|W_3 matmul per layer; scratchlm.infer.packed_weights).
- hf (with --hf, when `transformers` is installed: the `bench` extra): LlamaForCausalLM.generate on the same
  weights (q/k rows permuted from our interleaved RoPE pairs to Llama's half split); its logits are
  checked against ours before timing.
Threads: one by default; on a shared two-core machine two OpenMP threads spin against other processes and
make small steps tens of times slower. The load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from machine_info import describe_machine, device_from, emit, require, run_main, strict_json
from scratchlm.config import ModelConfig
from scratchlm.infer.generate import decode_steps, generate
from scratchlm.model import TransformerLM
from scratchlm.presets import model_config_from_preset

NEW_TOKENS = (64, 256, 1024, 2048)
QUICK_NEW_TOKENS = (64, 256, 1024)
BATCHES = (1, 16)
PROMPTS = (16, 128)
LONG_RUN_S = 20.0  # a timing this long is already stable under load; repeating it would cost minutes
WARMUP_STEPS = 8
CUDA_ONLY = ("graph", "compiled+graph")
STEP_OPTIONS = {
    "cached": {},
    "graph": {"cuda_graph": True},
    "compiled": {"compile": True},
    "compiled+graph": {"compile": True, "cuda_graph": True},
}


def bench_model_config(name: str) -> ModelConfig:
    if name == "bench":
        return ModelConfig(vocab_size=10_000, context_length=2176, d_model=256, num_layers=4, num_heads=8,
                           attention_backend="sdpa")  # fmt: skip
    config = model_config_from_preset(name)
    config.attention_backend = "sdpa"
    config.dropout = 0.0
    return config


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_prompts(batch: int, prompt: int, vocab: int, device: torch.device) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, prompt), generator=torch.Generator().manual_seed(batch * 1000 + prompt)).to(
        device
    )


class CompileTimes(logging.Handler):
    """Collects the `compile_s` that scratchlm.infer.compiled_step logs once per compiled generation."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []
        source = logging.getLogger("scratchlm.infer.compiled_step")
        source.setLevel(logging.INFO)
        source.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "compile_s"):
            self.seconds.append(record.compile_s)


COMPILE_TIMES = CompileTimes()


def time_generation(
    model: TransformerLM, prompts_BP: torch.Tensor, checkpoints: Sequence[int], repeats: int, **options: object
) -> dict:
    """Median seconds to the N-th generated token for each N in checkpoints, and compile seconds by N.

    A dynamic cache attends over the filled slots only, so one generation of the largest N is timed at
    every checkpoint. A static cache (graph, compiled) attends over every slot it was allocated, so each
    N gets generations of its own, sized for it, as a run asked for N tokens would be.
    """
    static = bool(options.get("compile") or options.get("cuda_graph"))
    groups = [[n] for n in checkpoints] if static else [list(checkpoints)]
    result: dict = {"seconds": {}, "compile_s": {}, "phases": {}}
    for group in groups:
        seconds, compile_s, phases = _timed_runs(model, prompts_BP, group, repeats, **options)
        result["seconds"].update(seconds)
        result["phases"].update(phases)
        if compile_s is not None:
            result["compile_s"].update(dict.fromkeys(group, round(compile_s, 2)))
    return result


def _timed_runs(
    model: TransformerLM, prompts_BP: torch.Tensor, checkpoints: Sequence[int], repeats: int, **options: object
) -> tuple[dict[int, float], float | None, dict[int, dict]]:
    """One warm-up generation sized like the timed ones (a compiled step is specialized to its cache size;
    it stops after WARMUP_STEPS tokens, and a compiled step's compile time is taken from it), then repeats."""
    device = prompts_BP.device
    longest = max(checkpoints)
    compiles_before = len(COMPILE_TIMES.seconds)
    for step in decode_steps(model, prompts_BP, max_new_tokens=longest, temperature=0.0, **options):
        if step.index + 1 >= min(WARMUP_STEPS, longest):
            break
    sync(device)
    warmup_compiles = COMPILE_TIMES.seconds[compiles_before:]
    runs: dict[int, list[float]] = {n: [] for n in checkpoints}
    # Tokens 1 and 2 are timed too: the first comes from the prefill, the second from the first decode step
    # plus its setup (a static step's compile lookup, warm-up and graph capture), so a run of N tokens splits
    # into fixed costs and N - 2 steady-state steps.
    marks: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for step in decode_steps(model, prompts_BP, max_new_tokens=longest, temperature=0.0, **options):
            if step.index + 1 in runs or step.index + 1 in marks:
                sync(device)
                elapsed = time.perf_counter() - start
                for timings in (runs, marks):
                    if step.index + 1 in timings:
                        timings[step.index + 1].append(elapsed)
        if runs[longest][-1] > LONG_RUN_S:
            break
    seconds = {n: statistics.median(times) for n, times in runs.items()}
    phases = {n: run_phases(prompts_BP.shape[0], n, runs[n], marks[1], marks[2]) for n in checkpoints}
    return seconds, (warmup_compiles or [None])[0], phases


def run_phases(batch: int, n: int, to_n: list[float], to_first: list[float], to_second: list[float]) -> dict:
    """Where a run of n tokens spends its time (medians over repeats): the prefill's token, the first step
    with its setup, and the steady-state steps after it (empty for n <= 2)."""
    first = statistics.median(to_first)
    if n < 2:
        return {"first_token_s": first}
    second = statistics.median(to_second)
    phases = {"first_token_s": first, "second_token_s": second - first}
    if n > 2:
        steady_s = statistics.median(end - mid for end, mid in zip(to_n, to_second, strict=True))
        phases["steady_ms_per_step"] = 1e3 * steady_s / (n - 2)
        phases["steady_tokens_per_s"] = batch * (n - 2) / steady_s
    return phases


@torch.no_grad()
def uncached_step_seconds(model: TransformerLM, batch: int, length: int, repeats: int, device: torch.device) -> float:
    """One uncached decode step at sequence length L: the forward over (B, L) and the next-token choice."""
    ids_BL = torch.randint(0, model.config.vocab_size, (batch, length), device=device)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        model(ids_BL)[0][:, -1].argmax(-1)
        sync(device)
        times.append(time.perf_counter() - start)
        if times[-1] > LONG_RUN_S / 20:
            break  # a step of a second or more is already stable; more would cost minutes
    return statistics.median(times)


def uncached_times(
    model: TransformerLM, prompts_BP: torch.Tensor, checkpoints: Sequence[int], repeats: int, budget_s: float
) -> dict[int, dict]:
    """Per N: seconds (measured whole when the estimate fits the budget, else estimated) and how."""
    device = prompts_BP.device
    batch, prompt = prompts_BP.shape
    uncached_step_seconds(model, batch, prompt, 1, device)  # warm-up
    # The first, middle and last step of every run in the grid: each run's sum is then interpolated
    # between points it contains.
    lengths = sorted({prompt + offset for n in checkpoints for offset in (0, (n - 1) // 2, n - 1)})
    step_s = [uncached_step_seconds(model, batch, length, repeats, device) for length in lengths]
    results = {}
    for n in checkpoints:
        estimate = float(np.interp(np.arange(prompt, prompt + n), lengths, step_s).sum())
        cell = {"estimated_s": estimate, "step_lengths": lengths, "step_s": step_s}
        if estimate <= budget_s:
            runs = []
            for _ in range(repeats):
                sync(device)
                start = time.perf_counter()
                generate(model, prompts_BP, max_new_tokens=n, temperature=0.0, use_cache=False)
                sync(device)
                runs.append(time.perf_counter() - start)
                if runs[-1] > LONG_RUN_S:
                    break
            cell["measured_s"] = statistics.median(runs)
            cell["estimate_over_measured"] = round(estimate / cell["measured_s"], 3)
        cell["seconds"] = cell.get("measured_s", estimate)
        cell["method"] = "measured" if "measured_s" in cell else "estimated"
        results[n] = cell
    return results


# --------------------------------------------------------------------------------------- Hugging Face


def hf_llama_from(model: TransformerLM) -> torch.nn.Module:
    """LlamaForCausalLM with our weights; our RoPE rotates pairs (2i, 2i+1), Llama's (i, i + Dh/2)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.config
    if (c.positional, c.norm, c.ffn, c.norm_position) != ("rope", "rmsnorm", "swiglu", "pre"):
        raise SystemExit("the HF comparison needs a RoPE + RMSNorm + SwiGLU pre-norm model (Llama's family).")
    hf_config = LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff, num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads, num_key_value_heads=c.num_heads, max_position_embeddings=c.context_length,
        rms_norm_eps=c.norm_eps, rope_theta=c.rope_theta, tie_word_embeddings=c.tie_embeddings,
        attention_bias=False, mlp_bias=False, hidden_act="silu", bos_token_id=None, eos_token_id=None,
        pad_token_id=0,
    )  # fmt: skip
    weight = model.token_embeddings.weight
    hf = LlamaForCausalLM(hf_config).to(device=weight.device, dtype=weight.dtype).eval()
    # Within each head, Llama's row j < Dh/2 is our row 2j and its row Dh/2 + j our row 2j + 1.
    head = torch.cat([torch.arange(0, c.head_dim, 2), torch.arange(1, c.head_dim, 2)])
    rows = (torch.arange(c.num_heads).unsqueeze(1) * c.head_dim + head).flatten().to(weight.device)
    ours = model.state_dict()
    mapped = {
        "model.embed_tokens.weight": ours["token_embeddings.weight"],
        "model.norm.weight": ours["ln_final.weight"],
        "lm_head.weight": ours["lm_head.weight"],
    }
    for i in range(c.num_layers):
        mine, theirs = f"layers.{i}.", f"model.layers.{i}."
        mapped[theirs + "self_attn.q_proj.weight"] = ours[mine + "attn.q_proj.weight"][rows]
        mapped[theirs + "self_attn.k_proj.weight"] = ours[mine + "attn.k_proj.weight"][rows]
        mapped[theirs + "self_attn.v_proj.weight"] = ours[mine + "attn.v_proj.weight"]
        mapped[theirs + "self_attn.o_proj.weight"] = ours[mine + "attn.output_proj.weight"]
        mapped[theirs + "mlp.gate_proj.weight"] = ours[mine + "ffn.w1.weight"]
        mapped[theirs + "mlp.up_proj.weight"] = ours[mine + "ffn.w3.weight"]
        mapped[theirs + "mlp.down_proj.weight"] = ours[mine + "ffn.w2.weight"]
        mapped[theirs + "input_layernorm.weight"] = ours[mine + "ln1.weight"]
        mapped[theirs + "post_attention_layernorm.weight"] = ours[mine + "ln2.weight"]
    hf.load_state_dict(mapped, strict=True)
    return hf


@torch.no_grad()
def hf_logit_error(model: TransformerLM, hf: torch.nn.Module, device: torch.device) -> float:
    """Max |ours - HF| / max |ours| over the logits of one random 64-token sequence."""
    ids = torch.randint(0, model.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(5)).to(device)
    ours = model(ids)[0].float()
    theirs = hf(ids).logits.float()
    return ((ours - theirs).abs().max() / ours.abs().max()).item()


def time_hf(
    hf: torch.nn.Module, prompts_BP: torch.Tensor, checkpoints: Sequence[int], repeats: int
) -> dict[int, float]:
    """Median seconds of HF greedy generate for each N (separate runs; generate has no per-token hook)."""
    device = prompts_BP.device
    mask = torch.ones_like(prompts_BP)

    def run(n: int) -> None:
        hf.generate(prompts_BP, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    run(8)  # warm-up
    results = {}
    for n in checkpoints:
        times = []
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            run(n)
            sync(device)
            times.append(time.perf_counter() - start)
        results[n] = statistics.median(times)
    return results


# -------------------------------------------------------------------------------------------- the grid


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (adds the graph modes)")
    parser.add_argument("--model", default="bench", help="bench, or a preset name (e.g. tinystories-17m)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1; see the docstring)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell, median (default 3)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="N up to 1024, one repeat, a 5 s uncached budget: minutes, not an hour (compiled mode compiles per N)",
    )
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--prompts", type=int, nargs="+", default=list(PROMPTS))
    parser.add_argument("--new-tokens", type=int, nargs="+", help=f"default {list(NEW_TOKENS)}")
    parser.add_argument("--uncached-budget-s", type=float, default=20.0, help="time uncached runs whole up to this")
    parser.add_argument("--skip-uncached", action="store_true")
    parser.add_argument("--hf", action="store_true", help="also time HF transformers (needs the bench extra)")
    parser.add_argument("--modes", nargs="+", choices=list(STEP_OPTIONS), help="default: every one this device has")
    parser.add_argument("--fast", action="store_true", help="model.fast = true: decode with packed projections")
    parser.add_argument("--out", help="write the JSON result here too")
    args = parser.parse_args(argv)

    new_tokens = args.new_tokens or list(QUICK_NEW_TOKENS if args.quick else NEW_TOKENS)
    require(args.repeats >= 1 and args.threads >= 1, "--repeats and --threads must be at least 1.")
    require(min(args.batches) >= 1 and min(args.prompts) >= 1, "--batches and --prompts must be at least 1.")
    require(min(new_tokens) >= 1, f"--new-tokens must be at least 1, got {min(new_tokens)}.")
    torch.set_num_threads(args.threads)
    device = device_from(args.device)
    dtype = getattr(torch, args.dtype)
    repeats = 1 if args.quick else args.repeats
    budget = min(args.uncached_budget_s, 5.0) if args.quick else args.uncached_budget_s
    # Each (batch, cache size) of the grid compiles a step of its own (dynamic=False). Past dynamo's
    # recompile_limit (8 by default) a new shape would run eagerly under the "compiled" label: the default
    # grid has 16 shapes, so the limit is raised to fit the grid.
    shapes = len(args.batches) * len(args.prompts) * len(new_tokens)
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), shapes + 8))
    config = bench_model_config(args.model)
    config.fast = args.fast
    longest = max(args.prompts) + max(new_tokens)
    if longest > config.context_length:
        config.context_length = longest  # only the RoPE table grows; the weights do not depend on it
    torch.manual_seed(0)
    model = TransformerLM(config, device=device).to(dtype).eval()
    wanted = args.modes or [m for m in STEP_OPTIONS if device.type == "cuda" or m not in CUDA_ONLY]
    if device.type != "cuda" and any(m in CUDA_ONLY for m in wanted):
        cuda_modes = [m for m in wanted if m in CUDA_ONLY]
        raise SystemExit(f"decode.py: modes {cuda_modes} need CUDA; pass --device cuda on a machine with a GPU.")

    def timer(options: dict) -> Callable[[torch.Tensor], dict]:
        return lambda p: time_generation(model, p, new_tokens, repeats, **options)

    modes: list[tuple[str, Callable[[torch.Tensor], dict]]] = [(m, timer(STEP_OPTIONS[m])) for m in wanted]
    hf_info = None
    if args.hf:
        try:
            import transformers
        except ImportError:
            print("--hf: transformers is not installed (pip install -e '.[bench]'); skipping it", file=sys.stderr)
        else:
            hf = hf_llama_from(model)
            hf_info = {"version": transformers.__version__, "logit_max_rel_error": hf_logit_error(model, hf, device)}
            modes.append(("hf", lambda p: {"seconds": time_hf(hf, p, new_tokens, repeats)}))

    load_before = os.getloadavg()
    started = time.perf_counter()
    rows: list[dict] = []

    def result(complete: bool) -> dict:
        for row in rows:
            row["tokens_per_s"] = row["batch"] * row["new_tokens"] / row["seconds"]
        return {
            "benchmark": "decode",
            "complete": complete,  # False: written after a (batch, prompt) group, in case a later one is cut off
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "machine": describe_machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "wall_s": round(time.perf_counter() - started, 1),
            "model": {"name": args.model, "dtype": args.dtype, "params": model.num_params(), **config.to_dict()},
            "decoding": "greedy, random weights, no stop token",
            "repeats": repeats,
            "hf": hf_info,
            "rows": rows,
            "cached_over_uncached": _speedups(rows),
            "over_cached": _over_cached(rows),
        }

    for batch in args.batches:
        for prompt in args.prompts:
            prompts_BP = random_prompts(batch, prompt, config.vocab_size, device)
            for mode, measure in modes:
                measured = measure(prompts_BP)
                for n, seconds in measured["seconds"].items():
                    extra = {"compile_s": measured["compile_s"][n]} if n in measured.get("compile_s", {}) else {}
                    extra.update(measured.get("phases", {}).get(n, {}))
                    rows.append({"mode": mode, "batch": batch, "prompt": prompt, "new_tokens": n, "seconds": seconds,
                                 "method": "measured", **extra})  # fmt: skip
            if not args.skip_uncached:
                for n, cell in uncached_times(model, prompts_BP, new_tokens, repeats, budget).items():
                    rows.append({"mode": "uncached", "batch": batch, "prompt": prompt, "new_tokens": n, **cell})
            print(f"done: batch {batch}, prompt {prompt} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(strict_json(result(False), indent=2) + "\n", encoding="utf-8")
    final = result(True)
    _print_table(rows, final["cached_over_uncached"])
    _print_over_cached(final["over_cached"])
    emit(final, args.out)
    return 0


def _speedups(rows: list[dict]) -> list[dict]:
    by_key = {(r["mode"], r["batch"], r["prompt"], r["new_tokens"]): r for r in rows}
    out = []
    for (mode, batch, prompt, n), row in by_key.items():
        uncached = by_key.get(("uncached", batch, prompt, n))
        if mode == "cached" and uncached is not None:
            out.append({"batch": batch, "prompt": prompt, "new_tokens": n, "uncached_method": uncached["method"],
                        "speedup": round(uncached["seconds"] / row["seconds"], 2)})  # fmt: skip
    return out


def _over_cached(rows: list[dict]) -> list[dict]:
    """Every other mode's tokens/s next to eager cached decoding's, from the same run."""
    cached = {(r["batch"], r["prompt"], r["new_tokens"]): r for r in rows if r["mode"] == "cached"}
    out = []
    for r in rows:
        base = cached.get((r["batch"], r["prompt"], r["new_tokens"]))
        if r["mode"] in ("cached", "uncached") or base is None:
            continue
        out.append({"mode": r["mode"], "batch": r["batch"], "prompt": r["prompt"], "new_tokens": r["new_tokens"],
                    "cached_tokens_per_s": round(base["tokens_per_s"], 1), "tokens_per_s": round(r["tokens_per_s"], 1),
                    "ratio": round(r["tokens_per_s"] / base["tokens_per_s"], 2)})  # fmt: skip
    return out


def _print_table(rows: list[dict], speedups: list[dict]) -> None:
    speedup = {(s["batch"], s["prompt"], s["new_tokens"]): s["speedup"] for s in speedups}
    header = f"{'mode':>14} {'batch':>5} {'prompt':>6} {'new':>5} {'seconds':>9} {'tokens/s':>10}"
    print(header + "  method      cached/uncached  compile_s  1st+2nd token ms  steady tok/s")
    for r in sorted(rows, key=lambda r: (r["batch"], r["prompt"], r["mode"], r["new_tokens"])):
        ratio = speedup.get((r["batch"], r["prompt"], r["new_tokens"])) if r["mode"] == "cached" else None
        ratio_text = f"{ratio:.1f}x" if ratio is not None else ""
        seconds = f"{r['seconds']:9.2f}" if math.isfinite(r["seconds"]) else "      n/a"
        compile_text = f"{r['compile_s']:.1f}" if "compile_s" in r else ""
        fixed = (f"{1e3 * r['first_token_s']:.1f} + {1e3 * r['second_token_s']:.1f}"
                 if "second_token_s" in r else "")  # fmt: skip
        steady = f"{r['steady_tokens_per_s']:.1f}" if "steady_tokens_per_s" in r else ""
        print(f"{r['mode']:>14} {r['batch']:>5} {r['prompt']:>6} {r['new_tokens']:>5} {seconds} "
              f"{r['tokens_per_s']:>10.1f}  {r['method']:<10}  {ratio_text:<15}  {compile_text:<9}  "
              f"{fixed:<16}  {steady}")  # fmt: skip


def _print_over_cached(over_cached: list[dict]) -> None:
    if not over_cached:
        return
    print(f"\n{'mode':>14} {'batch':>5} {'prompt':>6} {'new':>5} {'cached tok/s':>13} {'mode tok/s':>11}  ratio")
    for r in sorted(over_cached, key=lambda r: (r["mode"], r["batch"], r["prompt"], r["new_tokens"])):
        print(f"{r['mode']:>14} {r['batch']:>5} {r['prompt']:>6} {r['new_tokens']:>5} "
              f"{r['cached_tokens_per_s']:>13.1f} {r['tokens_per_s']:>11.1f}  {r['ratio']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    run_main(main)
