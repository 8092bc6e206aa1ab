"""`scratchlm audit causal-mask`: train a model with and without the causal mask (same seed and data),
evaluate both teacher-forced and causally, and write the measured explanation (audit.md, audit.json)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="scratch1", help="preset to audit (default scratch1, the course recipe)")
    parser.add_argument("--config", help="TOML file whose tables override the preset's")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one value (repeatable)"
    )
    parser.add_argument("--out", help="where the two runs and the audit go (default runs/audit-<preset>[-quick])")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CPU-sized: d_model 128, peak lr 1e-3 with warmup and cosine, 3 epochs (the preset's data and batch); "
        "--config and --set win over these, a budget of yours replacing the 3 epochs",
    )
    parser.add_argument(
        "--eval-rows",
        type=int,
        metavar="N",
        help="validation sequences the audit evaluates both ways (default: all those the runs' own evaluation uses)",
    )


def run(args: argparse.Namespace) -> int:
    from scratchlm.analysis.audit import causal_mask_audit
    from scratchlm.errors import ConfigError

    if args.eval_rows is not None and args.eval_rows < 1:
        raise ConfigError(f"--eval-rows must be >= 1, got {args.eval_rows}.")
    out = args.out or f"runs/audit-{args.preset}{'-quick' if args.quick else ''}"
    record = causal_mask_audit(
        args.preset, out, args.set, config_file=args.config, quick=args.quick, eval_rows=args.eval_rows
    )
    for name, run_record in record["runs"].items():
        print(
            f"{name:9s} train {run_record['final_train_loss']:.4f}  val teacher-forced "
            f"{run_record['teacher_forced']['loss']:.4f}  val causal {run_record['causal']['loss']:.4f}"
        )
    print(f"audit: {out}/audit.md (numbers in {out}/audit.json)")
    return 0
