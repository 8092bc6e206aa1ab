"""`scratchlm attention RUN --sample K | --prompt TEXT`: every layer and head of one sequence as a grid of
heatmaps with token labels, plus each layer's head-averaged map (RUN/plots/attention_<tag>[_mean].png)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a run directory (runs/NAME)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--sample", type=int, metavar="K", help="validation sequence K (default 0)")
    source.add_argument("--prompt", help="text to run through the model (text runs)")
    parser.add_argument("--checkpoint", metavar="best|last|PATH", help="which checkpoint (default: best, else last)")
    parser.add_argument("--out", metavar="DIR", help="folder for the figures (default RUN/plots)")


def run(args: argparse.Namespace) -> int:
    from scratchlm.analysis.attention_runs import run_attention_figures

    figures = run_attention_figures(
        args.run_dir, sample=args.sample, prompt=args.prompt, checkpoint=args.checkpoint, out_dir=args.out
    )
    print(figures.grid)
    print(figures.means)
    return 0
