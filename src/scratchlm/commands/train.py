"""`scratchlm train`: train a model from a preset, a config file and overrides, or resume a run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scratchlm.config import RunConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="preset to start from (see `scratchlm presets`)")
    parser.add_argument("--config", help="TOML file whose tables override the preset's")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one value (repeatable)"
    )
    parser.add_argument("--out", help="run directory (default: runs/<preset>)")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint; --set a larger train.max_steps, max_tokens or "
        "epochs to train it longer",
    )
    parser.add_argument(
        "--stop-after", type=int, metavar="STEPS", help="checkpoint and exit after this many more steps"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar (as --set train.progress=false)"
    )


def run(args: argparse.Namespace) -> int:
    from scratchlm.train.distributed import is_main_process, reported_by_local_rank_zero
    from scratchlm.train.tracking import dumps_strict
    from scratchlm.train.trainer import train

    # Before the process group exists the ranks cannot agree on who reports; every rank of a node reads the
    # same command line and files, so a mistake in them is said once per node, not once per process.
    with reported_by_local_rank_zero():
        config, run_dir = _resolve(args)
    summary = train(config, run_dir, resume=args.resume is not None, stop_after=args.stop_after)
    if is_main_process():  # under torchrun every rank gets the summary; one copy on stdout is enough
        print(dumps_strict(summary))
    return 0


def _resolve(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    """The run's config and directory from the command line (a new run, or the run --resume continues)."""
    from scratchlm.config import RunConfig
    from scratchlm.errors import ConfigError
    from scratchlm.presets import resolve_run_config

    if args.no_progress:
        args.set = [*args.set, "train.progress=false"]
    # `is not None`: an empty --resume or --out (an unset shell variable) must not fall back to a default.
    if args.resume is not None:
        if args.out is not None:
            raise ConfigError(
                f"--resume continues the run in {args.resume} itself, so --out {args.out} cannot go with it; "
                "drop --out, or drop --resume to start a new run there."
            )
        run_dir = _resume_dir(args.resume)
        config = RunConfig.from_tables(_resumed_tables(run_dir, args))
    else:
        if args.preset is None and args.config is None:
            raise ConfigError("say what to train: --preset NAME (see `scratchlm presets`) and/or --config FILE.toml.")
        config = resolve_run_config(args.preset, args.config, args.set)
        run_dir = _out_dir(args.out, args.preset or Path(args.config).stem)
    if args.stop_after is not None and args.stop_after < 1:
        raise ConfigError(f"--stop-after must be a positive number of steps, got {args.stop_after}.")
    return config, run_dir


def _out_dir(out: str | None, default_name: str) -> Path:
    """The new run's directory: --out, else runs/<preset or config name>."""
    from scratchlm.errors import ConfigError

    if out is None:
        return Path(f"runs/{default_name}")
    if not out:
        raise ConfigError(f"--out is empty; name the run directory (or leave --out out for runs/{default_name}).")
    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory; choose a directory for the run.")
    return Path(out)


def _resume_dir(resume: str) -> Path:
    """--resume's run directory, with the fix for the usual slips: a missing path, a checkpoint file or the
    run's checkpoints/ folder given instead of the run directory."""
    from scratchlm.errors import ConfigError

    path = Path(resume)
    if not resume:
        raise ConfigError("--resume is empty; give it the directory of the run to continue.")
    if not path.exists():
        raise ConfigError(f"cannot resume: {path} does not exist; check the path (--resume takes a run directory).")
    checkpoints_dir = path.parent if path.is_file() else path
    if checkpoints_dir.name == "checkpoints" and (checkpoints_dir.parent / "config.toml").is_file():
        raise ConfigError(
            f"--resume takes the run directory, not its checkpoints: use --resume {checkpoints_dir.parent} "
            "(it continues from checkpoints/last.pt)."
        )
    if path.is_file():
        raise ConfigError(f"cannot resume: {path} is a file, not a run directory; check the path.")
    return path


def _resumed_tables(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The run's saved config with the command line's overrides on top.

    A budget given on the command line replaces the saved one, as it replaces a preset's: `--set
    train.epochs=20` on a run budgeted in steps means 20 epochs (the trainer decides whether that is allowed).
    """
    from scratchlm.errors import ConfigError
    from scratchlm.presets import load_toml_file, merge_tables, replace_budget, resolve_tables

    saved_path = run_dir / "config.toml"
    if not saved_path.is_file():
        raise ConfigError(f"cannot resume: {saved_path} does not exist; is {run_dir} a run directory?")
    saved = load_toml_file(str(saved_path))
    overrides = resolve_tables(args.preset, args.config, args.set)
    return merge_tables(replace_budget(saved, overrides), overrides)
