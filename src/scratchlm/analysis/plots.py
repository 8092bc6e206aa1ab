"""Training curves from run directories: loss (train and validation) against steps, tokens or time.

matplotlib runs headless (Agg). Several runs overlay with a legend from their directory names.
"""

from __future__ import annotations

from pathlib import Path

from scratchlm.train.tracking import read_metrics

X_AXES = {"step": "step", "tokens": "tokens", "time": "elapsed_s"}


def plot_loss_curves(
    run_dirs: list[str | Path],
    path: str | Path,
    *,
    x: str = "step",
    log_scale: bool = False,
    floor: float | None = None,
) -> Path:
    """Train (thin) and validation (thick, markers) loss of each run on one figure, saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = X_AXES[x]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, run_dir in enumerate(map(Path, run_dirs)):
        rows = read_metrics(run_dir / "metrics.jsonl")
        color = f"C{i}"
        train = [(r[key], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
        val = [(r[key], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
        if train:
            ax.plot(*zip(*train, strict=True), color=color, alpha=0.45, lw=1, label=f"{run_dir.name} train")
        if val:
            ax.plot(*zip(*val, strict=True), color=color, lw=2, marker="o", ms=3, label=f"{run_dir.name} val")
    if floor is not None:
        ax.axhline(floor, color="gray", ls="--", lw=1, label=f"noise floor {floor:.3f}")
    ax.set_xlabel({"step": "step", "tokens": "tokens", "time": "seconds"}[x])
    ax.set_ylabel("cross-entropy (nats/token)")
    if log_scale:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
