"""Scaling analysis: one preset at several model sizes, either at a fixed token budget (every size sees
the same data) or compute-matched (tokens = C / FLOPs per token, so every size spends the same compute),
and the power law L(N) = a·N^(-alpha) + c fitted to final validation loss against non-embedding
parameters N (as `accounting.param_counts` counts them: everything but the lookup tables).

Sizes are `LAYERSxD_MODEL` (e.g. 2x64); heads keep the preset's head dimension, and a preset that fixes
d_ff keeps its d_ff / d_model ratio (otherwise d_ff follows the FFN's default for the width).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratchlm.analysis.accounting import flops_per_token, param_counts
from scratchlm.analysis.document import Document, Figure, Paragraph, Table, write_results
from scratchlm.analysis.plots import plot_training_curves, pyplot, save_figure
from scratchlm.analysis.power_law import PowerLawFit, fit_power_law
from scratchlm.analysis.study_runs import run_or_reuse
from scratchlm.errors import ConfigError
from scratchlm.presets import resolve_run_config

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
        sizes.append(Size(int(match[1]), int(match[2])))
    if len(sizes) < 3:
        raise ConfigError(f"a scaling fit needs at least 3 sizes, got {len(sizes)}.")
    return sizes


def size_overrides(size: Size, preset: str | None, config_file: str | None, overrides: list[str]) -> list[str]:
    """The --set entries that give the preset this size."""
    base = resolve_run_config(preset, config_file, overrides).model
    heads = max(1, size.d_model // base.head_dim)
    if size.d_model % heads:
        raise ConfigError(f"size {size.name}: d_model {size.d_model} is not divisible into heads of {base.head_dim}.")
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
    out_dir, overrides = Path(out_dir), list(overrides)
    entries = []
    for size in sizes:
        extra = size_overrides(size, preset, config_file, overrides)
        model = resolve_run_config(preset, config_file, overrides, over=[extra]).model
        per_token = flops_per_token(model)
        budget = tokens if compute is None else max(1, int(compute / per_token))
        if budget is not None:
            extra.append(f"train.max_tokens={budget}")
        # The size and a --tokens / --compute budget are what the study varies: a layer above --set, whose
        # budget replaces any budget below it.
        config = resolve_run_config(preset, config_file, overrides, over=[extra])
        entries.append((size, config, per_token))
    counts = [param_counts(config.model).non_embedding for _, config, _ in entries]
    if max(counts) < 10 * min(counts):
        log.warning(
            "the sizes span only %.1fx in non-embedding parameters; a fit wants >= 10x", max(counts) / min(counts)
        )
    points = []
    for (size, config, per_token), n in zip(entries, counts, strict=True):
        log.info("scaling: %s (%s non-embedding parameters)", size.name, f"{n:,}")
        outcome = run_or_reuse(config, out_dir / size.name)
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
                "status": outcome.status,
                "final_val_loss": None if outcome.diverged else outcome.final_val_loss,
                "best_val_loss": outcome.best_val_loss,
                "elapsed_s": outcome.summary.get("elapsed_s"),
                "run_dir": str(outcome.run_dir),
            }
        )
    usable = [p for p in points if p["final_val_loss"] is not None and math.isfinite(p["final_val_loss"])]
    fit = fit_power_law([p["non_embedding_params"] for p in usable], [p["final_val_loss"] for p in usable])
    results = {
        "preset": preset,
        "set": overrides,
        "mode": "compute-matched" if compute is not None else "fixed tokens",
        "tokens": tokens,
        "compute": compute,
        "points": points,
        "fit": {"a": fit.a, "alpha": fit.alpha, "c": fit.c, "r2": fit.r2, "rmse": fit.rmse},
        "param_range": max(counts) / min(counts),
        "command": command,
    }
    results["figures"] = _plots(results, fit, out_dir)
    write_results(
        out_dir,
        "results",
        results,
        Document(f"Scaling: {preset} ({results['mode']})", scaling_blocks(results, out_dir)),
    )
    return results


def _plots(results: dict[str, Any], fit: PowerLawFit, out_dir: Path) -> dict[str, str]:
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
    lo, hi = min(ns) / 1.5, max(ns) * 1.5
    grid = [lo * (hi / lo) ** (i / 100) for i in range(101)]
    ax.plot(
        grid,
        [fit.predict(n) for n in grid],
        "-",
        color="C1",
        label=f"{formula(fit.a, fit.alpha, fit.c, 3)} (R² {fit.r2:.3f})",
    )
    ax.axhline(fit.c, color="gray", ls="--", lw=1, label=f"fitted irreducible loss c = {fit.c:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"{results['preset']}: {results['mode']}", fontsize=9)
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
    """What the fit says, from its sign and the best point."""
    points = [p for p in results["points"] if p["final_val_loss"] is not None]
    best = min(points, key=lambda p: p["final_val_loss"])
    per_param = best["tokens"] / best["non_embedding_params"]
    where = (
        f"The lowest loss is {best['size']}'s, {best['final_val_loss']:.4f}, at {per_param:.0f} tokens per parameter."
    )
    if results["fit"]["alpha"] > 0:
        return f"Loss falls with size toward c = {results['fit']['c']:.4f}. {where}"
    return (
        f"Loss rises with size: at this budget the smaller models, which see more tokens, are better, so the "
        f"compute-optimal size is at or below the smallest tried. {where}"
    )


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
            f"{p['final_val_loss']:.4f}" if p["final_val_loss"] is not None else p["status"],
            f"{p['elapsed_s'] or 0:.0f} s",
        ]
        for p in results["points"]
    ]
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
        Paragraph(
            f"Fit: {formula(fit['a'], fit['alpha'], fit['c'])}, R² = {fit['r2']:.4f}, "
            f"RMSE {fit['rmse']:.4f} nats/token, over a {results['param_range']:.1f}x range of non-embedding "
            f"parameters ({results['mode']}). {_reading(results)}"
        ),
        Figure(out_dir / results["figures"]["scaling"], "validation loss against parameters with the fitted power law"),
        Figure(out_dir / results["figures"]["curves"], "loss curves by model size"),
        *([Paragraph(f"Reproduce: `{results['command']}`")] if results.get("command") else []),
    ]
