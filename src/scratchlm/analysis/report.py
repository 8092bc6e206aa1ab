"""A run's report: `report.md` with the final numbers, the loss curve and an attention-map figure.

Everything comes from the run directory (config.toml, metrics.jsonl, summary.json, checkpoints/), so a
report can be rebuilt at any time with `scratchlm report RUN_DIR`.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from scratchlm.analysis.accounting import param_counts
from scratchlm.analysis.attention import attention_maps, plot_attention_maps
from scratchlm.analysis.plots import plot_loss_curves
from scratchlm.config import RunConfig
from scratchlm.errors import DataError
from scratchlm.fileio import atomic_write
from scratchlm.train.checkpoint import load_model
from scratchlm.train.tracking import read_metrics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def write_report(run_dir: str | Path, *, attention_sample: int = 0) -> Path:
    """Make plots/loss_curve.png, plots/attention_val<K>.png and report.md in `run_dir`; return the report."""
    run_dir = Path(run_dir)
    config_path, summary_path = run_dir / "config.toml", run_dir / "summary.json"
    if not config_path.is_file() or not summary_path.is_file():
        raise DataError(f"{run_dir} is not a finished run (no config.toml or summary.json); train it first.")
    try:
        config = RunConfig.from_tables(tomllib.loads(config_path.read_text(encoding="utf-8")))
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # TOML/JSON/UTF-8 decoding errors are ValueErrors
        raise DataError(f"{run_dir}: config.toml or summary.json is damaged ({exc}); train the run again.") from None
    if not isinstance(summary, dict):
        raise DataError(f"{summary_path} is not a JSON object; train the run again.")
    rows = read_metrics(run_dir / "metrics.jsonl")
    floor = summary.get("data", {}).get("loss_floor")
    # The checkpoint is read (and refused if bad) before any figure is written, so a failed report changes nothing.
    attention_png = _attention_figure(run_dir, config, attention_sample)
    loss_png = plot_loss_curves([run_dir], run_dir / "plots" / "loss_curve.png", floor=floor)
    report = run_dir / "report.md"
    with atomic_write(report, "w", encoding="utf-8") as fh:
        fh.write(_markdown(run_dir, config, summary, rows, loss_png, attention_png))
    return report


def _attention_figure(run_dir: Path, config: RunConfig, sample: int) -> Path | None:
    checkpoint = run_dir / "checkpoints" / ("best.pt" if (run_dir / "checkpoints" / "best.pt").exists() else "last.pt")
    model = load_model(checkpoint)
    if config.data.kind != "trajectories":
        return None  # text runs: `scratchlm attention --prompt` (the experiments issue) renders those
    from scratchlm.train.datasets import build_training_data
    from scratchlm.train.distributed import DistInfo

    data = build_training_data(config, torch.device("cpu"), DistInfo())
    inputs_BT, _ = next(iter(data.val_batches()))
    idx_T = inputs_BT[min(sample, len(inputs_BT) - 1)]
    maps = attention_maps(model, idx_T)
    labels = [str(int(t)) for t in idx_T]
    title = f"{run_dir.name}: attention on validation trajectory {sample} (labels: input action tokens)"
    return plot_attention_maps(maps, labels, run_dir / "plots" / f"attention_val{sample}.png", title)


def _markdown(
    run_dir: Path,
    config: RunConfig,
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    loss_png: Path,
    attention_png: Path | None,
) -> str:
    m = config.model
    counts = param_counts(m)
    evals = [r for r in rows if r.get("val_loss") is not None]
    final = evals[-1] if evals else {}
    speeds = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    data = summary.get("data", {})
    floor = data.get("loss_floor")
    lines = [
        f"# Run `{run_dir.name}`",
        "",
        f"Model: {m.num_layers} layers, d_model {m.d_model}, {m.num_heads} heads, d_ff {m.d_ff}, "
        f"{m.positional} positions, {m.norm} ({m.norm_position}), {m.ffn}; {counts.total:,} parameters "
        f"({counts.non_embedding:,} non-embedding).",
        f"Data: {config.data.kind} from `{config.data.path}`"
        + (
            f" ({data['train_trajectories']} train / {data['val_trajectories']} validation trajectories, "
            f"{data.get('version') or 'unknown-version'} actions, {config.data.layout} layout)."
            if "train_trajectories" in data
            else "."
        ),
        f"Training: {summary['steps']} steps, {summary['tokens']:,} tokens, {summary['elapsed_s']:.1f} s.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    if final:
        lines.append(f"| final validation loss | {final['val_loss']:.4f} (perplexity {final['val_ppl']:.3f}) |")
    lines.append(f"| best validation loss | {summary['best_val_loss']:.4f} |")
    if floor is not None and final:
        lines.append(f"| noise floor (ln 5, v2 actions) | {floor:.4f} (gap {final['val_loss'] - floor:.4f}) |")
    if "val_action_acc" in final:
        lines.append(f"| next-action accuracy, exact | {final['val_action_acc']:.2%} |")
        lines.append(f"| next-action accuracy, within ±2 bins | {final['val_action_within2']:.2%} |")
    if speeds:
        lines.append(f"| training throughput (median of log intervals) | {statistics.median(speeds):,.0f} tokens/s |")
    lines += ["", f"![loss curve]({loss_png.relative_to(run_dir)})", ""]
    if attention_png is not None:
        lines += [f"![attention maps]({attention_png.relative_to(run_dir)})", ""]
    if floor is not None:
        lines += [
            "The course's v2 actions carry uniform noise over 5 neighbouring bins, so no model can go below",
            "ln 5 = 1.609 nats/token: exact accuracy is capped near 20%, while within ±2 bins measures whether",
            "the model found the underlying octant and distance bin.",
            "",
        ]
    return "\n".join(lines)
