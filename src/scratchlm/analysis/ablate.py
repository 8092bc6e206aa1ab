"""Ablation studies: variants of a preset (any config keys) times seeds, one run each, then a table of
final and best validation loss (mean ± standard deviation over seeds, and the range), throughput and
parameter counts, and the validation curves of every run overlaid (one color per variant).

A study is resumable: runs that finished are read back (`study_runs.run_or_reuse`), so an interrupted
study continues where it stopped and adding a seed trains only the new runs. A run that diverges by the
learning-rate sweep's rules (`sweep.DivergenceMonitor`, `sweep.judge_end`: NaN/Inf, or a loss that blows up
past where it started) is stopped, reported as such and left out of the means.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scratchlm.analysis.accounting import param_counts
from scratchlm.analysis.document import Document, Figure, Paragraph, Table, write_results
from scratchlm.analysis.plots import plot_training_curves, pyplot, save_figure
from scratchlm.analysis.study_runs import RunOutcome, check_reusable, claim_out_dir, run_or_reuse
from scratchlm.analysis.sweep import DivergenceMonitor, judge_end, start_loss
from scratchlm.config import RunConfig
from scratchlm.errors import ConfigError
from scratchlm.presets import parse_override, resolve_run_config, toml_value
from scratchlm.train.tracking import read_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    name: str
    values: dict[str, Any]  # "section.key" -> value

    def overrides(self) -> list[str]:
        return [f"{key}={toml_value(value)}" for key, value in self.values.items()]


@dataclass
class Study:
    """Variants x seeds of one recipe. Each run's config is layered (`presets.resolve_tables`): the preset, the
    study file's `set`, the config file, the user's `--set`, then the variant's values and the seed, so a user's
    budget replaces the study's and a variant always gets the value it is about."""

    name: str
    preset: str | None
    variants: list[Variant]
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)  # the user's --set, applied to every run
    config_file: str | None = None
    description: str = ""
    study_set: list[str] = field(default_factory=list)  # the study file's `set`, below --config and --set

    def run_config(self, variant: Variant, seed: int) -> RunConfig:
        """The config of one run of the study."""
        return resolve_run_config(
            self.preset,
            self.config_file,
            self.overrides,
            under=[self.study_set],
            over=[[*variant.overrides(), f"train.seed={seed}"]],
        )


def grid_variants(grid: dict[str, list[Any]]) -> list[Variant]:
    """Every combination of the grid's values, named `key=value,...` by the last part of each key."""
    keys = list(grid)
    variants = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo, strict=True))
        name = ",".join(f"{k.split('.')[-1]}={v}" for k, v in values.items())
        variants.append(Variant(name, values))
    return variants


def parse_grid(assignments: list[str]) -> dict[str, list[Any]]:
    """`--grid model.positional=rope,sinusoidal` (repeatable) -> {"model.positional": ["rope", "sinusoidal"]}."""
    grid: dict[str, list[Any]] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        # Checked here, not left to parse_override, whose message would name --set, a flag the user did not give.
        if not sep or not raw.strip() or len(key.split(".")) < 2 or not all(p.strip() for p in key.split(".")):
            raise ConfigError(
                f"--grid expects section.key=v1,v2,... (e.g. model.norm=rmsnorm,layernorm), got {assignment!r}."
            )
        values = [parse_override(f"{key}={item}")[1] for item in _split_values(raw)]
        path, _ = parse_override(f"{key}=0")
        name = ".".join(path)
        # A second --grid for a key would silently replace the first one's values.
        if name in grid:
            raise ConfigError(f"--grid {name} is given twice; list all its values in one --grid {name}=v1,v2.")
        grid[name] = values
    check_grid(grid)
    return grid


def check_grid(grid: dict[str, list[Any]]) -> None:
    """Refuse grids whose variants would not be what they say: a repeated value trains the same variant twice
    (in one run directory, counted twice in the table), and a seed in the grid is overwritten by each run's seed."""
    for key, values in grid.items():
        if key == "train.seed":
            raise ConfigError("--grid train.seed is overwritten by each run's seed; give the seeds with --seeds N.")
        repeated = sorted({toml_value(v) for v in values if sum(toml_value(w) == toml_value(v) for w in values) > 1})
        if repeated:
            raise ConfigError(f"--grid {key} lists {', '.join(repeated)} more than once; give each value once.")


