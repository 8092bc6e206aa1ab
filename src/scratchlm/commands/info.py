"""`scratchlm info`: a resolved model config with its parameter counts and FLOPs per token.

The model comes from a preset, a config file and `--set` overrides, or from what a run trained: `info RUN`
(a run directory: its best checkpoint, else its last, else its config.toml) or `info CHECKPOINT.pt`.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        nargs="?",
        metavar="RUN_OR_CHECKPOINT",
        help="a run directory or a .pt checkpoint: describe the model it trained (instead of a preset)",
    )
    parser.add_argument("--preset", help="preset name (see `scratchlm presets`); default debug")
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
    from scratchlm.config import RunConfig
    from scratchlm.errors import ConfigError
    from scratchlm.presets import resolve_tables, toml_value

    checkpoint: dict[str, Any] | None = None
    if args.source is not None:
        given = [flag for flag, value in (("--preset", args.preset), ("--config", args.config)) if value]
        given += ["--set"] if args.set else []
        if given:
            raise ConfigError(
                f"`info {args.source}` describes what that run trained, so {' and '.join(given)} cannot change it; "
                f"drop {'it' if len(given) == 1 else 'them'}, or leave out the run to describe a preset."
            )
        config, checkpoint = _from_run(args.source)
    else:
        tables = resolve_tables("debug" if args.preset is None else args.preset, args.config, args.set)
        # Every section is checked, as `train` would: `--set modle.d_model=128` or `--set optim.lr=abc` is an
        # error here too, not a silent description of the unchanged model.
        config = RunConfig.from_tables(tables).model
    counts = param_counts(config)
    train_flops = flops_per_token(config, training=True)
    report: dict[str, Any] = {
        "model": config.to_dict(),
        "params": {
            "total": counts.total,
            "embedding": counts.embedding,
            "non_embedding": counts.non_embedding,
            "matmul": counts.matmul,
        },
        "flops_per_token": {"train": train_flops, "forward": flops_per_token(config, training=False)},
    }
    if checkpoint is not None:
        report["checkpoint"] = checkpoint
    if args.json:
        print(json.dumps(report))
        return 0
    rows = {key: toml_value(value) for key, value in config.to_dict().items() if value is not None}
    # TOML literals (true, "swiglu"), so a value can be copied into --set or a config file as printed.
    rows["parameters"] = (
        # N is printed because it, not the non-embedding count, is the 6N of the FLOPs line (they differ when tied).
        f"{counts.total:,} total, {counts.non_embedding:,} non-embedding, N = {counts.matmul:,} in matmuls"
    )
    rows["train FLOPs/token"] = f"{train_flops:.4g} (6N + 12·L·H·Q·T at T={config.context_length})"
    if checkpoint is not None:
        rows["checkpoint"] = f"{checkpoint['path']} (step {checkpoint['iteration']})"
        if checkpoint["stored_params"] != counts.total:
            rows["checkpoint"] += f"; its weights hold {checkpoint['stored_params']:,} parameters"
    width = max(map(len, rows))
    for key, value in rows.items():
        print(f"  {key:{width}s}  {value}")
    return 0


def _from_run(source: str) -> tuple[Any, dict[str, Any] | None]:
    """The ModelConfig a run directory or checkpoint file trained, and what its checkpoint says (None when
    a run directory holds no checkpoint yet and its config.toml is all there is)."""
    from scratchlm.config import ModelConfig
    from scratchlm.errors import CheckpointError, ConfigError
    from scratchlm.presets import load_toml_file
    from scratchlm.train.checkpoint import checkpoint_in_run_dir, read_checkpoint

    path = checkpoint_in_run_dir(source)  # a run directory stands for its best checkpoint, else its last
    if os.path.isdir(path):
        config_toml = os.path.join(source, "config.toml")
        if not os.path.isfile(config_toml):
            raise ConfigError(
                f"{source!r} is neither a run directory (no checkpoints/ or config.toml) nor a checkpoint; "
                "pass a run's directory or a .pt file."
            )
        return ModelConfig.from_dict(load_toml_file(config_toml).get("model", {})), None
    if source.endswith(".toml"):
        raise ConfigError(f"{source!r} is a config file; pass it as `info --config {source}`.")
    state = read_checkpoint(path)
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"checkpoint {path!r} holds no model config, so there is no model to describe.")
    config = ModelConfig.from_dict(state["config"])
    # A tied matrix is stored under two names sharing one storage: count it once, as param_counts does.
    tensors = {(t.untyped_storage().data_ptr(), t.storage_offset(), t.shape): t for t in state["model"].values()}
    stored = sum(t.numel() for t in tensors.values())
    return config, {"path": path, "iteration": int(state.get("iteration", 0)), "stored_params": stored}
