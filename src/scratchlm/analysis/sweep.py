"""Learning-rate sweeps: one run per learning rate, divergence detected and marked, the best rate and the
edge of stability reported (CSE599-O section 7.2: "the best learning rate is at the edge of stability").

A run diverges when its loss or gradients become NaN/Inf (the trainer raises `NonFiniteLossError`) or when
its loss explodes:

- at any step, warmup included, a logged training loss above `BLOWUP_FACTOR` x the loss the run started
  from (`start_loss`: ln V, uniform prediction, or the model's measured loss at initialization when that is
  higher). A run shorter than its warmup is judged by this rule alone, so it must not depend on warmup.
  It cannot flag a healthy run: training only lowers the loss from where it starts, and a brief rise while
  the rate ramps up stays near the start; a loss twice the start means the model gives its targets far
  less probability than it did knowing nothing (e.g. 637 nats against ln 256 = 5.5).
- after warmup, a logged training loss above `factor` x the best logged so far, or more than
  `UNDONE_MARGIN` above the first logged value (everything learned is undone; the margin keeps the noise
  of a run that barely moves, at a tiny rate, from counting).
- at the end, warmup or not, a last logged training loss more than `UNDONE_MARGIN` above both the start
  and the first logged value (`ended_above_start`): a run cut off inside its warmup while its loss climbs
  ends worse than it began, and its final loss is no result for that rate.

`DivergenceMonitor` stops a run by the first two rules at that row; the sweep goes on with the next rate. A
run resumed after a kill gets a fresh monitor: its "first" and "best" values start again from the rows logged
after the resume.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scratchlm.analysis.document import Document, Figure, Paragraph, Table, write_results
from scratchlm.analysis.plots import plot_training_curves, pyplot, save_figure
from scratchlm.analysis.study_runs import (
    RunOutcome,
    check_reusable,
    claim_out_dir,
    read_results,
    recipe_phrase,
    run_or_reuse,
    steps_run,
)
from scratchlm.config import RunConfig
from scratchlm.errors import ConfigError, is_out_of_memory
from scratchlm.presets import parse_override, resolve_run_config
from scratchlm.train.tracking import read_metrics

log = logging.getLogger(__name__)

DEFAULT_EXPLODE_FACTOR = 1.5
UNDONE_MARGIN = 0.05  # relative
BLOWUP_FACTOR = 2.0  # x the loss a run starts from, at any step
START_ROWS = 8  # validation rows the initial loss is measured on: enough for a mean, cheap for any model


@dataclass
class DivergenceMonitor:
    """A trainer monitor (see `trainer.fit`) that stops a run whose training loss blows up past twice its
    start at any step, or explodes after warmup (see the module docstring)."""

    warmup_steps: int
    factor: float = DEFAULT_EXPLODE_FACTOR
    start_loss: float | None = None  # where the run starts (`start_loss`); None: its first logged loss
    first: float | None = None  # the first logged training loss
    best: float = math.inf

    def __call__(self, row: dict[str, Any]) -> str | None:
        loss, step = row.get("train_loss"), row["step"]
        if loss is None or not math.isfinite(loss):
            return f"training loss {loss} at step {step}"
        if self.first is None:
            self.first = loss
        self.best = min(self.best, loss)
        start = self.start_loss if self.start_loss is not None else self.first
        if loss > BLOWUP_FACTOR * start:
            return (
                f"training loss {loss:.3f} at step {step} blew up past {BLOWUP_FACTOR:g}x the loss it started from "
                f"{start:.3f}"
            )
        if step <= self.warmup_steps:
            return None  # the loss may rise briefly while the rate ramps up
        if loss > self.factor * self.best:
            return f"training loss {loss:.3f} at step {step} exploded above {self.factor:g}x its best {self.best:.3f}"
        if loss > self.first * (1.0 + UNDONE_MARGIN):
            return f"training loss {loss:.3f} at step {step} rose above its first logged value {self.first:.3f}"
        return None


def start_loss(config: RunConfig) -> float:
    """The loss every run of a sweep starts from: ln V (uniform prediction, where a small initialization
    starts), or the model's loss at initialization on the first validation rows when that is higher (e.g.
    an output layer initialized too large starts tens of nats above ln V). The rate does not change it."""
    measured = _initial_loss(config)
    uniform = math.log(config.model.vocab_size)
    return uniform if measured is None else max(uniform, measured)


def _initial_loss(config: RunConfig) -> float | None:
    from scratchlm.model import TransformerLM
    from scratchlm.train.datasets import build_training_data
    from scratchlm.train.distributed import DistInfo
    from scratchlm.train.trainer import out_of_memory_error

    model_config = config.model
    if model_config.kernels == "triton":  # the same weights through PyTorch ops: this runs on the CPU
        model_config = dataclasses.replace(model_config, kernels="torch")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(config.train.seed)  # as the trainer seeds it; the initial loss hardly depends on it
        data = build_training_data(config, torch.device("cpu"), DistInfo())
        if (data.vocab_size or 0) > model_config.vocab_size or data.seq_len > model_config.context_length:
            return None  # the run itself fails with the message that says how to fix the config
        inputs_BT, targets_BT = next(iter(data.val_batches()))
        try:
            model = TransformerLM(model_config).eval()
        except (MemoryError, RuntimeError) as exc:  # before any run: say it as the run would have
            if is_out_of_memory(exc):
                raise out_of_memory_error(config, None) from None
            raise
        _, loss = model(inputs_BT[:START_ROWS], targets_BT[:START_ROWS])
    return float(loss)


def ended_above_start(train_losses: list[float], start: float) -> str | None:
    """Why a run that finished counts as diverged all the same (see the module docstring), or None."""
    if not train_losses:
        return None
    reference = max(start, train_losses[0])  # the more lenient of the two starts: noise must not count
    if train_losses[-1] > reference * (1.0 + UNDONE_MARGIN):
        return (
            f"ended at training loss {train_losses[-1]:.3f}, more than {UNDONE_MARGIN:.0%} above where it started "
            f"({reference:.3f})"
        )
    return None


def judge_end(outcome: RunOutcome, start: float) -> RunOutcome:
    """The outcome, marked diverged when a finished run ended above where it started (`ended_above_start`)."""
    if outcome.diverged:
        return outcome
    rows = read_metrics(outcome.run_dir / "metrics.jsonl")
    why = ended_above_start([r["train_loss"] for r in rows if r.get("train_loss") is not None], start)
    return outcome if why is None else dataclasses.replace(outcome, status="diverged", reason=why)


def lr_run_name(lr: float) -> str:
    return f"lr={lr:.3g}"


def lr_sweep(
    preset: str | None,
    values: list[float],
    out_dir: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    config_file: str | None = None,
    factor: float = DEFAULT_EXPLODE_FACTOR,
    command: str = "",
) -> dict[str, Any]:
    """One run per learning rate under out_dir; writes results.json, results.md, curves.{png,svg} and
    lr_vs_loss.{png,svg}; returns the results (what results.json holds)."""
    if not values or not all(math.isfinite(v) and v > 0 for v in values):  # nan passes a plain `v <= 0` test
        raise ConfigError(f"--values must be positive learning rates and finite numbers, got {values}.")
    if not factor > 1:  # written so that nan fails too: a nan factor would silently never stop a run
        raise ConfigError(f"the explosion factor must be > 1, got {factor}.")
    for item in overrides:  # each run's rate is the sweep's: the --set would only mislead the recipe line
        if ".".join(parse_override(item)[0]) == "optim.lr":
            raise ConfigError(f"--set {item} would be replaced by each rate of the sweep; give the rates to --values.")
    out_dir = Path(out_dir)
    _check_same_factor(out_dir, factor)
    values = sorted(set(values))
    names: dict[str, float] = {}
    for lr in values:  # run directories are named at 3 significant digits: two rates must not share one
        if lr_run_name(lr) in names:
            raise ConfigError(
                f"learning rates {names[lr_run_name(lr)]!r} and {lr!r} both round to {lr_run_name(lr)}, the name of "
                "one run directory; drop one or make them differ in the first 3 digits."
            )
        names[lr_run_name(lr)] = lr
    base = resolve_run_config(preset, config_file, list(overrides))
    configs = {}
    for lr in values:
        extra = [f"optim.lr={lr!r}"]
        if base.optim.min_lr is not None:  # keep the preset's final/peak ratio (a fixed min_lr may exceed a small lr)
            extra.append(f"optim.min_lr={lr * base.optim.min_lr / base.optim.lr!r}")
        configs[lr] = resolve_run_config(preset, config_file, overrides, over=[extra])  # the rate is the sweep's
    claim_out_dir(out_dir, "lr-sweep", [lr_run_name(lr) for lr in values])
    for lr, config in configs.items():  # a directory holding another config fails now, not after hours
        check_reusable(config, out_dir / lr_run_name(lr))
    start = start_loss(base)  # the same initialization for every rate
    outcomes: dict[float, RunOutcome] = {}
    for lr, config in configs.items():
        log.info("lr sweep: lr %g", lr)
        monitor = DivergenceMonitor(config.optim.warmup_steps, factor, start_loss=start)
        outcomes[lr] = judge_end(run_or_reuse(config, out_dir / lr_run_name(lr), monitor=monitor), start)
    results = _summarize(outcomes, factor)
    results.update(
        {
            "experiment": "lr-sweep",
            "preset": preset,
            "config_file": config_file,
            "set": list(overrides),
            "seed": base.train.seed,  # every rate: the same initialization and batch order
            "command": command,
            "start_loss": start,
        }
    )
    results["figures"] = _plots(outcomes, out_dir)
    write_results(out_dir, "results", results, Document("Learning-rate sweep", sweep_blocks(results, out_dir)))
    return results


def _check_same_factor(out_dir: Path, factor: float) -> None:
    """Refuse a factor other than the one the sweep in out_dir judged its runs by: its reused runs keep the
    outcome the old factor gave them, while results.md would state the new one."""
    old = read_results(out_dir)
    recorded = old.get("explode_factor") if old else None
    if isinstance(recorded, (int, float)) and recorded != factor:
        raise ConfigError(
            f"{out_dir} holds a sweep whose runs were judged with --explode-factor {recorded:g}, not {factor:g}; "
            f"give --explode-factor {recorded:g} to extend it, or write this sweep to another --out."
        )


def _summarize(outcomes: dict[float, RunOutcome], factor: float) -> dict[str, Any]:
    runs = []
    for lr, outcome in outcomes.items():
        rows = read_metrics(outcome.run_dir / "metrics.jsonl")
        train = [r["train_loss"] for r in rows if r.get("train_loss") is not None]
        runs.append(
            {
                "lr": lr,
                "run_dir": str(outcome.run_dir),
                "status": outcome.status,
                "reason": outcome.reason,
                "steps": steps_run(outcome, rows),
                "total_steps": outcome.summary.get("total_steps"),
                "final_train_loss": train[-1] if train else None,
                "final_val_loss": None if outcome.diverged else outcome.final_val_loss,
                "best_val_loss": outcome.best_val_loss if math.isfinite(outcome.best_val_loss) else None,
            }
        )
    stable = [r for r in runs if r["status"] == "finished"]
    diverged = [r for r in runs if r["status"] == "diverged"]
    best = min(stable, key=lambda r: r["final_val_loss"]) if stable else None
    first_diverged = min((r["lr"] for r in diverged), default=None)
    largest_stable = max((r["lr"] for r in stable if first_diverged is None or r["lr"] < first_diverged), default=None)
    return {
        "runs": runs,
        "explode_factor": factor,
        "best_lr": best["lr"] if best else None,
        "best_final_val_loss": best["final_val_loss"] if best else None,
        "largest_stable_lr": largest_stable,
        "smallest_diverged_lr": first_diverged,
    }


def _plots(outcomes: dict[float, RunOutcome], out_dir: Path) -> dict[str, str]:
    lrs = list(outcomes)
    curves = plot_training_curves(
        [outcomes[lr].run_dir for lr in lrs],
        out_dir / "curves",
        labels=[lr_run_name(lr) for lr in lrs],
        colors=[_color(i, len(lrs)) for i in range(len(lrs))],
        diverged=[outcomes[lr].diverged for lr in lrs],
        panels=("loss", "grad_norm"),
        log_scale=True,  # a diverging run's loss and gradient norm are orders of magnitude above the rest
        title="learning-rate sweep (x: diverged, stopped there)",
    )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    stable = [(lr, o.final_val_loss) for lr, o in outcomes.items() if not o.diverged]
    if stable:
        ax.plot(*zip(*stable, strict=True), "o-", color="C0", label="final validation loss")
    ceiling = max([loss for _, loss in stable] + [1.0])
    for lr, outcome in outcomes.items():
        if outcome.diverged:
            ax.plot(lr, ceiling * 1.05, "x", color="C3", ms=10, mew=2)
    if any(o.diverged for o in outcomes.values()):
        ax.plot([], [], "x", color="C3", label="diverged (stopped early)")
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("validation loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_dir / "lr_vs_loss.png")
    return {"curves": curves[0].name, "lr_vs_loss": "lr_vs_loss.png"}


def _color(i: int, n: int) -> Any:
    import matplotlib

    return matplotlib.colormaps["viridis"](i / max(n - 1, 1))


def _start_text(results: dict[str, Any]) -> str:
    start = results.get("start_loss")  # absent from sweeps written before the rule
    return "" if start is None else f" ({start:.3f}: ln V or the model's loss at initialization, the higher)"


def _settings_text(results: dict[str, Any]) -> str:
    """Which recipe every rate ran with (preset, config file, --set) and its seed; empty for older results."""
    if "seed" not in results:
        return ""
    return (
        f"Every rate ran {recipe_phrase(results)} once, with seed {results['seed']} (`train.seed`: "
        "the same initialization and batch order for every rate); a difference between two rates smaller than the "
        "spread over seeds (`scratchlm ablate --grid optim.lr=... --seeds N` measures it) is not significant."
    )


def sweep_blocks(results: dict[str, Any], out_dir: Path) -> list:
    rows = []
    for r in results["runs"]:
        final = f"{r['final_val_loss']:.4f}" if r["final_val_loss"] is not None else "-"
        train = f"{r['final_train_loss']:.4f}" if r["final_train_loss"] is not None else "-"
        status = r["status"] + (f": {r['reason']}" if r["reason"] else "")
        rows.append([f"{r['lr']:.3g}", status, f"{r['steps']} / {r['total_steps']}", train, final])
    blocks: list = [Table(["lr", "outcome", "steps run", "final train loss", "final val loss"], rows)]
    best, edge, stable = results["best_lr"], results["smallest_diverged_lr"], results["largest_stable_lr"]
    if len(results["runs"]) == 1:  # nothing to compare: neither a best rate nor an edge of stability
        (only,) = results["runs"]
        blocks.append(
            Paragraph(
                f"Only one rate was tried ({only['lr']:.3g}, {only['status']}): a sweep needs at least two to name "
                "a best rate or an edge of stability."
            )
        )
    elif best is not None:
        text = f"Best learning rate: **{best:.3g}** (final validation loss {results['best_final_val_loss']:.4f})."
        if edge is not None and stable is not None:
            text += (
                f" Edge of stability: {stable:.3g} is the largest rate that trained, {edge:.3g} the smallest that "
                f"diverged; the best rate is {edge / best:.3g}x below the first divergent one."
            )
        elif edge is not None:
            text += f" {edge:.3g} diverged although larger rates trained: check that run's curve."
        else:
            text += " No rate diverged: extend --values upward to find the edge of stability."
        blocks.append(Paragraph(text))
    else:
        blocks.append(Paragraph("Every rate diverged: extend --values downward."))
    settings = _settings_text(results)
    if settings:
        blocks.append(Paragraph(settings))
    blocks += [
        Paragraph(
            f"Divergence: NaN/Inf loss or gradients; at any step, warmup included, a training loss above "
            f"{BLOWUP_FACTOR:g}x the loss the runs start from{_start_text(results)}; or after warmup a training loss "
            f"above {results['explode_factor']:g}x its best so far or more than {UNDONE_MARGIN:.0%} above its first "
            "logged value (such a run is stopped at that row); or, at the end of a run, a last training loss more "
            f"than {UNDONE_MARGIN:.0%} above where it started. Diverged runs are marked with an x."
        ),
        Figure(out_dir / results["figures"]["curves"], "loss and gradient norm per learning rate"),
        Figure(out_dir / results["figures"]["lr_vs_loss"], "final validation loss against learning rate"),
    ]
    if results.get("command"):
        blocks.append(Paragraph(f"Reproduce: `{results['command']}`"))
    return blocks
