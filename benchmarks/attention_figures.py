"""Wall time of the attention figures (plot_attention_maps + plot_layer_means), before and after, side by side.

"before" is src/scratchlm/analysis/attention.py as git has it at --baseline (default HEAD), loaded from
`git show` into a module of its own; "after" is the working tree's. Both draw the same maps with the same
labels, alternating call by call so that load on the machine hits both alike; one untimed warm-up of each
first (matplotlib's imports and font cache), then the median of --repeats. Cases, by model shape:

- debug-2x2: 2 layers x 2 heads, 64 positions, action-id labels (a debug trajectory run);
- scratch1-quick-4x4: 4 x 4, 50 positions, action-id labels;
- text-2x4: 2 x 4, 64 positions, word-piece labels of up to 10 characters (a text run with `--prompt`);
- tinystories-4x16: 4 x 16, 256 positions, word-piece labels (the widest grid a preset gives; not in the
  default --cases: its "before" alone takes two minutes on a 2-core CPU).

The maps are synthetic but shaped like trained ones (causal; previous-token, first-token and spread heads),
so the figures are worth looking at: --figures DIR keeps every PNG, named <case>_<version>[_mean].png.
Prints a table, then one JSON line; --out writes the JSON to a file.

    python benchmarks/attention_figures.py [--repeats 3] [--cases A,B] [--figures DIR] [--out results/X.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import matplotlib
import torch

from machine_info import describe_machine, emit, require, run_main
from scratchlm.analysis import attention as after_module
from scratchlm.analysis.attention_runs import _printable

MODULE = "src/scratchlm/analysis/attention.py"
CASES = {  # name: (layers, heads, positions, label kind)
    "debug-2x2": (2, 2, 64, "actions"),
    "scratch1-quick-4x4": (4, 4, 50, "actions"),
    "text-2x4": (2, 4, 64, "text"),
    "tinystories-4x16": (4, 16, 256, "text"),
}
DEFAULT_CASES = ("debug-2x2", "scratch1-quick-4x4", "text-2x4")
PASSAGE = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.\n"
    'One day, her mother said: "Lily, please don\'t go near the riverbank!" Lily nodded, but curiosity won. '
    "Unfortunately the grass was slippery; she tumbled, laughed, and climbed back up, extraordinarily muddy.\n"
)


def baseline_module(ref: str) -> types.ModuleType:
    """The attention module as committed at `ref`, importable alongside the working tree's."""
    root = Path(__file__).resolve().parent.parent
    try:
        source = subprocess.run(
            ["git", "show", f"{ref}:{MODULE}"], cwd=root, check=True, capture_output=True, text=True
        ).stdout
    except subprocess.CalledProcessError as exc:
        require(False, f"--baseline {ref}: git cannot show {MODULE} there ({exc.stderr.strip()}).")
    module = types.ModuleType(f"attention_at_{ref}")
    module.__file__ = f"{ref}:{MODULE}"
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def synthetic_maps(layers: int, heads: int, seq: int, seed: int = 0) -> torch.Tensor:
    """(L, H, T, T) causal softmax maps with the structure trained models show, varying by head."""
    gen = torch.Generator().manual_seed(seed)
    query_T1 = torch.arange(seq).unsqueeze(-1)
    key_1T = torch.arange(seq).unsqueeze(0)
    maps = []
    for layer in range(layers):
        for head in range(heads):
            scores = torch.randn(seq, seq, generator=gen) * (0.5 + head % 3)
            kind = (layer + head) % 4
            if kind == 0:
                scores += 6.0 * (key_1T == query_T1 - 1)  # previous token
            elif kind == 1:
                scores += 5.0 * (key_1T == 0)  # first token
            elif kind == 2:
                scores -= 0.3 * (query_T1 - key_1T).clamp(min=0)  # recency
            scores = scores.masked_fill(key_1T > query_T1, float("-inf"))
            maps.append(scores.softmax(-1))
    return torch.stack(maps).reshape(layers, heads, seq, seq)


