"""The commands a report suggests for what it does not hold yet: the causal-mask audit and, for a text run
(the capstone's mini-LM), the ablation and scaling studies, each on the run's own saved recipe and with
paths quoted for a shell."""

from __future__ import annotations

import shlex
from pathlib import Path

from scratchlm.config import RunConfig


def audit_hint(run_dir: Path, config: RunConfig) -> str:
    """How to attach an audit: the Scratch-1 audit for a trajectory run, one of the run's recipe for text."""
    if config.data.kind == "trajectories":
        return (
            "No audit is attached to this report. Run `scratchlm audit causal-mask --preset scratch1 --quick --out "
            "runs/audit` (two runs, with and without the mask) and rebuild the report with `--audit runs/audit`."
        )
    out = _quote(_sibling(run_dir, "audit"))
    return (
        f"No audit is attached to this report. Run `scratchlm audit causal-mask --config {_run_config(run_dir)} "
        f"--out {out}` (two runs of this run's recipe, with and without the mask; add `--set "
        f"{_budget_key(config)}=N` for a shorter pair) and rebuild the report with `--audit {out}`."
    )


def _sibling(run_dir: Path, suffix: str) -> Path:
    """RUN-suffix next to the run directory (runs/NAME -> runs/NAME-suffix)."""
    named = run_dir if run_dir.name else run_dir.resolve()
    return named.parent / f"{named.name}-{suffix}"


def _quote(path: Path) -> str:
    return shlex.quote(path.as_posix())


def _run_config(run_dir: Path) -> str:
    return _quote(run_dir / "config.toml")


def _budget_key(config: RunConfig) -> str:
    """The training budget the run's config sets (a --set of another budget would be refused as a second one)."""
    return "train.max_tokens" if config.train.max_tokens is not None else "train.max_steps"


def _scaling_sizes(config: RunConfig) -> list[str]:
    """Three LAYERSxD_MODEL sizes up to this run's, widths in whole heads of its head size."""
    m = config.model
    head = m.d_model // m.num_heads
    sizes: list[str] = []
    for factor in (0.25, 0.5, 1, 2, 4):
        size = f"{max(1, round(m.num_layers * factor))}x{head * max(1, round(m.num_heads * factor))}"
        if size not in sizes:
            sizes.append(size)
    return sizes[:3]


def next_steps(run_dir: Path, config: RunConfig) -> str:
    """The capstone's ablation and scaling commands on a text run's own recipe."""
    saved = _run_config(run_dir)
    ablate, scaling = _quote(_sibling(run_dir, "ablate")), _quote(_sibling(run_dir, "scaling"))
    return (
        "The capstone's analysis runs on this run's recipe (each command below trains its own runs; add "
        f"`--set {_budget_key(config)}=N` for a shorter budget). Ablations, here normalization type and position: "
        f"`scratchlm ablate --config {saved} --grid model.norm=rmsnorm,layernorm --grid "
        f"model.norm_position=pre,post --seeds 2 --out {ablate}` writes a table and overlaid curves to "
        f"`{ablate}/results.md` (`scratchlm ablate --list` shows the ready-made studies). Scaling analysis: "
        f"`scratchlm scaling --config {saved} --sizes {' '.join(_scaling_sizes(config))} --out {scaling}` trains "
        f"one run per size on this run's token budget and fits a power law to the losses in `{scaling}/results.md`."
    )
