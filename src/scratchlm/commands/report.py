"""`scratchlm report RUN_DIR [--format md|mdx|html]`: the loss curve, attention maps and the report of a
finished run: report.md, the course's MDX submission page (submission/<student>.mdx with images/), or a
self-contained report.html. `--audit DIR` adds the causal-mask audit written by `scratchlm audit`.
A trajectory run's MDX page is the Scratch-1 submission; a text run's is the Phase II mini-LM capstone's,
and its reports in every format show samples from its best checkpoint (fixed seed)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory (runs/NAME)")
    parser.add_argument("--format", choices=["md", "mdx", "html"], default="md", help="page format (default md)")
    parser.add_argument("--sample", type=int, default=0, help="validation sequence for the attention maps")
    parser.add_argument(
        "--audit", metavar="DIR", help="an audit directory from `scratchlm audit causal-mask --out DIR`"
    )
    parser.add_argument("--student", help="MDX front matter and file name: your name, not empty (default scratchlm)")
    parser.add_argument("--date", help="MDX front matter: the date (default today, YYYY-MM-DD)")


def run(args: argparse.Namespace) -> int:
    from scratchlm.analysis.report import write_report

    print(
        write_report(
            args.run_dir,
            format=args.format,
            attention_sample=args.sample,
            audit_dir=args.audit,
            student=args.student,
            date=args.date,
        )
    )
    return 0
