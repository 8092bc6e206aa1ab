"""Kernels per decode step: the eager step's ATen ops against the compiled step's fused kernels, counted.

    python benchmarks/decode_kernels.py --out benchmarks/results/decode-kernels-cpu.json

Why count: at batch 1 a decode step of a model this small is a chain of tiny kernels, and on a GPU each one
costs a few microseconds whatever its arithmetic (a launch from Python, or a node of a replayed CUDA graph).
The step's time is then about (kernels per step) x (time per kernel), so the count is the prediction's
input (benchmarks/NOTES.md §7). Counted on the CPU, no GPU needed:
- eager: every ATen op the step dispatches (a TorchDispatchMode), without views (as_strided, view,
  unsqueeze, ...) and the few other ops that move no data (NO_KERNEL); on CUDA each remaining op is one
  kernel launch, a few (a cuBLAS matmul with a split-K reduction) more than one;
- compiled: the calls in the `call` function of the code inductor writes for the step
  (torch._inductor.utils.run_and_get_code): its own fused kernels plus the library calls it keeps
  (matmuls, attention). Inductor's CPU backend writes C++ loops where on CUDA it writes Triton kernels;
  both come from the same scheduler's fusion decisions, so the counts should be close but are not the
  same program (the GPU count is the one a lent GPU should confirm with torch.profiler).
The step is the one `scratchlm.infer` replays: one token per row over a static cache (kv_cache.py) that
holds the prompt, the host half (`KVCache.advance`) outside, as in cuda_graph.py and compiled_step.py.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from decode import bench_model_config, random_prompts
from machine_info import describe_machine, emit, require, run_main
from scratchlm.infer.compiled_step import CompiledDecodeStep
from scratchlm.infer.kv_cache import KVCache
from scratchlm.model import TransformerLM

# Ops that are not views by schema but still launch nothing: a reshape's alias, a dtype computation.
NO_KERNEL = frozenset({"_unsafe_view", "promote_types", "result_type"})


class OpCounter(TorchDispatchMode):
    """Counts the ATen ops dispatched inside it, without views and NO_KERNEL ops (they launch nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = func.overloadpacket.__name__
        if not func.is_view and name not in NO_KERNEL:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def static_cache(model: TransformerLM, batch: int, prompt: int, slots: int) -> tuple[KVCache, torch.Tensor]:
    """A static cache holding a random prompt, and the (B, 1) next tokens, as a decode session has them."""
    cache = KVCache.for_model(model, batch, slots, static=True)
    with torch.no_grad():
        model(random_prompts(batch, prompt, model.config.vocab_size, torch.device("cpu")), kv_cache=cache)
    cache.reserve_advances = False  # the step's host half runs outside it, as a graph replay needs
    return cache, torch.zeros(batch, 1, dtype=torch.long)


def eager_ops(model: TransformerLM, batch: int, prompt: int, slots: int) -> Counter[str]:
    cache, tokens_B1 = static_cache(model, batch, prompt, slots)
    cache.advance(1)
    counter = OpCounter()
    with torch.no_grad(), counter:
        model(tokens_B1, kv_cache=cache)[0][:, -1]
    return counter.ops


CALL = re.compile(r"^\s*(?:\w+(?:, \w+)* = )?(?P<callee>[\w.]+)\(", re.MULTILINE)


def call_body(code: str) -> str:
    """The body of the generated `call` function (a module-level def, or a method of its Runner class)."""
    match = re.search(r"^(?P<indent> *)def call\(.*\n", code, re.MULTILINE)
    if match is None:
        raise SystemExit("the generated code has no `call` function; this script needs updating for this torch.")
    lines = []
    for line in code[match.end() :].splitlines():
        if line.strip() and len(line) - len(line.lstrip()) <= len(match.group("indent")):
            break
        lines.append(line)
    return "\n".join(lines)


def compiled_calls(model: TransformerLM, batch: int, prompt: int, slots: int) -> tuple[Counter[str], str]:
    """The kernel and library calls of the step's generated `call` function, by callee; and the code."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()  # compile afresh: a cached graph would hand back no code
    cache, _ = static_cache(model, batch, prompt, slots)
    _, sources = run_and_get_code(CompiledDecodeStep, model, cache)
    if len(sources) != 1:
        raise SystemExit(f"expected one compiled graph for the step, got {len(sources)} (a graph break?).")
    body = call_body(sources[0])
    calls: Counter[str] = Counter()
    for match in CALL.finditer(body):
        callee = match.group("callee")
        # Bookkeeping in `call`, not work on the device: argument unpacking, asserts, buffer allocation.
        if callee.startswith(("assert_", "empty_strided", "reinterpret_tensor", "del", "args.clear")):
            continue
        calls[re.sub(r"_\d+$", "", callee)] += 1
    return calls, sources[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tinystories-17m", help="bench, or a preset name")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--slots", type=int, default=256, help="static cache size (gpu_decode_check.sh: 256)")
    parser.add_argument("--code-dir", help="also write each compiled step's generated code here")
    parser.add_argument("--out", help="write the JSON result here too")
    args = parser.parse_args(argv)
    require(min(args.batches) >= 1 and args.prompt >= 1, "--batches and --prompt must be at least 1.")
    require(
        args.prompt < args.slots,
        f"--slots ({args.slots}) must exceed --prompt ({args.prompt}): the cache holds the prompt and one token.",
    )
    torch.set_num_threads(1)

    rows = []
    for fast in (False, True):
        config = bench_model_config(args.model)
        config.fast = fast
        config.context_length = max(config.context_length, args.slots)
        torch.manual_seed(0)
        model = TransformerLM(config).eval()
        for batch in args.batches:
            ops = eager_ops(model, batch, args.prompt, args.slots)
            calls, code = compiled_calls(model, batch, args.prompt, args.slots)
            if args.code_dir:
                path = Path(args.code_dir) / f"decode-step-{args.model}-b{batch}-fast{int(fast)}.py"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(code, encoding="utf-8")
            library = sum(n for name, n in calls.items() if not name.startswith("cpp_fused"))
            rows.append({
                "fast": fast, "batch": batch, "eager_ops": sum(ops.values()),
                "compiled_calls": sum(calls.values()), "compiled_library_calls": library,
                "eager_by_op": dict(ops.most_common()), "compiled_by_callee": dict(calls.most_common()),
            })  # fmt: skip
            print(f"done: fast={fast} batch {batch}", file=sys.stderr)

    print(f"{'fast':>5} {'batch':>5} {'eager ops':>10} {'compiled calls':>15} {'of them library':>16}")
    for r in rows:
        print(f"{r['fast']!s:>5} {r['batch']:>5} {r['eager_ops']:>10} {r['compiled_calls']:>15} "
              f"{r['compiled_library_calls']:>16}")  # fmt: skip
    emit(
        {
            "benchmark": "decode_kernels",
            "device": "cpu",  # counted on the CPU: see the docstring
            "machine": describe_machine(),
            "torch": torch.__version__,
            "model": args.model,
            "prompt": args.prompt,
            "slots": args.slots,
            "dtype": "float32",
            "rows": rows,
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    run_main(main)
