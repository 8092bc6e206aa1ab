"""BPE training speed and memory: corpus.en (vocab 500) and the three TinyStories files (vocab 10000),
with Hugging Face `tokenizers`' BpeTrainer (same GPT-2 regex, same vocabulary size) timed in the same run.

Each TinyStories run is a fresh child process, so its peak RSS (ru_maxrss of the process and of its
pre-tokenization workers) belongs to that run alone; a separate child records the main process's peak
Python allocations with tracemalloc. HF needs the `bench` extra (`pip install -e .[bench]`).

    python benchmarks/bpe_train.py [--repeats 3] [--data ../shared/data] [--out benchmarks/results/bpe_train.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine_info import current_rss_mb, describe_machine, emit, parse_checked, run_main, shared_data_parser

EOT = "<|endoftext|>"
TINYSTORIES = ["tinystories_v1_train_2mib.txt", "tinystories_v2_train_1728.txt", "tinystories_valid_prefix.txt"]
# GPT-2's pattern, spelled out so the HF child does not import scratchlm (and torch, which would inflate its
# RSS); main() checks it equals scratchlm's.
HF_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def child(kind: str, files: list[str], vocab_size: int, workers: int | None) -> dict:
    """One training run in this (fresh) process; returns timings and memory."""
    if kind == "hf":
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

        rss_before = current_rss_mb()
        t_start = time.perf_counter()
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(HF_PATTERN), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tokenizer.add_special_tokens([EOT])  # split the training text at the special token, as ours does
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train(files, trainer)
        seconds = time.perf_counter() - t_start
        size = tokenizer.get_vocab_size()
    else:
        import tracemalloc

        from scratchlm.tokenizers.bpe import train_bpe

        rss_before = current_rss_mb()
        if kind == "ours-tracemalloc":
            tracemalloc.start()
        t_start = time.perf_counter()
        vocab, _ = train_bpe(files, vocab_size, [EOT], num_workers=workers, progress=False)
        seconds = time.perf_counter() - t_start
        size = len(vocab)
        if kind == "ours-tracemalloc":
            _, peak = tracemalloc.get_traced_memory()
            return {"kind": kind, "seconds": seconds, "tracemalloc_peak_mb": peak / 2**20, "vocab": size}
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "kind": kind,
        "seconds": seconds,
        "vocab": size,
        "rss_before_mb": rss_before,
        "peak_rss_mb": self_peak,
        "peak_rss_growth_mb": self_peak - rss_before,
        "workers_peak_rss_mb": workers_peak,
    }


def run_child(kind: str, files: list[str], vocab_size: int, workers: int | None) -> dict:
    argv = [sys.executable, __file__, "--child", kind, "--vocab-size", str(vocab_size), "--files", *files]
    if workers is not None:
        argv += ["--workers", str(workers)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise SystemExit(f"bpe_train.py: the {kind} run failed: {lines[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def hf_available() -> bool:
    """Whether HF `tokenizers` imports here (the `bench` extra); checked in a child, as the HF runs are."""
    probe = subprocess.run([sys.executable, "-c", "import tokenizers"], capture_output=True)
    return probe.returncode == 0


def corpus_en(path: Path, repeats: int) -> dict:
    from scratchlm.tokenizers.bpe import train_bpe

    t_start = time.perf_counter()
    train_bpe(path, 500, [EOT])
    first = time.perf_counter() - t_start
    times = []
    for _ in range(repeats):
        t_start = time.perf_counter()
        vocab, merges = train_bpe(path, 500, [EOT])
        times.append(time.perf_counter() - t_start)
    return {
        "first_call_s": first,
        "min_s": min(times),
        "median_s": statistics.median(times),
        "runs": len(times),
        "vocab": len(vocab),
        "first_merges": [[a.decode("latin-1"), b.decode("latin-1")] for a, b in merges[:5]],
    }


def main() -> None:
    parser = shared_data_parser(
        __doc__.splitlines()[0], repeats=3, repeats_help="TinyStories runs per trainer (corpus.en: 10x)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--vocab-size", type=int, default=10000, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    args = parse_checked(parser)
    if args.child:
        print(json.dumps(child(args.child, args.files, args.vocab_size, args.workers)))
        return

    from scratchlm.tokenizers.pretokenize import GPT2_PATTERN

    assert HF_PATTERN == GPT2_PATTERN, "the HF trainer must use the same pre-tokenization regex"
    files = [args.data / "text" / name for name in ["corpus.en", *TINYSTORIES]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(
            f"bpe_train.py: no {', '.join(missing)}; pass --data DIR, the shared data directory (its text/ "
            "holds corpus.en and the TinyStories excerpts)."
        )
    with_hf = hf_available()
    if not with_hf:
        print("bpe_train.py: HF tokenizers is not installed (pip install -e '.[bench]'); timing ours alone")
    machine = describe_machine()
    small = corpus_en(args.data / "text" / "corpus.en", 10 * args.repeats)
    files = [str(args.data / "text" / name) for name in TINYSTORIES]
    total_mb = sum(os.path.getsize(f) for f in files) / 1e6
    runs: dict[str, list[dict]] = {"ours": [], "ours_1proc": [], **({"hf": []} if with_hf else {})}
    for _ in range(args.repeats):  # interleaved, so background load affects all three alike
        runs["ours"].append(run_child("ours", files, 10000, None))
        runs["ours_1proc"].append(run_child("ours", files, 10000, 1))
        if with_hf:
            runs["hf"].append(run_child("hf", files, 10000, None))
    traced = run_child("ours-tracemalloc", files, 10000, None)

    def summary(rows: list[dict]) -> dict:
        seconds = [r["seconds"] for r in rows]
        return {
            "min_s": min(seconds),
            "median_s": statistics.median(seconds),
            "runs": seconds,
            "vocab": rows[0]["vocab"],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
            "peak_rss_growth_mb": max(r["peak_rss_growth_mb"] for r in rows),
            "workers_peak_rss_mb": max(r["workers_peak_rss_mb"] for r in rows),
        }

    tiny = {name: summary(rows) for name, rows in runs.items()}
    tiny["ours"]["tracemalloc_peak_mb"] = traced["tracemalloc_peak_mb"]
    result = {
        "benchmark": "bpe_train",
        "device": "cpu",
        "machine": machine,
        "load_average_1m_end": round(os.getloadavg()[0], 2),
        "corpus_en_vocab500": small,
        "tinystories_vocab10000": {"input_mb": total_mb, "files": TINYSTORIES, **tiny},
    }
    if with_hf:
        result["ratio_ours_to_hf_median"] = tiny["ours"]["median_s"] / tiny["hf"]["median_s"]
        result["ratio_ours_to_hf_min"] = tiny["ours"]["min_s"] / tiny["hf"]["min_s"]
    print(f"machine: {machine['cpu']}, {machine['usable_cpus']} usable CPUs, load {machine['load_average_1m']}")
    print(
        f"corpus.en vocab 500: min {small['min_s']:.3f} s, median {small['median_s']:.3f} s "
        f"(first call {small['first_call_s']:.3f} s; CS336 bound 1.5 s, reference 0.38 s)"
    )
    print(f"TinyStories x3 ({total_mb:.2f} MB), vocab 10000:")
    print(
        f"  {'trainer':12s} {'min s':>7s} {'median s':>9s} {'peak RSS MB':>12s} {'growth MB':>10s} {'workers MB':>11s}"
    )
    for name, row in tiny.items():
        print(
            f"  {name:12s} {row['min_s']:7.3f} {row['median_s']:9.3f} {row['peak_rss_mb']:12.0f} "
            f"{row['peak_rss_growth_mb']:10.0f} {row['workers_peak_rss_mb']:11.0f}"
        )
    ratio = f"ours / HF (median): {result['ratio_ours_to_hf_median']:.2f}x; " if with_hf else ""
    print(f"  {ratio}main-process tracemalloc peak {traced['tracemalloc_peak_mb']:.1f} MB")
    emit(result, args.out)


if __name__ == "__main__":
    run_main(main)
