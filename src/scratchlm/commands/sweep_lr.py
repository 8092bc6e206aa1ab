"""`scratchlm sweep lr --preset P --values 1e-4,1e-3,1e-2`: one run per learning rate; a run whose loss
turns NaN/Inf or explodes is stopped and marked diverged while the sweep goes on; the best rate and the
edge of stability go into results.md with the curves. Runs already finished are reused."""

from __future__ import annotations

import argparse
import shlex


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="preset to sweep")
    parser.add_argument("--config", help="TOML file whose tables override the preset's")
    parser.add_argument(
        "--values", nargs="+", required=True, metavar="LR", help="learning rates, comma- or space-separated"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one value in every run"
    )
    parser.add_argument(
        "--explode-factor",
        type=float,
        default=1.5,
        metavar="F",
        help="after warmup, stop a run whose training loss exceeds F x its best (default 1.5)",
    )
    parser.add_argument("--out", help="sweep directory (default runs/sweep-lr-<preset>)")


def run(args: argparse.Namespace) -> int:
    from scratchlm.analysis.sweep import lr_sweep
    from scratchlm.errors import ConfigError

    if not (args.preset or args.config):
        raise ConfigError("say what to sweep: --preset NAME and/or --config FILE.toml.")
    try:
        values = [float(v) for item in args.values for v in item.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--values must be numbers like 1e-3,3e-3, got {' '.join(args.values)!r}.") from None
    if len(set(values)) < 2:  # one rate has no best and no edge of stability: that is `scratchlm train`
        raise ConfigError(
            f"a sweep compares at least 2 learning rates, got {' '.join(args.values)!r}; give several to --values "
            "(e.g. 1e-3,3e-3,1e-2) or train the one rate with `scratchlm train --set optim.lr=...`."
        )
    out = args.out or f"runs/sweep-lr-{args.preset or 'custom'}"
    words = [
        "scratchlm",
        "sweep",
        "lr",
        *(["--preset", args.preset] if args.preset else []),
        *(["--config", args.config] if args.config else []),
        "--values",
        ",".join(f"{v:g}" for v in values),
    ]
    for item in args.set:
        words += ["--set", item]
    words += ["--explode-factor", f"{args.explode_factor:g}", "--out", out]
    results = lr_sweep(
        args.preset,
        values,
        out,
        args.set,
        config_file=args.config,
        factor=args.explode_factor,
        command=" ".join(shlex.quote(w) for w in words),
    )
    for r in results["runs"]:
        loss = f"{r['final_val_loss']:.4f}" if r["final_val_loss"] is not None else "-"
        print(
            f"lr {r['lr']:<10.3g} {r['status']:9s} final val loss {loss}"
            + (f"  ({r['reason']})" if r["reason"] else "")
        )
    if results["best_lr"] is not None:
        edge = results["smallest_diverged_lr"]
        print(f"best lr {results['best_lr']:.3g}; " + (f"smallest diverged lr {edge:.3g}" if edge else "none diverged"))
    else:
        print("every rate diverged: extend --values downward")
    print(f"table: {out}/results.md")
    return 0
