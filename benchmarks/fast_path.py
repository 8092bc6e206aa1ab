"""The GPU fast path, measured: throughput and MFU by variant, a profile, Scratch-1 epochs, Shakespeare time-to-loss.

    python benchmarks/fast_path.py --sections env,train,profile,scratch1 --out DIR
    python benchmarks/fast_path.py --sections shakespeare --shakespeare PATH/input.txt --out DIR
    python benchmarks/fast_path.py --cpu-smoke --sections train,scratch1 --out /tmp/smoke   # no GPU needed

Sections (each writes DIR/<section>.json and adds rows to the summary printed last: a table per section,
then the same rows as JSON lines; every JSON written is strict, a value that is not finite being null):
- env: the device, PyTorch, and the two ceilings measured here: a large bf16 matmul (TFLOP/s on random
  data) and a device-to-device copy (GB/s, bytes read + written).
- train: `scratchlm bench train`'s measurement (random tokens, the real train_step) of the tinystories-17m
  preset at batch 128 (and 256), for the reference path and the fast path, eager and compiled; MFU against
  the datasheet bf16 peak (989 TFLOP/s dense on an H100 SXM) with FLOPs per token = 6N + 12·L·H·Q·T.
- profile: torch.profiler over steps of the fastest compiled variant: the top CUDA kernels by time, and
  whether the flash-attention kernel ran.
- scratch1: the scratch1 preset on the course's 10,000 trajectories (generated here, seed 42): seconds per
  epoch of training steps (9,000 training trajectories, batch 32), then a whole 10-epoch run's validation.
- shakespeare: the shakespeare-char preset (nanoGPT's recipe) trained on the fast path; the wall time from
  the start of the process's training call, compilation included, to the first validation <= 1.47.
- shakespeare-search: --search candidates (";"-joined overrides) train side by side; the best is then
  trained alone, timed, once per --final compile setting.
--only SUBSTRING keeps just the matching variants; --cpu-smoke runs every code path tiny on the CPU (its
numbers check the script, they measure nothing; env needs a GPU and is skipped there). Without --cpu-smoke
the script needs CUDA and says so. Every variant runs in its own try block: a failure is recorded and the
others still run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from machine_info import strict_json
from scratchlm.config import RunConfig
from scratchlm.presets import resolve_tables
from scratchlm.train.bench import benchmark_training

ROWS: list[dict[str, Any]] = []
SHAKESPEARE_SMOKE: list[str] = []
ONLY: list[str] = []  # --only: run just the variants whose label contains one of these


def selected(label: str) -> bool:
    return not ONLY or any(part in label for part in ONLY)


DEVICE = torch.device("cuda")
SMOKE_SETS: list[str] = []  # --cpu-smoke: tiny budgets on the CPU, to check this script before a lease


def config_for(preset: str, overrides: list[str]) -> RunConfig:
    return RunConfig.from_tables(resolve_tables(preset, None, [*overrides, *SMOKE_SETS]))


def save(out: Path, name: str, payload: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(strict_json(payload, indent=2, default=str) + "\n")


def guarded(label: str, fn: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:  # record and go on: one broken variant must not cost the whole lease
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
    result["label"] = label
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    print(strict_json(result, default=str), flush=True)
    return result


# --------------------------------------------------------------------------------------------------- env


def section_env(out: Path) -> None:
    dev = torch.device("cuda")
    info: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "sms": torch.cuda.get_device_properties(dev).multi_processor_count,
    }
    n = 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    info["matmul_bf16_tflops"] = round(2 * n**3 / sorted(times)[len(times) // 2] / 1e12, 1)
    x = torch.randn(1 << 30, device=dev, dtype=torch.bfloat16)  # 2 GiB
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        start.record()
        y.copy_(x)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    info["copy_gb_s"] = round(2 * x.numel() * 2 / sorted(times)[len(times) // 2] / 1e9, 1)
    del a, b, x, y
    torch.cuda.empty_cache()
    save(out, "env", info)
    ROWS.append({"section": "env", **info})


# ------------------------------------------------------------------------------------------------- train

RO = "train.compile_mode=reduce-overhead"
TRAIN_VARIANTS: list[tuple[str, list[str]]] = [
    ("reference, eager", ["model.fast=false"]),
    ("reference, compiled (model)", ["model.fast=false", "train.compile=true", "train.compile_scope=model"]),
    ("fast, compiled (model)", ["model.fast=true", "train.compile=true", "train.compile_scope=model"]),
    (
        "fast, compiled (model) + CUDA graphs",
        ["model.fast=true", "train.compile=true", "train.compile_scope=model", RO],
    ),
    (
        "fast, compiled (blocks) + CUDA graphs",
        ["model.fast=true", "train.compile=true", "train.compile_scope=blocks", RO],
    ),
]


def section_train(out: Path, preset: str, batches: list[int], steps: int) -> None:
    results = []
    for batch in batches:
        for label, overrides in TRAIN_VARIANTS:
            if (batch != batches[0] and "CUDA graphs" not in label) or not selected(label):
                continue
            sets = [*overrides, f"train.batch_size={batch}", f"train.max_steps={steps + 3}"]

            def run(sets: list[str] = sets) -> dict[str, Any]:
                torch._dynamo.reset()
                return benchmark_training(config_for(preset, sets), steps=steps, warmup=3)

            r = guarded(f"{preset} b{batch}: {label}", run)
            r["batch_size"] = batch
            results.append(r)
            if DEVICE.type == "cuda":
                torch.cuda.empty_cache()
            ROWS.append(
                {
                    "section": "train",
                    **{
                        k: r.get(k)
                        for k in ("label", "tokens_per_s", "ms_per_step", "mfu", "compile_s", "peak_memory_gb", "error")
                    },
                }
            )
    save(out, "train", {"preset": preset, "steps": steps, "results": results})


# ----------------------------------------------------------------------------------------------- profile


def section_profile(out: Path, preset: str, batch: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    from scratchlm.train.bench import bench_run, timed_steps

    def run() -> dict[str, Any]:
        torch._dynamo.reset()
        sets = ["model.fast=true", "train.compile=true", "train.compile_scope=model", f"train.batch_size={batch}"]
        r = bench_run(config_for(preset, [*sets, "train.max_steps=20"]), total_steps=20)
        timed_steps(r, 5)  # compilation and warm-up stay out of the profile
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            timed_steps(r, 5)
        events = prof.key_averages()
        kernels = sorted(
            (
                {"name": e.key[:110], "cuda_ms_per_step": e.device_time_total / 1e3 / 5, "calls_per_step": e.count / 5}
                for e in events
                if e.device_time_total > 0
            ),
            key=lambda k: -k["cuda_ms_per_step"],
        )
        table = events.table(sort_by="device_time_total", row_limit=30, max_name_column_width=90)
        out.mkdir(parents=True, exist_ok=True)
        (out / "profile_table.txt").write_text(table)
        flash = [k["name"] for k in kernels if "flash" in k["name"].lower()]
        return {"top_kernels": kernels[:25], "flash_kernels": flash, "flash_selected": bool(flash)}

    r = guarded(f"profile {preset} b{batch} fast, compiled (model)", run)
    save(out, "profile", r)
    ROWS.append(
        {"section": "profile", "label": r["label"], "flash_selected": r.get("flash_selected"), "error": r.get("error")}
    )


# ---------------------------------------------------------------------------------------------- scratch1


def section_scratch1(out: Path) -> None:
    from scratchlm.train.bench import bench_run, timed_steps
    from scratchlm.train.datasets import build_training_data
    from scratchlm.train.distributed import DistInfo
    from scratchlm.train.trainer import train

    pkl = Path("/tmp/scratchlm-bench/trajectories.pkl")
    if not pkl.exists():
        subprocess.run([sys.executable, "-m", "scratchlm", "data", "trajectories", "--out", str(pkl)], check=True)
    model_ro = ["model.fast=true", "train.compile=true", "train.compile_scope=model", RO]
    variants = [
        ("reference, eager, b32", ["model.fast=false", "train.batch_size=32"]),
        ("fast, compiled (model) + CUDA graphs, b32", [*model_ro, "train.batch_size=32"]),
        (
            "fast, compiled (blocks) + CUDA graphs, b32",
            ["model.fast=true", "train.compile=true", RO, "train.batch_size=32"],
        ),
        ("fast, compiled (model) + CUDA graphs, b128", [*model_ro, "train.batch_size=128"]),
    ]
    results = []
    for label, sets in variants:
        if not selected(label):
            continue

        def run(sets: list[str] = sets) -> dict[str, Any]:
            torch._dynamo.reset()
            config = config_for("scratch1", [*sets, f"data.path={pkl}"])
            data = build_training_data(config, DEVICE, DistInfo())
            per_epoch = data.batches_per_epoch
            r = bench_run(config, 3 * per_epoch, data)
            first = timed_steps(r, per_epoch)  # epoch 1: warm-up, compilation, graph capture
            epoch_s = timed_steps(r, per_epoch)
            return {
                "steps_per_epoch": per_epoch,
                "first_epoch_s": round(first, 3),
                "epoch_s": round(epoch_s, 3),
                "ms_per_step": round(epoch_s / per_epoch * 1e3, 3),
            }

        r = guarded(f"scratch1 epoch: {label}", run)
        results.append(r)
        ROWS.append(
            {
                "section": "scratch1",
                **{k: r.get(k) for k in ("label", "epoch_s", "ms_per_step", "first_epoch_s", "error")},
            }
        )

    def full_run(sets: list[str]) -> dict[str, Any]:
        torch._dynamo.reset()
        smoke = ["train.epochs=0.05"] if DEVICE.type == "cpu" else []
        config = config_for("scratch1", [*sets, f"data.path={pkl}", "train.progress=false", *smoke])
        run_dir = Path(f"/tmp/scratchlm-bench/scratch1-{int(time.time() * 1e3)}")
        t0 = time.perf_counter()
        summary = train(config, run_dir)
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        evals = [row for row in rows if "val_loss" in row]
        return {
            "wall_s": round(time.perf_counter() - t0, 2),
            "final_val_loss": evals[-1]["val_loss"],
            "best_val_loss": min(e["val_loss"] for e in evals),
            "summary_keys": sorted(summary),
        }

    for label, sets in [
        ("scratch1 10 epochs: fast, compiled (model) + CUDA graphs, b32 (course recipe)", model_ro),
        ("scratch1 10 epochs: same, b128, lr 4e-4", [*model_ro, "train.batch_size=128", "optim.lr=4e-4"]),
    ]:
        if not selected(label):
            continue
        r = guarded(label, lambda sets=sets: full_run(sets))
        results.append(r)
        ROWS.append(
            {
                "section": "scratch1",
                **{k: r.get(k) for k in ("label", "wall_s", "final_val_loss", "best_val_loss", "error")},
            }
        )
    save(out, "scratch1", results)


# ------------------------------------------------------------------------------------------- shakespeare


def shakespeare_data(text: Path) -> Path:
    """The char-tokenized corpus of `text`, cached per file content (another text gets its own folder)."""
    digest = hashlib.sha256(Path(text).read_bytes()).hexdigest()[:12]
    data_dir = Path(f"/tmp/scratchlm-bench/shakespeare-char-{digest}")
    if not (data_dir / "meta.json").exists():
        cmd = [sys.executable, "-m", "scratchlm", "data", "text", "--input", str(text), "--tokenizer", "char"]
        subprocess.run([*cmd, "--out", str(data_dir)], check=True)
    return data_dir


def section_shakespeare(out: Path, text: Path, overrides: list[str], stop_after: int) -> None:
    from scratchlm.train.trainer import train

    data_dir = shakespeare_data(text)

    def run() -> dict[str, Any]:
        torch._dynamo.reset()
        config = config_for("shakespeare-char", [f"data.path={data_dir}", "train.progress=false", *overrides])
        run_dir = Path(f"/tmp/scratchlm-bench/shakespeare-{os.getpid()}-{int(time.time() * 1e3)}")
        t0 = time.perf_counter()
        evals: list[dict[str, Any]] = []

        def monitor(row: dict[str, Any]) -> None:
            if "val_loss" in row:
                evals.append(
                    {
                        "step": row["step"],
                        "val_loss": round(row["val_loss"], 4),
                        "wall_s": round(time.perf_counter() - t0, 2),
                        "tokens_per_s": row.get("tokens_per_s"),
                    }
                )
                print(evals[-1], flush=True)
            return None

        train(config, run_dir, stop_after=stop_after, monitor=monitor)
        reached = next((e for e in evals if e["val_loss"] <= 1.47), None)
        return {
            "overrides": overrides,
            "evals": evals,
            "first_at_or_below_1.47": reached,
            "best": min(evals, key=lambda e: e["val_loss"]),
            "total_wall_s": round(time.perf_counter() - t0, 2),
        }

    r = guarded(f"shakespeare-char {' '.join(overrides)}", run)
    save(out, f"shakespeare-{len(list(out.glob('shakespeare-*.json')))}", r)
    ROWS.append(
        {
            "section": "shakespeare",
            "label": r["label"],
            "reached": r.get("first_at_or_below_1.47"),
            "best": r.get("best"),
            "error": r.get("error"),
        }
    )


def section_shakespeare_search(out: Path, text: Path, candidates: list[str], finals: list[str]) -> None:
    """Candidates train side by side (their timings are not clean: they share the GPU); the one that first
    reaches <= 1.47 (else the lowest loss) is then trained alone once per compile setting in `finals`, timed."""
    shakespeare_data(text)  # once, before the candidates start side by side
    for i in range(len(candidates)):  # a warm machine keeps /tmp: never read an earlier call's results
        shutil.rmtree(f"/tmp/scratchlm-bench/search-{i}", ignore_errors=True)
    procs = []
    for i, candidate in enumerate(candidates):
        sets = [arg for item in candidate.split(";") for arg in ("--shakespeare-set", item)]
        cmd = [sys.executable, __file__, "--sections", "shakespeare", "--shakespeare", str(text), "--out"]
        cmd += [f"/tmp/scratchlm-bench/search-{i}", "--stop-after", "100000", *sets]
        cmd += ["--cpu-smoke"] if DEVICE.type == "cpu" else []
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    found = []
    for i, (candidate, proc) in enumerate(zip(candidates, procs, strict=True)):
        proc.wait()
        path = Path(f"/tmp/scratchlm-bench/search-{i}/shakespeare-0.json")
        result = json.loads(path.read_text()) if path.exists() else {"error": f"exit {proc.returncode}"}
        found.append({"candidate": candidate, **result})
        print(
            strict_json(
                {"candidate": candidate, "best": result.get("best"), "reached": result.get("first_at_or_below_1.47")}
            ),
            flush=True,
        )

    def rank(r: dict[str, Any]) -> tuple[float, float]:
        reached = r.get("first_at_or_below_1.47")
        return (reached["step"] if reached else float("inf"), (r.get("best") or {}).get("val_loss", float("inf")))

    chosen = min(found, key=rank)["candidate"]
    save(
        out,
        "shakespeare-search",
        {
            "note": "candidates ran concurrently on one GPU: their wall times are not clean",
            "runs": found,
            "chosen": chosen,
        },
    )
    smoke = SHAKESPEARE_SMOKE if DEVICE.type == "cpu" else []
    for final in finals:
        sets = ["model.fast=true", "train.compile=true", *chosen.split(";"), *final.split(";"), *smoke]
        section_shakespeare(out, text, sets, 6 if smoke else 100000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="env,train,profile,scratch1", help="comma-separated (see Sections above)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("OUT", "benchmarks/results/fast_path")),
        help="directory for the JSON files (default $OUT, else benchmarks/results/fast_path)",
    )
    parser.add_argument("--preset", default="tinystories-17m", help="train and profile sections' preset")
    parser.add_argument("--batches", default="128,256", help="train section's batch sizes (the first: profile's)")
    parser.add_argument("--steps", type=int, default=30, help="train section's timed steps, after 3 warm-up")
    parser.add_argument("--shakespeare", type=Path, help="Tiny Shakespeare input.txt")
    parser.add_argument(
        "--shakespeare-set", action="append", default=[], help="override for the shakespeare run (repeatable)"
    )
    parser.add_argument("--stop-after", type=int, default=2500)
    parser.add_argument("--search", action="append", default=[], help="shakespeare-search candidate: a;b;c overrides")
    parser.add_argument("--final", action="append", default=[], help="shakespeare-search final compile setting")
    parser.add_argument("--only", action="append", default=[], help="run only variants whose label has this")
    parser.add_argument("--cpu-smoke", action="store_true", help="run every code path tiny on the CPU")
    args = parser.parse_args()
    sections = args.sections.split(",")
    known = ["env", "train", "profile", "scratch1", "shakespeare", "shakespeare-search"]
    unknown = [name for name in sections if name not in known]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; the sections are {', '.join(known)}")
    if {"shakespeare", "shakespeare-search"} & set(sections) and args.shakespeare is None:
        parser.error("the shakespeare sections need --shakespeare PATH (Tiny Shakespeare's input.txt)")
    if "shakespeare-search" in sections and not args.search:
        parser.error("the shakespeare-search section needs at least one --search CANDIDATE (';'-joined overrides)")
    if args.cpu_smoke:
        global DEVICE
        DEVICE = torch.device("cpu")
        SMOKE_SETS.extend(["train.device=cpu", "model.num_layers=1", "model.d_model=64", "model.num_heads=2"])
        args.steps, args.batches, args.stop_after = 2, "4", 6
        SHAKESPEARE_SMOKE.extend(
            ["train.batch_size=4", "train.eval_interval=3", "train.eval_batches=2", "model.context_length=32"]
        )
        args.shakespeare_set = [
            *args.shakespeare_set,
            "train.batch_size=4",
            "train.eval_interval=3",
            "train.eval_batches=2",
            "model.context_length=32",
        ]
    elif not torch.cuda.is_available():
        sys.exit("fast_path.py measures the GPU fast path; no CUDA device is visible.")
    torch.backends.cuda.matmul.allow_tf32 = True
    ONLY.extend(args.only)
    if "env" in sections and DEVICE.type == "cuda":
        section_env(args.out)
    if "train" in sections:
        section_train(args.out, args.preset, [int(b) for b in args.batches.split(",")], args.steps)
    if "profile" in sections:
        section_profile(args.out, args.preset, int(args.batches.split(",")[0]))
    if "scratch1" in sections:
        section_scratch1(args.out)
    if "shakespeare" in sections:
        section_shakespeare(
            args.out,
            args.shakespeare,
            ["model.fast=true", "train.compile=true", *args.shakespeare_set],
            args.stop_after,
        )
    if "shakespeare-search" in sections:
        section_shakespeare_search(args.out, args.shakespeare, args.search, args.final)
    print("\n== summary ==")
    print_tables(ROWS)
    for row in ROWS:
        print(strict_json(row, default=str))


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, dict):
        return " ".join(f"{k}={cell(v)}" for k, v in value.items())
    return str(value)


def print_tables(rows: list[dict[str, Any]]) -> None:
    """One fixed-width table per section, its columns the keys its rows have (error last, when any)."""
    for section in dict.fromkeys(r["section"] for r in rows):
        mine = [r for r in rows if r["section"] == section]
        keys = [k for k in dict.fromkeys(k for r in mine for k in r) if k not in ("section", "error")]
        if any(r.get("error") for r in mine):
            keys.append("error")
        table = [keys, *([cell(r.get(k)) for k in keys] for r in mine)]
        widths = [max(len(line[i]) for line in table) for i in range(len(keys))]
        print(f"[{section}]")
        for line in table:
            print("  " + "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
