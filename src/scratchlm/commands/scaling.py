"""`scratchlm scaling --preset P --sizes 1x32,2x64,4x128 [--tokens N | --compute FLOPS]`: one run per
model size at a fixed token budget (default: the preset's) or compute-matched, the power law
L(N) = a·N^(-alpha) + c fitted to the final validation losses, a table and the plot."""

from __future__ import annotations

import argparse
import math
import shlex


def token_count(text: str) -> int:
    """A --tokens value: a whole number, also in the e-notation --compute takes (1e6, 2.5e6)."""
    try:
        value = float(text)
        whole = math.isfinite(value) and value == int(value)
    except ValueError:
        whole = False
    if not whole:
        raise argparse.ArgumentTypeError(f"want a whole number of tokens such as 1000000 or 1e6, not {text!r}")
    # int(text) keeps every digit of a long integer, which a float would round.
    return int(text) if text.strip().lstrip("+-").isdigit() else int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="preset whose recipe every size uses")
    parser.add_argument("--config", help="TOML file whose tables override the preset's")
    parser.add_argument("--sizes", nargs="+", required=True, metavar="LxD", help="sizes as LAYERSxD_MODEL, e.g. 2x64")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--tokens",
        type=token_count,
        metavar="N",
        help="the same training tokens for every size (e.g. 1e6; rounded up to whole optimizer steps)",
    )
    budget.add_argument(
        "--compute",
        type=float,
        metavar="FLOPS",
        help="compute-matched: tokens = FLOPS / FLOPs per token, rounded down to whole optimizer steps",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one value in every run; model.num_layers and d_model come from --sizes, while "
        "model.num_heads and d_ff give the head dimension and d_ff / d_model ratio every size keeps",
    )
    parser.add_argument("--out", help="study directory (default runs/scaling-<preset>-<tokens|compute>)")


def run(args: argparse.Namespace) -> int:
    from scratchlm.analysis.scaling import flops_text, formula, parse_sizes, scaling_study
    from scratchlm.errors import ConfigError

    if not (args.preset or args.config):
        raise ConfigError("say what to scale: --preset NAME and/or --config FILE.toml.")
    sizes = parse_sizes(args.sizes)
    mode = "compute" if args.compute is not None else "tokens"
    out = args.out or f"runs/scaling-{args.preset or 'custom'}-{mode}"
    words = [
        "scratchlm",
        "scaling",
        *(["--preset", args.preset] if args.preset else []),
        *(["--config", args.config] if args.config else []),
        "--sizes",
        ",".join(s.name for s in sizes),
    ]
    words += ["--tokens", str(args.tokens)] if args.tokens is not None else []
    words += ["--compute", flops_text(args.compute)] if args.compute is not None else []
    for item in args.set:
        words += ["--set", item]
    results = scaling_study(
        args.preset,
        sizes,
        out,
        args.set,
        config_file=args.config,
        tokens=args.tokens,
        compute=args.compute,
        command=" ".join(shlex.quote(w) for w in [*words, "--out", out]),
    )
    for p in results["points"]:
        loss = f"{p['final_val_loss']:.4f}" if p["final_val_loss"] is not None else p["status"]
        print(
            f"{p['size']:>8s}  N={p['non_embedding_params']:>10,}  tokens={p['tokens'] or 0:>10,}  "
            f"FLOPs={p['train_flops']:.3g}  val {loss}"
        )
    fit = results["fit"]
    if fit is None:
        print("no power-law fit: fewer than 3 sizes trained without diverging")
    else:
        bound = "  (c at its bound: not determined by these points)" if results.get("fit_c_at_bound") else ""
        print(f"{formula(fit['a'], fit['alpha'], fit['c'])}  (R² {fit['r2']:.4f}){bound}")
    print(f"table: {out}/results.md")
    return 0
