"""Training curves from run directories: loss and perplexity (train and validation), learning rate and
gradient norm, against steps, tokens or wall-clock time.

matplotlib runs headless (Agg). Several runs overlay on one figure with a legend; runs may share a color
(the seeds of one ablation variant). A diverged run's curves end in a cross at their last finite point,
and the legend says what the cross means: in sweep and ablation figures the runs the experiment judged
diverged, in `scratchlm plot` every run `runs_table.divergence` finds diverged (its summary.json or
outcome.json, its experiment's verdict, or a non-finite logged loss), whose legend names also say so.
Figures are written as PNG and SVG.

Perplexity is exp of the logged loss, on a logarithmic axis: the metrics log caps its `*_ppl` fields at
exp(50) so that a diverged loss cannot overflow, and a curve drawn from them would flatten at that cap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scratchlm.errors import DataError
from scratchlm.fileio import atomic_write, refuse_special_file
from scratchlm.train.tracking import read_metrics

log = logging.getLogger(__name__)

X_AXES = {"step": "step", "tokens": "tokens", "time": "elapsed_s"}
X_LABELS = {"step": "step", "tokens": "tokens", "time": "training time (s)"}
PANELS = {
    "loss": ("train_loss", "val_loss", "cross-entropy (nats/token)"),
    "ppl": ("train_loss", "val_loss", "perplexity (exp of the loss)"),  # not the capped *_ppl: see above
    "lr": ("lr", None, "learning rate"),
    "grad_norm": ("grad_norm", None, "gradient norm (pre-clip, mean per log interval)"),
}
ALL_PANELS = ("loss", "ppl", "lr", "grad_norm")
# A larger loss is drawn at exp(460) ~ 1e200, marked: a float holds ~1e308, but matplotlib's log axis places
# ticks decades beyond its highest point and overflows (an OverflowError) from about 1e280 up.
MAX_PLOTTED_LOG_PPL = 460.0
DIVERGED_MARK = "x: diverged (its last finite point)"


def read_run_metrics(path: str | Path) -> list[dict[str, Any]]:
    """`read_metrics` for a plot or a table: DataError, not a traceback, when the file cannot be read at all
    (not text, a permission, an I/O error)."""
    try:
        return read_metrics(path)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; restore it from a copy, or leave that run out.") from None
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise DataError(f"{path} cannot be read ({why}); restore it from a copy, or leave that run out.") from None


def is_number(value: Any) -> bool:
    """A logged int or float (JSON true/false are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(
    run_dirs: Sequence[str | Path],
    path: str | Path,
    *,
    x: str = "step",
    log_scale: bool = False,
    labels: Sequence[str | None] | None = None,
    colors: Sequence[str] | None = None,
    diverged: Sequence[bool] | None = None,
    floor: float | None = None,
    panels: Sequence[str] = ALL_PANELS,
    title: str = "",
    svg: bool = True,
    metrics: Sequence[list[dict[str, Any]]] | None = None,
) -> list[Path]:
    """One panel per entry of `panels` (loss, ppl, lr, grad_norm), every run overlaid; returns [png, svg]
    ([png] with svg=False).

    metrics: each run's rows as `read_run_metrics` returns them, for a caller that has read them already
    (default: read from each run's metrics.jsonl).

    labels: legend name per run (default: directory name; None hides a run from the legend, e.g. the
    second seed of a variant). colors: matplotlib color per run (default: one per run). diverged: runs to
    end in an "x" at their last finite point, explained by one legend entry. log_scale: logarithmic y for
    loss and gradient norm (perplexity always has one). `path`'s suffix is replaced by .png and .svg.
    """
    if x not in X_AXES:
        raise DataError(f"unknown x axis {x!r}; use one of {', '.join(X_AXES)}.")
    plt = pyplot()
    key = X_AXES[x]
    runs = [Path(r) for r in run_dirs]
    if metrics is not None and len(metrics) != len(runs):
        raise ValueError(f"metrics holds {len(metrics)} runs' rows for {len(runs)} runs.")
    rows_by_run = list(metrics) if metrics is not None else [read_run_metrics(r / "metrics.jsonl") for r in runs]
    if not any(rows_by_run):
        raise DataError(
            f"no metrics to plot in {', '.join(map(str, runs))}: no row is logged yet (one every train.log_interval "
            "steps); train the run(s) further, e.g. with `scratchlm train --resume`."
        )
    cols = min(2, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.2 * cols, 3.8 * nrows), squeeze=False)
    names = run_labels(runs) if labels is None else labels
    for i, rows in enumerate(rows_by_run):
        label = names[i]
        color = colors[i] if colors is not None else f"C{i % 10}"
        ended_badly = bool(diverged[i]) if diverged is not None else False
        for ax, panel in zip(axes.flat, panels, strict=False):
            _draw_panel(ax, panel, rows, key, label, color, ended_badly)
    for ax, panel in zip(axes.flat, panels, strict=False):
        ax.set_xlabel(X_LABELS[x])
        ax.set_ylabel(PANELS[panel][2], fontsize=8)
        if (log_scale and panel != "lr") or panel == "ppl":
            ax.set_yscale("log")
        if floor is not None and panel in ("loss", "ppl"):
            level = floor if panel == "loss" else math.exp(floor)
            ax.axhline(level, color="gray", ls="--", lw=1, label=f"noise floor {level:.3f}")
        ax.grid(alpha=0.3)
        clipped = [(h, n) for h, n in zip(*ax.get_legend_handles_labels(), strict=True) if n.startswith("clipped")]
        if clipped and ax is not axes.flat[0]:  # the figure's legend is the first panel's: say it here
            ax.legend(*zip(*clipped, strict=True), fontsize=7, loc="best")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles, names = axes.flat[0].get_legend_handles_labels()
    if len(handles) > 8:  # a long legend would hide the curves: put it beside the panels
        fig.legend(handles, names, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    elif handles:
        axes.flat[0].legend(handles, names, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, Path(path), svg)


def _draw_panel(
    ax: Any, panel: str, rows: list[dict[str, Any]], key: str, label: str | None, color: str, bad: bool
) -> None:
    train_key, val_key, _ = PANELS[panel]
    train = _series(rows, key, train_key)
    val = _series(rows, key, val_key) if val_key else []
    if panel == "ppl":
        train, val = _perplexity(ax, train, color), _perplexity(ax, val, color)
    hidden = label is None
    if train:
        train_label = "_nolegend_" if hidden else (f"{label} train" if val_key else label)
        # A line through one point draws nothing: a one-row run (a single step) needs a marker to show up.
        marker = "." if len(train) == 1 else None
        ax.plot(
            *zip(*train, strict=True),
            color=color,
            alpha=0.45 if val_key else 0.9,
            lw=1,
            marker=marker,
            label=train_label,
        )
        if bad:
            ax.plot(*train[-1], marker="x", color=color, ms=9, mew=2, label="_nolegend_")
    elif bad and not hidden:  # diverged before any finite loss was logged: nothing to draw, but say so
        ax.plot([], [], ls="none", marker="x", color=color, ms=9, mew=2, label=f"{label}: no finite point")
    if bad and DIVERGED_MARK not in ax.get_legend_handles_labels()[1]:
        # One entry for every cross (a cross's color is its run's); black, since runs of all colors share it.
        ax.plot([], [], ls="none", marker="x", color="black", ms=7, mew=2, label=DIVERGED_MARK)
    if val:
        val_label = "_nolegend_" if hidden else f"{label} val"
        ax.plot(*zip(*val, strict=True), color=color, lw=2, marker="o", ms=3, label=val_label)


def _series(rows: list[dict[str, Any]], key: str, field: str) -> list[tuple[float, float]]:
    """The finite (x, y) points of `field`: a diverged run's cross goes on the last of them, and metrics files
    from before strict JSON may hold NaN or Infinity where they now hold null."""
    return [
        (r[key], r[field])
        for r in rows
        if is_number(r.get(field)) and is_number(r.get(key)) and math.isfinite(r[field]) and math.isfinite(r[key])
    ]


def _perplexity(ax: Any, points: list[tuple[float, float]], color: str) -> list[tuple[float, float]]:
    """exp of each loss; a loss past MAX_PLOTTED_LOG_PPL is drawn at exp(MAX_PLOTTED_LOG_PPL) with a marker that
    says so, since its true perplexity has no float to hold it."""
    clipped = [(x, math.exp(MAX_PLOTTED_LOG_PPL)) for x, loss in points if loss > MAX_PLOTTED_LOG_PPL]
    if clipped:
        ceiling = f"e^{MAX_PLOTTED_LOG_PPL:g}"
        names = ax.get_legend_handles_labels()[1]
        clip_label = f"clipped: perplexity above {ceiling}" if not any(n.startswith("clipped") for n in names) else None
        ax.plot(*zip(*clipped, strict=True), ls="none", marker="^", color=color, ms=8, label=clip_label or "_nolegend_")
    return [(x, math.exp(min(loss, MAX_PLOTTED_LOG_PPL))) for x, loss in points]


def save_figure(fig: Any, path: Path, svg: bool = True) -> list[Path]:
    """Write `fig` as PNG (and SVG beside it unless svg=False), then close it; returns the paths.

    Each file is written whole or not at all (`atomic_write`): a refused write (disk full, a pipe or a folder
    in the figure's place) is one WriteError or DataError, and the figure an earlier invocation drew is kept."""
    plt = pyplot()
    written = []
    try:
        for suffix in (".png", ".svg") if svg else (".png",):
            target = path.with_suffix(suffix)
            with atomic_write(target) as fh:
                fig.savefig(fh, format=suffix[1:], dpi=120, bbox_inches="tight")
            written.append(target)
    finally:
        plt.close(fig)  # a failed write must not leave the figure open in pyplot's registry
    return written


def plot_runs(run_dirs: Sequence[str | Path], *, x: str = "step", log_scale: bool = False) -> list[Path]:
    """`scratchlm plot`: each run's own curves into its plots/curves_<x>, and with several runs the overlay
    into every run's plots/compare_<x> (named after the runs it holds). A diverged run (`runs_table.divergence`)
    ends in a cross, as in the sweep figures, and its legend name and title say "diverged". Returns the files
    written.

    Every run's metrics.jsonl is read once, before any figure is drawn: a run that cannot be plotted stops the
    command before it has replaced any other run's figures."""
    from scratchlm.analysis.runs_table import divergence  # runs_table builds on this module

    runs = [Path(r) for r in run_dirs]
    seen: dict[Path, Path] = {}
    for run in runs:
        _check_run_dir(run)
        if run.resolve() in seen:
            also = "" if str(seen[run.resolve()]) == str(run) else f" (also as {seen[run.resolve()]})"
            raise DataError(f"{run} is given twice{also}; pass each run once.")
        seen[run.resolve()] = run
    rows_by_run = [read_run_metrics(run / "metrics.jsonl") for run in runs]
    for run, rows in zip(runs, rows_by_run, strict=True):
        _refuse_damaged_metrics(run / "metrics.jsonl", rows)
    labels = run_labels(runs)
    reasons = [divergence(run, rows) for run, rows in zip(runs, rows_by_run, strict=True)]
    diverged = [reason is not None for reason in reasons]
    shown = [f"{label} (diverged)" if bad else label for label, bad in zip(labels, diverged, strict=True)]
    written: list[Path] = []
    suffix = "_log" if log_scale else ""
    floors = [_loss_floor(run) for run in runs]
    for run, rows, label, floor, reason in zip(runs, rows_by_run, labels, floors, reasons, strict=True):
        if len(runs) > 1 and not rows:
            # A run that diverged before its first log row has no curve of its own; the others still get theirs.
            log.warning(
                "%s has no logged metrics row yet; it has no figure of its own and no curve in the overlay", run
            )
            continue
        written += plot_training_curves(
            [run], run / "plots" / f"curves_{x}{suffix}", x=x, log_scale=log_scale, labels=[label], floor=floor,
            diverged=[reason is not None], title=label if reason is None else f"{label}: diverged ({reason})",
            metrics=[rows],
        )  # fmt: skip
    if len(runs) > 1:
        # Named and titled by the plain labels: a run judged diverged later keeps overwriting the same file.
        name = _file_name(f"compare_{x}{suffix}_" + "_".join(label.replace("/", "-") for label in labels))
        title = " vs ".join(labels)
        # One floor line only when every run has the same one: runs on other data have no common floor.
        shared = floors[0] if len(set(floors)) == 1 else None
        first = plot_training_curves(
            runs, runs[0] / "plots" / name, x=x, log_scale=log_scale, labels=shown, diverged=diverged, floor=shared,
            title=title, metrics=rows_by_run,
        )  # fmt: skip
        written += first
        for run in runs[1:]:  # the same figure in every run's plots/: drawn once, copied
            for path in first:
                target = run / "plots" / path.name
                # atomic_write as save_figure: creates a plots/ a run without a figure of its own lacks, and
                # keeps the previous copy when the write is refused
                with atomic_write(target) as fh:
                    fh.write(path.read_bytes())
                written.append(target)
    return written


def _check_run_dir(run: Path) -> None:
    """DataError, naming what `run` is instead, unless it is a directory with a regular metrics.jsonl."""
    hint = "pass run directories (runs/NAME) that have trained."
    if not run.exists():
        raise DataError(f"{run} does not exist; check the path, or {hint}")
    if not run.is_dir():
        raise DataError(f"{run} is a file, not a run directory; pass the folder that holds it, or {hint}")
    metrics = run / "metrics.jsonl"
    # A folder or a named pipe in its place: reading a pipe would wait forever for a writer.
    refuse_special_file(metrics, "metrics log")
    if not metrics.is_file():
        raise DataError(f"{run} has no metrics.jsonl; {hint}")


def _refuse_damaged_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """DataError for a metrics file with bytes in it but no row: not a run that has yet to log its first row
    (its file is empty), so "train it further" would be the wrong advice. The size is all that is looked at:
    the rows were read once already."""
    if rows:
        return
    size = path.stat().st_size
    if size:
        raise DataError(
            f"{path} holds {size} bytes but no complete metrics row (a line with a JSON object with an integer "
            "step): it is damaged, or its run was killed writing its first row; restore it from a copy, or leave "
            "that run out."
        )


def run_labels(runs: Sequence[Path]) -> list[str]:
    """A legend name per run: its directory name, with its parent's in front where two runs share a name
    (the same rate in two sweeps), and the whole path where even that is shared."""
    full = [run.resolve() for run in runs]
    names = [path.name for path in full]
    longer = [f"{path.parent.name}/{path.name}" for path in full]
    return [
        name if names.count(name) == 1 else (two if longer.count(two) == 1 else str(path))
        for name, two, path in zip(names, longer, full, strict=True)
    ]


def _file_name(stem: str, limit: int = 80) -> str:
    """`stem` cut to `limit` characters, with a digest of the whole when cut: two overlays whose names share
    their first `limit` characters must not overwrite one another."""
    if len(stem) <= limit:
        return stem
    return stem[: limit - 9] + "_" + hashlib.sha1(stem.encode()).hexdigest()[:8]


def _loss_floor(run: Path) -> float | None:
    summary = run / "summary.json"
    if not summary.is_file():
        return None
    try:
        return json.loads(summary.read_text(encoding="utf-8")).get("data", {}).get("loss_floor")
    except (ValueError, AttributeError):
        return None


def plot_loss_curves(
    run_dirs: list[str | Path],
    path: str | Path,
    *,
    x: str = "step",
    log_scale: bool = False,
    floor: float | None = None,
    hlines: dict[str, float] | None = None,
    svg: bool = True,
) -> Path:
    """Train (thin) and validation (thick, markers) loss of each run on one figure; returns the PNG (an SVG
    is written beside it unless svg=False). hlines: extra labelled levels (e.g. a causal evaluation's loss)."""
    plt = pyplot()
    key = X_AXES[x]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, run_dir in enumerate(map(Path, run_dirs)):
        _draw_panel(ax, "loss", read_run_metrics(run_dir / "metrics.jsonl"), key, run_dir.name, f"C{i % 10}", False)
    if floor is not None:
        ax.axhline(floor, color="gray", ls="--", lw=1, label=f"noise floor {floor:.3f}")
    for i, (name, level) in enumerate((hlines or {}).items()):
        ax.axhline(level, color=f"C{(i + len(run_dirs)) % 10}", ls=":", lw=1.5, label=f"{name} {level:.3f}")
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel("cross-entropy (nats/token)")
    if log_scale:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, Path(path), svg)[0]
