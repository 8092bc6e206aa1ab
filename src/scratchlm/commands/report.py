"""`scratchlm report RUN_DIR`: loss curve, attention maps and report.md for a finished run."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory (runs/NAME)")
    parser.add_argument("--sample", type=int, default=0, help="validation sequence for the attention maps")


def run(args: argparse.Namespace) -> int:
    from scratchlm.analysis.report import write_report

    print(write_report(args.run_dir, attention_sample=args.sample))
    return 0
