"""Scaling analysis: one preset at several model sizes, either at a fixed token budget (every size sees
the same data) or compute-matched (tokens = C / FLOPs per token, so every size spends the same compute),
and the power law L(N) = a·N^(-alpha) + c fitted to final validation loss against non-embedding
parameters N (as `accounting.param_counts` counts them: everything but the lookup tables).

Sizes are `LAYERSxD_MODEL` (e.g. 2x64); heads keep the preset's head dimension (a width narrower than one
head gets a single head), and a preset that fixes d_ff keeps its d_ff / d_model ratio (otherwise d_ff
follows the FFN's default for the width). FLOPs are counted as the trainer counts them (6N + 12·L·H·Q·T at
the sequence length the data gives, which for trajectories is one less than their length, not the context).
A compute budget is rounded down to whole optimizer steps (batch_size x grad_accum sequences), so no size
spends more than it; the table's training FLOPs are what each size spent.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratchlm.analysis.accounting import flops_per_token, param_counts
from scratchlm.analysis.document import Document, Figure, Paragraph, Table, format_seconds, write_results
from scratchlm.analysis.plots import plot_training_curves, pyplot, save_figure
from scratchlm.analysis.power_law import PowerLawFit, fit_power_law
from scratchlm.analysis.study_runs import check_reusable, claim_out_dir, recipe_phrase, run_or_reuse
from scratchlm.analysis.sweep import DivergenceMonitor, judge_end, start_loss
from scratchlm.config import RunConfig
from scratchlm.errors import ConfigError
from scratchlm.presets import parse_override, resolve_run_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Size:
    num_layers: int
    d_model: int

    @property
    def name(self) -> str:
        return f"{self.num_layers}x{self.d_model}"


def parse_sizes(items: list[str]) -> list[Size]:
    """["2x64,4x128", "8x256"] -> Sizes (LAYERSxD_MODEL, comma- or space-separated)."""
    sizes = []
    for item in (part for entry in items for part in entry.split(",") if part.strip()):
        match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", item)
        if not match:
            raise ConfigError(f"--sizes takes LAYERSxD_MODEL entries like 2x64,4x128, got {item!r}.")
        size = Size(int(match[1]), int(match[2]))
        # Named here: the model config's own check would name model.num_layers, a key the user did not give.
        if size.num_layers < 1 or size.d_model < 1:
            raise ConfigError(f"--sizes {size.name}: layers and d_model must both be at least 1, as in 1x32.")
        if size in sizes:  # the same run twice would count as two points of the fit
            raise ConfigError(f"--sizes lists {size.name} more than once; give each size once.")
        sizes.append(size)
    if len(sizes) < 3:
        raise ConfigError(f"a scaling fit needs at least 3 sizes, got {len(sizes)}.")
    return sizes


# The keys every size sets to its own value: a --set of one would reach no run, while the results would still
# list it as part of the recipe. (model.num_heads and model.d_ff are set per size too, but from the head
# dimension and d_ff / d_model ratio a --set of them gives the base model, so those still do something.)
SIZE_KEYS = ("model.num_layers", "model.d_model")


def check_overrides(overrides: list[str] | tuple[str, ...]) -> None:
    """Refuse a --set that every size replaces with its own value."""
    for item in overrides:
        path, _ = parse_override(item)
        key = ".".join(path)
        if key in SIZE_KEYS:
            raise ConfigError(
                f"--set {item} would be replaced in every run: every size sets {key} itself; drop the --set and "
                "give the layers and widths with --sizes LAYERSxD_MODEL."
            )


def size_overrides(size: Size, preset: str | None, config_file: str | None, overrides: list[str]) -> list[str]:
    """The --set entries that give the preset this size."""
    base = resolve_run_config(preset, config_file, overrides).model
    heads = max(1, size.d_model // base.head_dim)
    # A width that is not a whole number of heads would get heads of another dimension (2x20 with heads of
    # 8: two heads of 10), a second change between sizes that the table would not show.
    if size.d_model >= base.head_dim and size.d_model % base.head_dim:
        below = size.d_model // base.head_dim * base.head_dim
        raise ConfigError(
            f"size {size.name}: d_model {size.d_model} is not a multiple of the head dimension {base.head_dim}; "
            f"use {below} or {below + base.head_dim}."
        )
    extra = [f"model.num_layers={size.num_layers}", f"model.d_model={size.d_model}", f"model.num_heads={heads}"]
    explicit_ff = _preset_sets_d_ff(preset, config_file, overrides)
    if explicit_ff:
        assert base.d_ff is not None
        extra.append(f"model.d_ff={max(1, round(base.d_ff / base.d_model * size.d_model))}")
    return extra


def _preset_sets_d_ff(preset: str | None, config_file: str | None, overrides: list[str]) -> bool:
    from scratchlm.presets import resolve_tables

    return "d_ff" in resolve_tables(preset, config_file, overrides).get("model", {})


def scaling_study(
    preset: str | None,
    sizes: list[Size],
    out_dir: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    config_file: str | None = None,
    tokens: int | None = None,
    compute: float | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Train (or reuse) every size; fit the power law; write results.json, results.md, scaling.{png,svg} and
    curves.{png,svg}. tokens: fixed budget per size (default: the preset's own); compute: FLOPs per size."""
    if tokens is not None and compute is not None:
        raise ConfigError("give either --tokens (a fixed token budget) or --compute (compute-matched), not both.")
    if tokens is not None and tokens <= 0:
        raise ConfigError(f"--tokens must be positive, got {tokens}.")
    if compute is not None and not (math.isfinite(compute) and compute > 0):
        raise ConfigError(f"--compute must be a positive, finite number of FLOPs (e.g. 1e12), got {compute}.")
    out_dir, overrides = Path(out_dir), list(overrides)
    if len(set(sizes)) < len(sizes):
        raise ConfigError("the sizes repeat; give each LAYERSxD_MODEL once.")
    check_overrides(overrides)
    base = resolve_run_config(preset, config_file, overrides)
    seq_len, per_step = _data_shape(base)
    shapes = []
    for size in sizes:
        extra = size_overrides(size, preset, config_file, overrides)
        try:
            model = resolve_run_config(preset, config_file, overrides, over=[extra]).model
        except ConfigError as exc:  # its own fix names model keys; the size is what the user gave
            raise ConfigError(
                f"--sizes {size.name} gives a model the config refuses ({str(exc).rstrip('.')}); pick another "
                "width in --sizes."
            ) from None
        shapes.append((size, extra, flops_per_token(model, seq_len)))
    if compute is not None:
        _check_every_size_steps(shapes, compute, per_step)
    entries = []
    for size, extra, per_token in shapes:
        budget = tokens if compute is None else _compute_tokens(compute, per_token, per_step)
        if budget is not None:
            extra.append(f"train.max_tokens={budget}")
        # The size and a --tokens / --compute budget are what the study varies: a layer above --set, whose
        # budget replaces any budget below it.
        config = resolve_run_config(preset, config_file, overrides, over=[extra])
        entries.append((size, config, per_token))
    claim_out_dir(out_dir, "scaling", [size.name for size, _, _ in entries])
    for size, config, _ in entries:  # a directory holding another config fails now, not after hours
        check_reusable(config, out_dir / size.name)
    counts = [param_counts(config.model).non_embedding for _, config, _ in entries]
    if max(counts) < 10 * min(counts):
        log.warning(
            "the sizes span only %.1fx in non-embedding parameters; a fit wants >= 10x", max(counts) / min(counts)
        )
    points = []
    for (size, config, per_token), n in zip(entries, counts, strict=True):
        log.info("scaling: %s (%s non-embedding parameters)", size.name, f"{n:,}")
        # The sweep's divergence rules: a size whose loss blows up is stopped and left out of the fit, where
        # its loss (worse than uniform guessing) would otherwise pass for a point on the curve.
        start = start_loss(config)
        monitor = DivergenceMonitor(config.optim.warmup_steps, start_loss=start)
        outcome = judge_end(run_or_reuse(config, out_dir / size.name, monitor=monitor), start)
        points.append(
            {
                "size": size.name,
                "num_layers": size.num_layers,
                "d_model": size.d_model,
                "num_heads": config.model.num_heads,
                "d_ff": config.model.d_ff,
                "non_embedding_params": n,
                "tokens": outcome.summary.get("tokens"),
                "train_flops": per_token * (outcome.summary.get("tokens") or 0),
                "flops_per_token": per_token,
                "budget_tokens": config.train.max_tokens,  # what the study planned; a diverged run stops short
                "status": outcome.status,
                "reason": outcome.reason,
                "final_val_loss": None if outcome.diverged else outcome.final_val_loss,
                "best_val_loss": outcome.best_val_loss,
                "elapsed_s": outcome.summary.get("elapsed_s"),
                "run_dir": str(outcome.run_dir),
            }
        )
    usable = [p for p in points if p["final_val_loss"] is not None and math.isfinite(p["final_val_loss"])]
    # Sizes that diverged leave fewer points; the table of those that trained is still written, without a fit.
    fit = (
        fit_power_law([p["non_embedding_params"] for p in usable], [p["final_val_loss"] for p in usable])
        if len(usable) >= 3
        else None
    )
    fitted = [p["non_embedding_params"] for p in usable]  # the range the fit spans: diverged sizes are not in it
    results = {
        "experiment": "scaling",
        "preset": preset,
        "config_file": config_file,
        "set": overrides,
        "seed": base.train.seed,  # one run per size, all with this seed
        "seq_len": seq_len,
        "tokens_per_step": per_step,
        "mode": "compute-matched" if compute is not None else "fixed tokens",
        "tokens": tokens,
        "compute": compute,
        "points": points,
        "fit": None if fit is None else {"a": fit.a, "alpha": fit.alpha, "c": fit.c, "r2": fit.r2, "rmse": fit.rmse},
        "fit_c_at_bound": None if fit is None else _offset_bound(fit, [p["final_val_loss"] for p in usable]),
        "param_range": max(fitted) / min(fitted) if fitted else None,
        "command": command,
    }
    results["figures"] = _plots(results, fit, out_dir)
    if fit is None:
        log.warning("only %d of %d sizes trained without diverging: no power-law fit", len(usable), len(points))
    write_results(
        out_dir,
        "results",
        results,
        Document(f"Scaling: {recipe_name(results)} ({results['mode']})", scaling_blocks(results, out_dir)),
    )
    return results