def case_labels(kind: str, seq: int) -> list[str]:
    if kind == "actions":
        gen = torch.Generator().manual_seed(1)
        return [str(i) for i in torch.randint(0, 256, (seq,), generator=gen).tolist()]
    # Word pieces as a BPE text run prints them: leading space as '·', newline as '\n', at most 10 characters.
    pieces: list[str] = []
    for line in PASSAGE.splitlines(keepends=True):
        for i, word in enumerate(line.split(" ")):
            pieces.append(_printable(("" if i == 0 else " ") + word.rstrip("\n")))
            if word.endswith("\n"):
                pieces.append(_printable("\n"))
    return (pieces * (seq // len(pieces) + 1))[:seq]


def timed(draw: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    draw(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case and version (default 3)")
    parser.add_argument("--baseline", default="HEAD", help="git revision whose attention.py is 'before'")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--figures", help="keep the PNGs in this folder (default: a temporary one, removed)")
    parser.add_argument("--out", help="write the JSON results here")
    args = parser.parse_args()
    require(args.repeats >= 1, f"--repeats must be at least 1, got {args.repeats}.")
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    require(not unknown, f"--cases: unknown {', '.join(unknown)}; pick from {', '.join(CASES)}.")
    matplotlib.use("Agg")
    versions = {"before": baseline_module(args.baseline), "after": after_module}
    scratch = tempfile.TemporaryDirectory() if args.figures is None else None
    folder = Path(args.figures) if args.figures is not None else Path(scratch.name)
    folder.mkdir(parents=True, exist_ok=True)
    load_at_start = round(os.getloadavg()[0], 2)
    rows = []
    try:
        for name in names:
            layers, heads, seq, kind = CASES[name]
            maps, labels = synthetic_maps(layers, heads, seq), case_labels(kind, seq)
            title = f"{name}: attention on a synthetic sequence"
            seconds: dict[str, dict[str, list[float]]] = {v: {"grid": [], "means": []} for v in versions}
            for i in range(args.repeats + 1):  # call 0 is the untimed warm-up
                for version, module in versions.items():
                    stem = folder / f"{name}_{version}"
                    grid = timed(module.plot_attention_maps, maps, labels, stem.with_suffix(".png"), title)
                    means = timed(module.plot_layer_means, maps, labels, Path(f"{stem}_mean.png"), title)
                    if i > 0:
                        seconds[version]["grid"].append(grid)
                        seconds[version]["means"].append(means)
            row: dict = {"case": name, "layers": layers, "heads": heads, "positions": seq, "labels": kind}
            for version in versions:
                for figure in ("grid", "means"):
                    row[f"{version}_{figure}_s"] = round(statistics.median(seconds[version][figure]), 4)
                totals = [g + m for g, m in zip(seconds[version]["grid"], seconds[version]["means"], strict=True)]
                row[f"{version}_total_s"] = round(statistics.median(totals), 4)
            row["speedup"] = round(row["before_total_s"] / row["after_total_s"], 2)
            rows.append(row)
    finally:
        if scratch is not None:
            scratch.cleanup()
    header = f"{'case':20s} {'before grid':>11s} {'means':>7s} {'total':>7s} {'after grid':>11s} {'means':>7s}"
    print(f"{header} {'total':>7s} {'speedup':>8s}")
    for r in rows:
        print(
            f"{r['case']:20s} {r['before_grid_s']:11.3f} {r['before_means_s']:7.3f} {r['before_total_s']:7.3f} "
            f"{r['after_grid_s']:11.3f} {r['after_means_s']:7.3f} {r['after_total_s']:7.3f} {r['speedup']:7.2f}x"
        )
    result = {
        "benchmark": "attention_figures",
        "device": "cpu",
        "machine": {**describe_machine(), "load_average_1m_at_start": load_at_start},
        "matplotlib": matplotlib.__version__,
        "baseline": args.baseline,
        "repeats": args.repeats,
        "seconds": "median wall time of one call; total = median of grid + means per repeat",
        "rows": rows,
    }
    emit(result, args.out)


if __name__ == "__main__":
    run_main(main)