def check_overrides(study: Study) -> None:
    """Refuse a --set that no run would get: the seed is each run's own, and a key that every variant sets is
    replaced in every run, while the results would still list the --set as part of the recipe."""
    for item in study.overrides:
        path, _ = parse_override(item)
        key = ".".join(path)
        if key == "train.seed":
            raise ConfigError(
                f"--set {item} would be replaced by each run's seed; give the seeds with --seeds N instead."
            )
        if study.variants and all(key in v.values for v in study.variants):
            raise ConfigError(
                f"--set {item} would be replaced in every run: every variant sets {key} itself; drop the --set "
                "(to try that value, add it to the variants)."
            )


def _split_values(raw: str) -> list[str]:
    # Commas inside [...] belong to a list value (e.g. optim.betas=[0.9,0.95],[0.9,0.99]).
    items, depth, current = [], 0, ""
    for ch in raw:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += ch
    items.append(current.strip())
    return [item for item in items if item]


def study_from_tables(name: str, tables: dict[str, Any]) -> Study:
    """A Study from a study file's tables (see `scratchlm.studies`)."""
    unknown = sorted(set(tables) - {"description", "preset", "seeds", "set", "grid", "variants"})
    if unknown:
        raise ConfigError(
            f"study {name!r} has unknown key(s) {unknown}; valid: description, preset, seeds, set, grid, variants."
        )
    if ("grid" in tables) == ("variants" in tables):
        raise ConfigError(f"study {name!r} must have exactly one of [grid] or [[variants]].")
    if "grid" in tables:
        grid = {k: v if isinstance(v, list) else [v] for k, v in tables["grid"].items()}
        check_grid(grid)
        variants = grid_variants(grid)
    else:
        variants = []
        for i, entry in enumerate(tables["variants"]):
            values = {k: v for k, v in entry.items() if k != "name"}
            variants.append(Variant(str(entry.get("name", f"variant{i}")), values))
    return Study(
        name=name,
        preset=tables.get("preset"),
        variants=variants,
        seeds=seed_list(tables.get("seeds", 1)),
        study_set=list(tables.get("set", [])),
        description=" ".join(str(tables.get("description", "")).split()),
    )


