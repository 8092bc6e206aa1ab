"""`scratchlm info`: a resolved model config with its parameter counts and FLOPs per token."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="debug", help="preset name (see `scratchlm presets`); default debug")
    parser.add_argument("--config", help="TOML file whose tables override the preset's")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one value (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    from scratchlm.analysis.accounting import flops_per_token, param_counts
    from scratchlm.config import ModelConfig
    from scratchlm.presets import resolve_tables

    config = ModelConfig.from_dict(resolve_tables(args.preset, args.config, args.set).get("model", {}))
    counts = param_counts(config)
    train_flops = flops_per_token(config, training=True)
    report = {
        "model": config.to_dict(),
        "params": {
            "total": counts.total,
            "embedding": counts.embedding,
            "non_embedding": counts.non_embedding,
            "matmul": counts.matmul,
        },
        "flops_per_token": {"train": train_flops, "forward": flops_per_token(config, training=False)},
    }
    if args.json:
        print(json.dumps(report))
        return 0
    for key, value in config.to_dict().items():
        print(f"  {key:18s} {value}")
    # N is printed because it, not the non-embedding count, is the 6N of the FLOPs line (they differ when tied).
    print(
        f"  parameters         {counts.total:,} total, {counts.non_embedding:,} non-embedding, "
        f"N = {counts.matmul:,} in matmuls"
    )
    print(f"  train FLOPs/token  {train_flops:.4g} (6N + 12·L·H·Q·T at T={config.context_length})")
    return 0
