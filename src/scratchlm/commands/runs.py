"""`scratchlm runs [DIR]`: the experiment log, a table of every run under DIR (default runs/): name,
config as the nearest preset plus what differs, status (finished, diverged and why, incomplete, interrupted,
running, killed, damaged), steps reached out of the run's total, best validation loss and training time."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", nargs="?", default="runs", metavar="DIR", help="folder holding runs (default runs)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a Markdown table")
    parser.add_argument("--out", metavar="FILE", help="also write the table to this Markdown file")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from scratchlm.analysis.document import Document, to_markdown
    from scratchlm.analysis.runs_table import as_json, as_table, runs_table
    from scratchlm.fileio import atomic_write

    rows = runs_table(args.root)
    page = Document(f"Experiment log: runs under {args.root}", [as_table(rows)])
    text = to_markdown(page, Path.cwd())  # a table only: no figure paths to resolve
    if args.json:
        print(json.dumps(as_json(rows)))
    else:
        print(text, end="")
    if args.out:
        with atomic_write(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    return 0
