"""`scratchlm runs [DIR]`: the experiment log, a table of every run under DIR (default runs/): name,
config as the nearest preset plus what differs, status (finished, diverged and why, incomplete, interrupted,
running, killed, damaged), steps reached out of the run's total, best validation loss and training time."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", nargs="?", default="runs", metavar="DIR", help="folder holding runs (default runs)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a Markdown table")
    parser.add_argument("--out", metavar="FILE", help="also write the table to this Markdown file")


def run(args: argparse.Namespace) -> int:
    from scratchlm.analysis.document import Document, to_markdown
    from scratchlm.analysis.runs_table import as_json, as_table, runs_table
    from scratchlm.fileio import atomic_write
    from scratchlm.train.tracking import dumps_strict

    rows = runs_table(args.root)
    page = Document(f"Experiment log: runs under {args.root}", [as_table(rows)])
    text = to_markdown(page, Path.cwd())  # a table only: no figure paths to resolve
    if args.out:
        _check_log_target(Path(args.out))
    if args.json:
        print(dumps_strict(as_json(rows)))
    else:
        print(text, end="")
    if args.out:
        with atomic_write(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    return 0


def _check_log_target(path: Path) -> None:
    """--out may replace an earlier experiment log, never another file (a run's config.toml, a report)."""
    from scratchlm.errors import ConfigError

    if path.is_dir():
        raise ConfigError(f"--out {path} is a directory; give the path of a Markdown file, e.g. {path}/runs.md.")
    if path.exists():
        with open(path, encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
        if not first.startswith("# Experiment log"):
            raise ConfigError(
                f"--out {path} already holds a file that is no experiment log; give a new path, or delete it first."
            )
