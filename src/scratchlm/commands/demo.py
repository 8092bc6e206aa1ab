"""`scratchlm demo`: generate the Scratch-1 data, train scratch1-quick, write plots and a report."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    parser.add_argument("--data", default="data/trajectories.pkl", help="dataset path (default data/trajectories.pkl)")
    parser.add_argument("--preset", default="scratch1-quick", help="preset to train (default scratch1-quick)")


def run(args: argparse.Namespace) -> int:
    from scratchlm.demo import run_demo

    summary = run_demo(args.out, args.data, args.preset)
    floor = summary.get("data", {}).get("loss_floor")
    print()
    print(f"Demo finished in {summary['demo_seconds']:.0f} s.")
    print(
        f"  final validation loss  {_loss(summary.get('final_val_loss'))}"
        + (f"  (noise floor ln 5 = {floor:.3f})" if floor else "")
    )
    if "final_val_action_within2" in summary:
        print(
            f"  next-action accuracy   {summary['final_val_action_acc']:.1%} exact, "
            f"{summary['final_val_action_within2']:.1%} within ±2 bins"
        )
    print(f"  run directory          {summary['run_dir']}/ (config.toml, metrics.jsonl, checkpoints/)")
    print(f"  report                 {summary['report']}")
    print(f"  plots                  {summary['run_dir']}/plots/")
    return 0


def _loss(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "none (no finite evaluation)"
