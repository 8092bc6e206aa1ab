"""`scratchlm bench train`: steady-state training throughput of a preset on random tokens."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="debug", help="preset to time (default debug)")
    parser.add_argument("--config", help="TOML file whose tables override the preset's")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one value (repeatable)"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps after warm-up (default 20)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="untimed warm-up steps, compile included; the first step is always one, so 0 runs 1 (default 3)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line (strict JSON: no NaN)")


def run(args: argparse.Namespace) -> int:
    from scratchlm.config import RunConfig
    from scratchlm.errors import ConfigError
    from scratchlm.presets import resolve_tables
    from scratchlm.train.bench import benchmark_training, warmup_steps
    from scratchlm.train.tracking import dumps_strict

    if args.steps < 1 or args.warmup < 0:
        raise ConfigError(f"--steps must be >= 1 and --warmup >= 0, got {args.steps} and {args.warmup}.")
    tables = resolve_tables(args.preset, args.config, args.set)
    budget = tables.setdefault("train", {})
    for key in ("max_tokens", "epochs"):  # a benchmark sets its own length; any preset's budget is dropped
        budget.pop(key, None)
    budget["max_steps"] = warmup_steps(args.warmup) + args.steps
    result = benchmark_training(RunConfig.from_tables(tables), steps=args.steps, warmup=args.warmup)
    label = args.preset if args.config is None else f"{args.preset} + {args.config}"  # the file's settings win
    if not args.json:
        print(readable_line(label, result))
    print(dumps_strict({"preset": args.preset, "config": args.config, **result}))
    return 0


def readable_line(preset: str, result: dict) -> str:
    """One line for a person: throughput, step time, MFU (a percentage; '-' without a known peak), device."""
    mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "- (no peak known for this device)"
    extra = f", compile {result['compile_s']:.1f} s" if result["compile_s"] is not None else ""
    if result["peak_memory_gb"] is not None:
        extra += f", peak memory {result['peak_memory_gb']:.2f} GB"
    return (
        f"{preset}: {result['tokens_per_s']:,.0f} tokens/s, {result['ms_per_step']:.2f} ms/step "
        f"({result['tokens_per_step']:,} tokens per step, {result['steps']} timed after {result['warmup_steps']} "
        f"warm-up), MFU {mfu}{extra} on {result['device']} ({result['dtype']})"
    )
