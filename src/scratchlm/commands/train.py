"""`scratchlm train`: train a model from a preset, a config file and overrides, or resume a run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="preset to start from (see `scratchlm presets`)")
    parser.add_argument("--config", help="TOML file whose tables override the preset's")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one value (repeatable)"
    )
    parser.add_argument("--out", help="run directory (default: runs/<preset>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument(
        "--stop-after", type=int, metavar="STEPS", help="checkpoint and exit after this many more steps"
    )


def run(args: argparse.Namespace) -> int:
    from scratchlm.config import RunConfig
    from scratchlm.errors import ConfigError
    from scratchlm.presets import load_toml_file, merge_tables, resolve_run_config, resolve_tables
    from scratchlm.train.trainer import train

    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.toml"
        if not saved.is_file():
            raise ConfigError(f"cannot resume: {saved} does not exist; is {run_dir} a run directory?")
        tables = merge_tables(load_toml_file(str(saved)), resolve_tables(args.preset, args.config, args.set))
        config = RunConfig.from_tables(tables)
    else:
        if not (args.preset or args.config):
            raise ConfigError("say what to train: --preset NAME (see `scratchlm presets`) and/or --config FILE.toml.")
        config = resolve_run_config(args.preset, args.config, args.set)
        run_dir = Path(args.out or f"runs/{args.preset or Path(args.config).stem}")
    if args.stop_after is not None and args.stop_after < 1:
        raise ConfigError(f"--stop-after must be a positive number of steps, got {args.stop_after}.")
    summary = train(config, run_dir, resume=bool(args.resume), stop_after=args.stop_after)
    print(json.dumps(summary))
    return 0