def seed_list(seeds: int | list[int]) -> list[int]:
    """`3` -> seeds [0, 1, 2]; a list is kept as given."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {seeds}.")
        return list(range(seeds))
    if isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        if len(set(seeds)) < len(seeds):  # a repeated seed is the same run twice, counted twice in the means
            raise ConfigError(f"seeds must not repeat, got {seeds}.")
        return list(seeds)
    raise ConfigError(f"seeds must be a count or a list of integers, got {seeds!r}.")


def run_name(variant: Variant, seed: int) -> str:
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", f"{variant.name}_seed{seed}")


def run_study(study: Study, out_dir: str | Path, *, command: str = "") -> dict[str, Any]:
    """Train (or reuse) every variant x seed under out_dir; write results.json, results.md and curves.{png,svg}."""
    out_dir = Path(out_dir)
    check_overrides(study)
    configs = {}
    for variant in study.variants:  # resolve every config first: a typo fails before hours of training
        for seed in study.seeds:
            configs[(variant.name, seed)] = study.run_config(variant, seed)
    names = {(variant.name, seed): run_name(variant, seed) for variant in study.variants for seed in study.seeds}
    if len(set(names.values())) < len(study.variants) * len(study.seeds):  # repeated, or equal once made safe
        raise ConfigError(
            f"study {study.name!r} has variants that share a run directory name; give them distinct names."
        )
    claim_out_dir(out_dir, "ablation", list(names.values()))
    for key, config in configs.items():  # a directory holding another config fails now, not after hours
        check_reusable(config, out_dir / names[key])
    outcomes: dict[tuple[str, int], RunOutcome] = {}
    for i, ((variant_name, seed), config) in enumerate(configs.items()):
        log.info("study %s: run %d of %d (%s, seed %d)", study.name, i + 1, len(configs), variant_name, seed)
        # The sweep's divergence rules: a variant (a learning rate, say) whose loss blows up far past where it
        # started finishes without a NaN, and its loss would otherwise enter the means as a result.
        start = start_loss(config)
        monitor = DivergenceMonitor(config.optim.warmup_steps, start_loss=start)
        outcome = run_or_reuse(config, out_dir / names[(variant_name, seed)], monitor=monitor)
        outcomes[(variant_name, seed)] = judge_end(outcome, start)
    results = _summarize(study, configs, outcomes)
    results["experiment"] = "ablation"
    results["command"] = command
    results["figure"] = _plot(study, outcomes, out_dir).name
    results["variants_figure"] = _plot_variants(results, out_dir).name
    write_results(out_dir, "results", results, Document(f"Ablation: {study.name}", study_blocks(results, out_dir)))
    return results


def _summarize(study: Study, configs: dict, outcomes: dict[tuple[str, int], RunOutcome]) -> dict[str, Any]:
    runs, variants = [], []
    for variant in study.variants:
        finished, diverged = [], 0
        for seed in study.seeds:
            outcome = outcomes[(variant.name, seed)]
            speeds = [
                r["tokens_per_s"] for r in read_metrics(outcome.run_dir / "metrics.jsonl") if r.get("tokens_per_s")
            ]
            entry = {
                "variant": variant.name,
                "seed": seed,
                "run_dir": str(outcome.run_dir),
                "status": outcome.status,
                "reason": outcome.reason,
                "final_val_loss": outcome.final_val_loss,
                "best_val_loss": outcome.best_val_loss,
                "tokens_per_s": statistics.median(speeds) if speeds else None,
                "elapsed_s": outcome.summary.get("elapsed_s"),
            }
            runs.append(entry)
            if outcome.diverged:
                diverged += 1
            else:
                finished.append(entry)
        counts = param_counts(configs[(variant.name, study.seeds[0])].model)
        variants.append(
            {
                "variant": variant.name,
                "values": variant.values,
                "non_embedding_params": counts.non_embedding,
                "seeds_finished": len(finished),
                "seeds_diverged": diverged,
                "final_val_loss": _stats([e["final_val_loss"] for e in finished]),
                "best_val_loss": _stats([e["best_val_loss"] for e in finished]),
                "tokens_per_s": _stats([e["tokens_per_s"] for e in finished if e["tokens_per_s"]]),
            }
        )
    ranked = sorted(variants, key=lambda v: v["final_val_loss"]["mean"] if v["final_val_loss"] else float("inf"))
    return {
        "study": study.name,
        "description": study.description,
        "preset": study.preset,
        "config_file": study.config_file,
        "study_set": study.study_set,  # the layers below and above the config file: see Study
        "set": study.overrides,
        "seeds": study.seeds,
        "variants": ranked,
        "runs": runs,
    }


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,  # sample standard deviation over seeds
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _plot(study: Study, outcomes: dict[tuple[str, int], RunOutcome], out_dir: Path) -> Path:
    run_dirs, labels, colors, diverged = [], [], [], []
    for i, variant in enumerate(study.variants):
        for j, seed in enumerate(study.seeds):
            outcome = outcomes[(variant.name, seed)]
            run_dirs.append(outcome.run_dir)
            labels.append(variant.name if j == 0 else None)
            colors.append(f"C{i % 10}")
            diverged.append(outcome.diverged)
    title = f"{study.name}: {len(study.variants)} variants x {len(study.seeds)} seeds"
    paths = plot_training_curves(
        run_dirs, out_dir / "curves", labels=labels, colors=colors, diverged=diverged, panels=("loss",), title=title
    )
    return paths[0]


def finished_seed_losses(results: dict[str, Any], variant: str) -> list[float]:
    """The final validation losses of a variant's seeds that finished: a diverged seed's last loss is no result
    (the means leave it out too; the table counts it)."""
    return [
        r["final_val_loss"]
        for r in results["runs"]
        if r["variant"] == variant and r["status"] != "diverged" and math.isfinite(r["final_val_loss"])
    ]


def _plot_variants(results: dict[str, Any], out_dir: Path) -> Path:
    """Final validation loss by variant: every seed as a dot, mean ± std as a bar (the curves' tails are too
    close to compare by eye)."""
    plt = pyplot()
    names = [v["variant"] for v in results["variants"]]
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2.5, 3.8))
    for i, variant in enumerate(results["variants"]):
        finite = finished_seed_losses(results, variant["variant"])
        ax.plot([i] * len(finite), finite, "o", color="C0", alpha=0.5, ms=5)
        stats = variant["final_val_loss"]
        if stats:
            ax.errorbar(i + 0.15, stats["mean"], yerr=stats["std"], fmt="s", color="C3", capsize=4, ms=6)
    ax.plot([], [], "o", color="C0", alpha=0.5, label="one seed")
    ax.errorbar([], [], yerr=[], fmt="s", color="C3", capsize=4, label="mean ± std")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title(f"{results['study']}: final validation loss by variant", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out_dir / "variants.png")
    return out_dir / "variants.png"


def format_stats(stats: dict[str, float] | None, digits: int = 4) -> str:
    """`mean ± std` over seeds, `mean (1 seed)`, or `diverged` when no seed finished."""
    if stats is None:
        return "diverged"
    if stats["n"] == 1:  # no spread to report from one seed
        return f"{stats['mean']:.{digits}f} (1 seed)"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def format_delta(stats: dict[str, float], best: dict[str, float]) -> str:
    """The gap to the best variant, marked "≈" when it is under twice its standard error
    sqrt(s_a²/n_a + s_b²/n_b): the seeds run do not separate the two variants. A rough guide only: with 2-3
    seeds a t-test asks for a wider gap, so an unmarked Δ is not yet significant either."""
    delta = stats["mean"] - best["mean"]
    text = f"{delta:+.4f}"
    if stats is best or stats["n"] < 2 or best["n"] < 2:  # the best row itself is never "within noise"
        return text
    standard_error = math.sqrt(stats["std"] ** 2 / stats["n"] + best["std"] ** 2 / best["n"])
    return f"{text} ≈" if abs(delta) < 2 * standard_error else text


def _preset_phrase(results: dict[str, Any]) -> str:
    return f"Preset `{results['preset']}`" if results.get("preset") else "No preset"


def _settings(results: dict[str, Any]) -> str:
    """The study's own `set` and the user's `--set`, named apart (the user's win where both set a key)."""

    def quoted(items: list[str]) -> str:
        return ", ".join(f"`{item}`" for item in items)

    parts = [f"the study's {quoted(results['study_set'])}"] if results.get("study_set") else []
    parts += [f"`--config {results['config_file']}`"] if results.get("config_file") else []
    parts += [f"`--set` {quoted(results['set'])}"] if results.get("set") else []
    return ", then ".join(parts) or "no overrides"


def study_blocks(results: dict[str, Any], out_dir: Path) -> list:
    """The study's table, figure and reproduce command, as document blocks."""
    variants = results["variants"]
    best = variants[0]["final_val_loss"]
    rows = []
    for v in variants:
        final = v["final_val_loss"]
        delta = format_delta(final, best) if final and best else "-"
        spread = f"{final['min']:.4f} – {final['max']:.4f}" if final and final["n"] > 1 else "-"
        speed = f"{v['tokens_per_s']['mean']:,.0f}" if v["tokens_per_s"] else "-"
        seeds = f"{v['seeds_finished']}" + (f" (+{v['seeds_diverged']} diverged)" if v["seeds_diverged"] else "")
        rows.append(
            [
                v["variant"],
                format_stats(final),
                spread,
                delta,
                format_stats(v["best_val_loss"]),
                speed,
                f"{v['non_embedding_params']:,}",
                seeds,
            ]
        )
    blocks: list = []
    if results.get("description"):
        blocks.append(Paragraph(results["description"]))
    blocks += [
        Table(
            [
                "variant",
                "final val loss (mean ± std)",
                "range over seeds",
                "Δ vs best",
                "best val loss",
                "tokens/s",
                "non-embedding params",
                "seeds",
            ],
            rows,
        ),
        Paragraph(
            f"{_preset_phrase(results)} with {_settings(results)}; "
            f"seeds {results['seeds']} (`train.seed`: initialization and batch order). Standard deviations are "
            "sample standard deviations over seeds; the range is the lowest and highest seed. A Δ marked ≈ is "
            "under twice its standard error, so these seeds do not tell that variant from the best; with few "
            "seeds even an unmarked Δ may not be significant."
        ),
        Figure(
            out_dir / results["variants_figure"],
            f"{results['study']} final validation loss by variant",
            "Each dot is one seed; squares and bars are the mean ± sample standard deviation.",
        ),
        Figure(
            out_dir / results["figure"],
            f"{results['study']} validation curves",
            "Validation (thick) and training (thin) loss of every run; one color per variant.",
        ),
    ]
    if results.get("command"):
        blocks.append(Paragraph(f"Reproduce: `{results['command']}`"))
    return blocks
