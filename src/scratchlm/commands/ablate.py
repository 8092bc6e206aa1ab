"""`scratchlm ablate`: a grid of config values times seeds, one run each, then a table (final and best
validation loss, mean ± std over seeds, tokens/s) and overlaid curves. Runs already finished are reused.

    scratchlm ablate --preset scratch1-quick --grid model.positional=rope,sinusoidal,learned,none --seeds 3
    scratchlm ablate --study positions-trajectories        (ready-made; `--list` shows them)
"""

from __future__ import annotations

import argparse
import shlex


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--study", help="a ready-made study (see --list)")
    source.add_argument("--preset", help="preset the variants start from")
    source.add_argument("--list", action="store_true", help="list the ready-made studies and exit")
    parser.add_argument("--config", help="TOML file whose tables override the preset's")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="SECTION.KEY=V1,V2,...",
        help="values to try for one key (repeatable: every combination is a variant)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one value in every run (wins over a study's own `set`; the variants' values win over it)",
    )
    parser.add_argument("--seeds", type=int, metavar="N", help="seeds per variant (train.seed = 0..N-1)")
    parser.add_argument("--out", help="study directory (default runs/ablate-<study or preset>)")


def run(args: argparse.Namespace) -> int:
    from scratchlm.analysis.ablate import (
        Study,
        format_stats,
        grid_variants,
        parse_grid,
        run_study,
        seed_list,
        study_from_tables,
    )
    from scratchlm.errors import ConfigError
    from scratchlm.studies import list_studies, load_study_tables

    if args.list:
        for name in list_studies():
            study = study_from_tables(name, load_study_tables(name))
            print(f"{name:24s} {len(study.variants)} variants x {len(study.seeds)} seeds, preset {study.preset}")
        return 0
    if args.study:
        if args.grid:
            raise ConfigError(f"--grid cannot change the study {args.study!r}; use --preset P --grid ... instead.")
        study = study_from_tables(args.study, load_study_tables(args.study))
        study.overrides = list(args.set)  # above the study's own `set`: the user's budget replaces the study's
        study.config_file = args.config
        name = args.study
    else:
        if not (args.preset or args.config) or not args.grid:
            raise ConfigError("give --study NAME, or --preset P with at least one --grid section.key=v1,v2.")
        study = Study(
            name="custom",
            preset=args.preset,
            variants=grid_variants(parse_grid(args.grid)),
            seeds=[0],
            overrides=list(args.set),
            config_file=args.config,
        )
        name = args.preset or "custom"
    if args.seeds is not None:
        study.seeds = seed_list(args.seeds)
    if args.study and (args.set or args.config or args.seeds is not None):
        # The study file's description states its own budget and seeds; say that this run's differ.
        study.description += (
            " This run changes the study's recipe (--set, --config or --seeds): the settings it used are stated "
            "below the table."
        )
    out = args.out or f"runs/ablate-{name}"
    results = run_study(study, out, command=_command(args, out))
    for v in results["variants"]:
        final = v["final_val_loss"]
        text = format_stats(final) + (f" (n={final['n']})" if final and final["n"] > 1 else "")
        print(f"{v['variant']:32s} final val loss {text}")
    print(f"table: {out}/results.md, figure: {out}/{results['figure']}")
    return 0


def _command(args: argparse.Namespace, out: str) -> str:
    """The command line that reproduces this study (recorded in its results)."""
    words = ["scratchlm", "ablate"]
    words += ["--study", args.study] if args.study else ["--preset", args.preset] if args.preset else []
    words += ["--config", args.config] if args.config else []
    for flag, values in (("--grid", args.grid), ("--set", args.set)):
        for value in values:
            words += [flag, value]
    words += ["--seeds", str(args.seeds)] if args.seeds is not None else []
    return " ".join(shlex.quote(w) for w in [*words, "--out", out])