def recipe_name(results: dict[str, Any]) -> str:
    """A short name for the study's recipe in titles: its preset, else its --config file's name."""
    if results.get("preset"):
        return str(results["preset"])
    return Path(results["config_file"]).name if results.get("config_file") else "defaults"


def _data_shape(config: RunConfig) -> tuple[int, int]:
    """(positions per training sequence, tokens per optimizer step), as the trainer counts them: the data
    decides the length (trajectories of 50 steps train on 49, whatever the context length), and a step is
    batch_size x grad_accum such sequences on every process."""
    import os

    import torch

    from scratchlm.train.datasets import build_training_data
    from scratchlm.train.distributed import DistInfo

    data = build_training_data(config, torch.device("cpu"), DistInfo())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # as init_distributed reads it under torchrun
    return data.seq_len, data.train.tokens_per_batch * config.train.grad_accum * world_size


def _compute_tokens(compute: float, per_token: float, per_step: int) -> int:
    """The tokens of the most whole optimizer steps `compute` FLOPs pay for. The trainer rounds a token budget
    up to whole steps, so a budget between steps would overspend it by up to one step's FLOPs."""
    steps = math.floor(compute / (per_token * per_step))
    while steps > 0 and steps * per_step * per_token > compute:  # a quotient rounded up onto a whole number
        steps -= 1
    return steps * per_step


