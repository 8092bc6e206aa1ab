"""`scratchlm plot RUN [RUN ...]`: loss and perplexity (train and validation), learning rate and gradient
norm against steps, tokens or time; several runs are overlaid. PNG and SVG into each run's plots/.
Perplexity is exp of the logged loss on a logarithmic axis, so a diverged run is drawn where it went; as in
the sweep and ablation figures, a diverged run (stopped by NaN/Inf or by a monitor, judged diverged by its
experiment, or with a non-finite logged loss) ends in a cross at its last finite point, and its legend name
says "diverged"."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN", help="run directories (runs/NAME)")
    parser.add_argument("--x", choices=["step", "tokens", "time"], default="step", help="x axis (default step)")
    parser.add_argument(
        "--log", action="store_true", help="logarithmic y axis for loss and grad norm (perplexity always has one)"
    )


def run(args: argparse.Namespace) -> int:
    from scratchlm.analysis.plots import plot_runs

    for path in plot_runs(args.run_dirs, x=args.x, log_scale=args.log):
        print(path)
    return 0
