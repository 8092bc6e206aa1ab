"""`scratchlm account`: parameters, training memory and forward FLOPs by component for a model shape.

Shapes come from a preset (`--preset`), one of the handout's GPT-2 shapes (`--model gpt2-xl`), or explicit
numbers (`--d-model 768 --num-layers 12 --num-heads 12 ...`); `--context-length` overrides T, and
`--set model.KEY=VALUE` any other model key (GPT-2 itself: `--ffn gelu --set model.tie_embeddings=true
--set model.positional=learned --set model.norm=layernorm`, 1.56B parameters at XL).
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", help="a preset's model (see `scratchlm presets`)")
    source.add_argument("--model", choices=["gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl"])
    for flag in ("--d-model", "--num-layers", "--num-heads", "--d-ff", "--vocab-size", "--context-length"):
        parser.add_argument(flag, type=int)
    parser.add_argument("--ffn", choices=["swiglu", "silu", "gelu"])
    parser.add_argument(
        "--batch-size",
        type=int,
        help="also count the activations one training step keeps at this batch size (and T = the context)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="model.KEY=VALUE",
        help="any other model key, e.g. model.tie_embeddings=true (repeatable; see `scratchlm info`)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from scratchlm.analysis.accounting import (
        flops_per_token,
        forward_flops,
        gpt2_config,
        param_counts,
        training_memory,
    )
    from scratchlm.config import ModelConfig
    from scratchlm.errors import ConfigError
    from scratchlm.presets import resolve_tables

    explicit = {
        "d_model": args.d_model,
        "num_layers": args.num_layers,
        "num_heads": args.num_heads,
        "d_ff": args.d_ff,
        "vocab_size": args.vocab_size,
        "context_length": args.context_length,
        "ffn": args.ffn,
    }
    explicit = {k: v for k, v in explicit.items() if v is not None}
    explicit.update(_model_overrides(args.set))
    if args.model:
        base = gpt2_config(args.model).to_dict()
    elif args.preset:
        # The preset's [model] as written, not its built config: a size it leaves to be derived (d_ff from
        # ffn and d_model) is derived again from what --ffn / --set change, as `train` and `info` build it.
        base = dict(resolve_tables(args.preset, None, []).get("model", {}))
    else:
        required = ("d_model", "num_layers", "num_heads", "vocab_size", "context_length")
        missing = [f"--{k.replace('_', '-')}" for k in required if k not in explicit]
        if missing:
            raise ConfigError(f"give --preset, --model, or a full shape (missing {' '.join(missing)}).")
        base = {}
    if args.d_model is not None and "d_ff" not in explicit:  # --d-model scales the shape; --set is as in train
        if args.model:  # the handout's GPT-2 shapes: d_ff = 4·d_model at any width
            explicit["d_ff"] = 4 * explicit["d_model"]
        else:
            base.pop("d_ff", None)  # a new width re-derives the default d_ff
    config = ModelConfig.from_dict({**base, **explicit})
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}.")
    counts = param_counts(config)
    flops = forward_flops(config)
    memory = {"fp32": training_memory(config, 4), "bf16": training_memory(config, 2)}
    report = {
        "model": config.to_dict(),
        "params": {
            "total": counts.total,
            "non_embedding": counts.non_embedding,
            "embedding": counts.embedding,
            "matmul": counts.matmul,  # N of 6N + 12·L·H·Q·T
        },
        "train_flops_per_token": flops_per_token(config),
        "memory_bytes": {
            k: {"weights": m.weights, "gradients": m.gradients, "adamw": m.adamw_state, "total": m.total}
            for k, m in memory.items()
        },
        "forward_flops": {**vars(flops), "total": flops.total},
        "forward_flop_shares": flops.shares(),
    }
    if args.batch_size is not None:
        report["activations"] = _activations(config, args.batch_size)
    if args.json:
        print(json.dumps(report))
        return 0
    c = config
    print(
        f"{c.num_layers} layers, d_model {c.d_model}, {c.num_heads} heads, d_ff {c.d_ff} ({c.ffn}), "
        f"vocab {c.vocab_size}, context {c.context_length}"
    )
    print(
        f"parameters: {counts.total:,} total, {counts.non_embedding:,} non-embedding, "
        f"N = {counts.matmul:,} in matmuls" + (" (tied LM head included)" if c.tie_embeddings else "")
    )
    # scratchlm's bf16 training is autocast: weights, gradients and moments stay fp32, so the fp32 line is
    # what `train` needs whatever train.dtype says; the all-bf16 line is a lower bound it never reaches.
    labels = {
        "fp32": "training state in fp32 (as `scratchlm train` keeps it, bf16 autocast too; activations excluded)",
        "bf16": "training state all in bf16 (pure bf16, not autocast)",
    }
    for kind, m in memory.items():
        print(
            f"{labels[kind]}: weights {_bytes(m.weights)} + gradients {_bytes(m.gradients)} + AdamW "
            f"{_bytes(m.adamw_state)} = {_bytes(m.total)}"
        )
    print(f"training FLOPs per token at T = {c.context_length}: {flops_per_token(config):.4g} (6N + 12·L·H·Q·T)")
    print(f"forward FLOPs for one sequence of {c.context_length} tokens: {flops.total:.4g}")
    for name, share in flops.shares().items():
        print(f"  {name:22s} {getattr(flops, name):12.4g}  {share:6.1%}")
    if args.batch_size is not None:
        _print_activations(report["activations"], memory["fp32"].total)
    return 0


def _activations(config: Any, batch_size: int) -> dict[str, Any]:
    from scratchlm.analysis.activations import activation_estimate, measure_saved_activations

    estimate = activation_estimate(config, batch_size)
    measured = measure_saved_activations(config, batch_size)
    return {
        "batch_size": batch_size,
        "seq_len": config.context_length,
        "path": "fast" if config.fast else "reference",
        "attention_backend": config.attention_backend,
        "estimate_bytes": {**{k: 4 * v for k, v in vars(estimate).items()}, "total": 4 * estimate.total},
        "measured_bytes": {**measured.by_part, "total": measured.total},
    }


def _print_activations(activations: dict[str, Any], state_bytes: int) -> None:
    estimate, measured = activations["estimate_bytes"], activations["measured_bytes"]
    print(
        f"activations kept for backward at batch {activations['batch_size']} x {activations['seq_len']} tokens, "
        "fp32 without autocast:"
    )
    print(f"  textbook count (each op's output once): {_bytes(estimate['total'])}")
    for name, value in estimate.items():
        if name != "total" and value:
            print(f"    {name:22s} {_bytes(value):>11s}")
    parts = sorted(((v, k) for k, v in measured.items() if k != "total" and v), reverse=True)
    print(
        f"  measured, scratchlm's {activations['path']} path ({activations['attention_backend']} attention): "
        f"{_bytes(measured['total'])}"
    )
    for value, name in parts:
        print(f"    {name:22s} {_bytes(value):>11s}")
    print(f"  training state (fp32) + measured activations: {_bytes(state_bytes + measured['total'])}")


def _model_overrides(assignments: list[str]) -> dict[str, Any]:
    """`--set model.KEY=VALUE` as {KEY: VALUE}; account has only a model, so other sections are refused."""
    from scratchlm.errors import ConfigError
    from scratchlm.presets import parse_override

    values: dict[str, Any] = {}
    for assignment in assignments:
        path, value = parse_override(assignment)
        if path[0] != "model" or len(path) != 2:
            raise ConfigError(
                f"account counts a model only, so --set takes model.KEY=VALUE (e.g. model.tie_embeddings=true), "
                f"got {assignment!r}."
            )
        values[path[1]] = value
    return values


def _bytes(n: int) -> str:
    """Bytes in the largest binary unit that keeps the number >= 1 (a small model is not '0.00 GiB')."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"