def _check_every_size_steps(shapes: list[tuple[Size, list[str], float]], compute: float, per_step: int) -> None:
    """Refuse a compute budget that buys some size no step at all (it would otherwise train one and overspend)."""
    short = [(size, per_token) for size, _, per_token in shapes if not _compute_tokens(compute, per_token, per_step)]
    if short:
        size, per_token = max(short, key=lambda e: e[1])
        raise ConfigError(
            f"--compute {flops_text(compute)} buys size {size.name} less than one optimizer step of {per_step:,} "
            f"tokens; give --compute {_round_up(per_token * per_step):.3g} or more, or lower train.batch_size."
        )


def _round_up(value: float, digits: int = 3) -> float:
    """`value` rounded up to `digits` significant digits, so the printed minimum is never below the real one."""
    scale = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return math.ceil(value / scale) * scale


def _offset_bound(fit: PowerLawFit, losses: list[float]) -> str | None:
    """'zero' or 'min_loss' when the fitted offset c sits at an end of its search range [0, min L): the data
    then do not determine an irreducible loss, and c is no estimate of one."""
    if fit.c <= 1e-6 * min(losses):
        return "zero"
    if fit.c >= min(losses) * (1.0 - 1e-4):
        return "min_loss"
    return None


def _plots(results: dict[str, Any], fit: PowerLawFit | None, out_dir: Path) -> dict[str, str]:
    plt = pyplot()
    points = [p for p in results["points"] if p["final_val_loss"] is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ns = [p["non_embedding_params"] for p in points]
    ax.plot(ns, [p["final_val_loss"] for p in points], "o", color="C0", ms=7, label="final validation loss")
    for p in points:
        ax.annotate(
            p["size"],
            (p["non_embedding_params"], p["final_val_loss"]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    if fit is not None:
        lo, hi = min(ns) / 1.5, max(ns) * 1.5
        grid = [lo * (hi / lo) ** (i / 100) for i in range(101)]
        ax.plot(
            grid,
            [fit.predict(n) for n in grid],
            "-",
            color="C1",
            label=f"{formula(fit.a, fit.alpha, fit.c, 3)} (R² {fit.r2:.3f})",
        )
        bound = " (at its bound: not determined)" if results.get("fit_c_at_bound") else ""
        ax.axhline(fit.c, color="gray", ls="--", lw=1, label=f"fitted irreducible loss c = {fit.c:.3f}{bound}")
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"{recipe_name(results)}: {results['mode']}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out_dir / "scaling.png")
    runs = [Path(p["run_dir"]) for p in results["points"]]
    curves = plot_training_curves(
        runs,
        out_dir / "curves",
        x="tokens",
        labels=[p["size"] for p in results["points"]],
        panels=("loss",),
        title="loss against tokens, by model size",
    )
    return {"scaling": "scaling.png", "curves": curves[0].name}


def formula(a: float, alpha: float, c: float, digits: int = 4) -> str:
    """L(N) = a·N^(-alpha) + c, written with the exponent's sign (a negative alpha means loss rises with N)."""
    return f"L(N) = {a:.{digits}g}·N^({-alpha:+.{digits}f}) + {c:.{digits}f}"


def _reading(results: dict[str, Any]) -> str:
    """What the fit says, from its sign, whether its offset is determined, and the best point."""
    points = [p for p in results["points"] if p["final_val_loss"] is not None]
    if not points:
        return "Every size diverged: lower optim.lr with --set and write the study to a new --out."
    best = min(points, key=lambda p: p["final_val_loss"])
    per_param = (best["tokens"] or 0) / best["non_embedding_params"]
    where = (
        f"The lowest loss is {best['size']}'s, {best['final_val_loss']:.4f}, at {per_param:.3g} tokens per "
        "non-embedding parameter."
    )
    fit = results["fit"]
    if fit is None:
        return f"No fit: only {len(points)} of {len(results['points'])} sizes trained (a fit needs 3). {where}"
    bound = results.get("fit_c_at_bound")
    if bound == "zero":
        offset = (
            "the fitted offset c sits at its lower bound 0, so these points do not determine an irreducible loss "
            "(a pure power law fits them as well); read c as unknown, not as zero"
        )
    elif bound == "min_loss":
        offset = (
            "the fitted offset c sits at the lowest measured loss, its upper bound, so these points do not "
            "determine an irreducible loss; read c as unknown"
        )
    else:
        offset = ""
    if fit["alpha"] > 0:
        text = f"Loss falls with size ({offset})." if offset else f"Loss falls with size toward c = {fit['c']:.4f}."
        return f"{text} {where}"
    if results["mode"] == "compute-matched":
        return (
            f"Loss rises with size: at this budget the smaller models, which see more tokens, are better, so the "
            f"compute-optimal size is at or below the smallest tried. {where}"
        )
    # At a fixed budget every size sees the same tokens: a bigger model doing worse is undertrained or unstable.
    return (
        "Loss rises with size although every size saw the same tokens: the larger models are undertrained at "
        f"this budget or unstable at this learning rate; train longer or lower optim.lr. {where}"
    )


def _settings(results: dict[str, Any]) -> str:
    """The recipe every size ran (preset, config file, --set), its seed and the sequence length FLOPs assume."""
    text = f"Every size ran {recipe_phrase(results)} and {_budget_phrase(results)}"
    if "seed" in results:
        text += (
            f", once, with seed {results['seed']} (`train.seed`): differences between neighbouring sizes smaller "
            "than the spread over seeds are not significant"
        )
    if results.get("seq_len"):
        text += f". Training FLOPs are 6N + 12·L·H·Q·T per token at T = {results['seq_len']}, the trained length"
    return text + "."


def flops_text(value: float) -> str:
    """A FLOP budget written short (2e+08) where that is exact, else with every digit, so a command or table
    that quotes it asks for the same budget (`:g` alone writes 60000001 as 6e+07)."""
    short = f"{value:g}"
    if float(short) == value:
        return short
    return str(int(value)) if value.is_integer() else repr(value)


def _budget_phrase(results: dict[str, Any]) -> str:
    """The budget every size ran, with what whole optimizer steps made of it (results from before
    tokens_per_step was recorded get the budget alone)."""
    per_step = results.get("tokens_per_step")
    if results["mode"] == "compute-matched":
        text = f"`--compute {flops_text(results.get('compute') or 0.0)}` FLOPs each"
        spent = [
            p["budget_tokens"] * p["flops_per_token"] / results["compute"]
            for p in results["points"]
            if p.get("budget_tokens") and p.get("flops_per_token") and results.get("compute")
        ]
        if per_step and spent:
            text += (
                f", rounded down to whole optimizer steps of {per_step:,} tokens, so the sizes spend "
                f"{100 * min(spent):.1f}% to {100 * max(spent):.1f}% of it (the table's training FLOPs)"
            )
        return text
    if not results.get("tokens"):
        return "the recipe's own budget"
    text = f"`--tokens {results['tokens']}`"
    if per_step and results["tokens"] % per_step:
        trained = math.ceil(results["tokens"] / per_step) * per_step
        text += f" ({trained:,} trained: whole optimizer steps of {per_step:,} tokens)"
    return text


def scaling_blocks(results: dict[str, Any], out_dir: Path) -> list:
    fit = results["fit"]
    rows = [
        [
            p["size"],
            str(p["num_heads"]),
            str(p["d_ff"]),
            f"{p['non_embedding_params']:,}",
            f"{p['tokens'] or 0:,}",
            f"{p['train_flops']:.3g}",
            f"{p['final_val_loss']:.4f}"
            if p["final_val_loss"] is not None
            else p["status"] + (f": {p['reason']}" if p.get("reason") else ""),
            format_seconds(p["elapsed_s"]),
        ]
        for p in results["points"]
    ]
    if fit is None:
        summary = f"{_reading(results)}"
    else:
        summary = (
            f"Fit: {formula(fit['a'], fit['alpha'], fit['c'])}, R² = {fit['r2']:.4f}, "
            f"RMSE {fit['rmse']:.4f} nats/token, over a {results['param_range']:.1f}x range of non-embedding "
            f"parameters ({results['mode']}). {_reading(results)}"
        )
    return [
        Table(
            [
                "layers x d_model",
                "heads",
                "d_ff",
                "non-embedding params",
                "tokens",
                "training FLOPs",
                "final val loss",
                "time",
            ],
            rows,
        ),
        Paragraph(summary),
        Paragraph(_settings(results)),
        Figure(out_dir / results["figures"]["scaling"], "validation loss against parameters with the fitted power law"),
        Figure(out_dir / results["figures"]["curves"], "loss curves by model size"),
        *([Paragraph(f"Reproduce: `{results['command']}`")] if results.get("command") else []),
    ]
