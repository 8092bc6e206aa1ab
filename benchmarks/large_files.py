"""Memory on large inputs: a 2 GB token file through the data loader, a 1 GB text file through the tokenizer.

Each operation runs in a fresh child process (this script with `--measure NAME`), so its peak resident
memory is its own. Reported per operation: wall seconds; baseline RSS after imports; peak RSS (VmHWM);
peaks of anonymous memory (the heap: what the process itself holds) and of file-backed pages (memmap
pages of the token file, which the kernel can drop at any time), sampled every 5 ms; and the largest
worker process for `data text` with worker processes.

Operations:
- token_open_sampled / token_open_full: `load_token_file` checking evenly spaced blocks / every id.
- token_windows / get_batch: random (64 x 1024) training windows from the memmap via `TokenWindows`
  (what the trainer draws) and the CS336 `get_batch`.
- text_encode_iterable: `Tokenizer.encode_iterable` over the file's lines, ids counted and dropped.
- text_prepare_1_worker / text_prepare_2_workers: `prepare_text_corpus` (= `scratchlm data text`) with a
  saved tokenizer, writing train.bin / val.bin.

    python benchmarks/large_files.py [--token-gb 2] [--text-gb 1] [--dir /tmp] [--only NAME ...] [--out FILE.json]

Prints one line per operation as it finishes, a table at the end, then the JSON.

The files are synthetic (uniform random ids below 50257; text lines drawn from a fixed set of random
words) and are deleted at the end. Two earlier results are kept beside the current one for comparison:
`*-before-pread-windows.json` (training windows read through the memmap: peak RSS about the whole 2 GB file)
and `*-before-piecewise-encode-190mb.json` (each 32 MB task range encoded in one call, on a 190 MB text).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from machine_info import describe_machine, emit, require, run_main

VOCAB = 50257
BATCHES = 2000
BATCH, CONTEXT = 64, 1024
EOT = "<|endoftext|>"
OPERATIONS = [
    "token_open_sampled",
    "token_open_full",
    "token_windows",
    "get_batch",
    "text_encode_iterable",
    "text_prepare_1_worker",
    "text_prepare_2_workers",
]


# ------------------------------------------------------------------------------------- making the inputs


def write_token_file(path: Path, gigabytes: float) -> int:
    """Uniform random uint16 ids in 64 MB chunks; returns the token count."""
    total = int(gigabytes * 1e9) // 2
    rng = np.random.default_rng(0)
    chunk = 32 << 20
    with open(path, "wb") as fh:
        for start in range(0, total, chunk):
            fh.write(rng.integers(0, VOCAB, size=min(chunk, total - start), dtype=np.uint16).tobytes())
    return total


def write_text_file(path: Path, gigabytes: float) -> int:
    """Lines of random words (a 5000-word vocabulary), a document separator every ~40 lines; returns bytes."""
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=rng.integers(2, 10))) for _ in range(5000)]
    lines = []
    for _ in range(20000):
        line = " ".join(words[i] for i in rng.integers(0, len(words), size=rng.integers(3, 20)))
        lines.append(line.capitalize() + ".\n")
    lines += [EOT + "\n"] * 500
    block = "".join(lines).encode("utf-8")
    target = int(gigabytes * 1e9)
    written = 0
    with open(path, "wb") as fh:
        while written < target:
            order = rng.permutation(len(lines))
            piece = "".join(lines[i] for i in order).encode("utf-8")[: target - written]
            cut = piece.rfind(b"\n") + 1 if written + len(piece) < target else len(piece)
            fh.write(piece[:cut])
            written += cut
    del block
    return written


def train_tokenizer(text: Path, out: Path) -> None:
    """A 4096-id BPE trained on the first 4 MB of the text."""
    from scratchlm.tokenizers import Tokenizer, train_bpe

    sample = out.parent / "sample.txt"
    with open(text, "rb") as fh:
        head = fh.read(4 << 20)
    sample.write_bytes(head[: head.rfind(b"\n") + 1])
    vocab, merges = train_bpe(sample, 4096, [EOT], progress=False)
    Tokenizer(vocab, merges, [EOT]).save(out)
    sample.unlink()


# ------------------------------------------------------------------------------------- measuring


class MemorySampler:
    """Peak RssAnon and RssFile of this process, sampled from /proc/self/status every 5 ms."""

    def __init__(self) -> None:
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        with open("/proc/self/status") as fh:
            for line in fh:
                key = line.split(":", 1)[0]
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], int(line.split()[1]))  # kB

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self._sample()


def status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":")) / 1024


def measure(name: str, paths: dict[str, str]) -> dict:
    """Run operation `name` in this process and describe its time and memory."""
    import torch

    from scratchlm.data.text import prepare_text_corpus
    from scratchlm.data.token_files import load_token_file
    from scratchlm.data.tokens import get_batch
    from scratchlm.tokenizers import load_tokenizer
    from scratchlm.train.sources import TokenWindows

    torch.set_num_threads(1)
    tokens_path, text_path, tokenizer_dir = paths["tokens"], paths["text"], paths["tokenizer"]
    tokenizer = load_tokenizer(tokenizer_dir) if name.startswith("text") else None
    baseline = status_mb("VmRSS")
    result: dict = {}
    t_start = time.perf_counter()
    with MemorySampler() as sampler:
        if name == "token_open_sampled":
            result["tokens"] = len(load_token_file(tokens_path, VOCAB))
        elif name == "token_open_full":
            result["tokens"] = len(load_token_file(tokens_path, VOCAB, full_check=True))
        elif name == "token_windows":
            source = TokenWindows(load_token_file(tokens_path, VOCAB), BATCH, CONTEXT, torch.device("cpu"), seed=0)
            for _ in range(BATCHES):
                source.next_batch()
            result["batches"] = BATCHES
        elif name == "get_batch":
            tokens, rng = load_token_file(tokens_path, VOCAB), np.random.default_rng(0)
            for _ in range(BATCHES):
                get_batch(tokens, BATCH, CONTEXT, "cpu", rng)
            result["batches"] = BATCHES
        elif name == "text_encode_iterable":
            assert tokenizer is not None
            with open(text_path, encoding="utf-8") as fh:
                result["tokens"] = sum(1 for _ in tokenizer.encode_iterable(fh))
        elif name.startswith("text_prepare"):
            workers = 1 if name.endswith("1_worker") else 2
            out = Path(paths["scratch"]) / name
            meta = prepare_text_corpus(
                text_path, out, tokenizer_dir, val_fraction=0.01, num_workers=workers, progress=False
            )
            result["tokens"] = meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"]
            shutil.rmtree(out)
        else:
            raise SystemExit(f"unknown measurement {name!r}")
    seconds = time.perf_counter() - t_start
    size = os.path.getsize(tokens_path if name.startswith(("token", "get")) else text_path)
    if "batches" in result:  # windows read, not the whole file
        result["tokens_per_s"] = round(result["batches"] * BATCH * (CONTEXT + 1) / seconds)
    else:
        result["mb_per_s"] = round(size / 2**20 / seconds, 1)
    result.update(
        seconds=round(seconds, 2),
        input_mb=round(size / 2**20, 1),
        baseline_rss_mb=round(baseline, 1),
        peak_rss_mb=round(status_mb("VmHWM"), 1),
        peak_anon_mb=round(sampler.peak["RssAnon"] / 1024, 1),
        peak_file_backed_mb=round(sampler.peak["RssFile"] / 1024, 1),
        peak_worker_rss_mb=round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token-gb", type=float, default=2.0, help="size of the synthetic token file (default 2)")
    parser.add_argument("--text-gb", type=float, default=1.0, help="size of the synthetic text file (default 1)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the files go")
    parser.add_argument("--only", nargs="*", choices=OPERATIONS, metavar="NAME", help="run only these operations")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, json.loads(args.paths))))
        return

    require(args.token_gb > 0 and args.text_gb > 0, "--token-gb and --text-gb must be positive.")
    # The text file must hold the 4 MB the tokenizer is trained on, and the token file a training window.
    require(args.text_gb >= 0.005, f"--text-gb must be at least 0.005 (5 MB), got {args.text_gb}.")
    try:
        args.dir.mkdir(parents=True, exist_ok=True)  # --dir may name a folder to make; its files are removed after
    except OSError as exc:
        raise SystemExit(f"cannot use --dir {args.dir} ({exc.strerror}); give a writable directory") from None
    free_gb = shutil.disk_usage(args.dir).free / 1e9
    needed_gb = args.token_gb + args.text_gb * 2.2
    if free_gb < needed_gb + 1:
        raise SystemExit(f"{args.dir} has {free_gb:.1f} GB free; this needs about {needed_gb:.1f} GB")
    work = Path(tempfile.mkdtemp(prefix="scratchlm-large-", dir=args.dir))
    paths = {
        "tokens": str(work / "tokens.bin"),
        "text": str(work / "text.txt"),
        "tokenizer": str(work / "tokenizer"),
        "scratch": str(work),
    }
    results: dict = {"benchmark": "large_files", "device": "cpu", "machine": describe_machine(), "measurements": {}}
    try:
        t_start = time.perf_counter()
        results["token_file"] = {"tokens": write_token_file(Path(paths["tokens"]), args.token_gb), "dtype": "uint16"}
        results["text_file"] = {"bytes": write_text_file(Path(paths["text"]), args.text_gb)}
        train_tokenizer(Path(paths["text"]), Path(paths["tokenizer"]))
        results["setup_seconds"] = round(time.perf_counter() - t_start, 1)
        for name in args.only or OPERATIONS:
            child = subprocess.run(
                [sys.executable, __file__, "--measure", name, "--paths", json.dumps(paths)],
                capture_output=True,
                text=True,
            )
            if child.returncode != 0:
                last = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
                raise SystemExit(f"large_files.py: the {name} measurement failed: {last}")
            results["measurements"][name] = json.loads(child.stdout.strip().splitlines()[-1])
            print(name, results["measurements"][name], file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    print_table(results["measurements"])
    emit(results, args.out)


def print_table(measurements: dict[str, dict]) -> None:
    print(f"{'operation':<24} {'seconds':>8} {'rate':>16} {'base RSS':>9} {'peak RSS':>9} {'anon':>7} {'file':>7} "
          f"{'worker':>7}   (MB)")  # fmt: skip
    for name, m in measurements.items():
        rate = f"{m['tokens_per_s']:,} tok/s" if "tokens_per_s" in m else f"{m['mb_per_s']:,} MB/s"
        memory = (m["baseline_rss_mb"], m["peak_rss_mb"], m["peak_anon_mb"], m["peak_file_backed_mb"])
        print(f"{name:<24} {m['seconds']:>8.2f} {rate:>16} {memory[0]:>9.1f} {memory[1]:>9.1f} {memory[2]:>7.1f} "
              f"{memory[3]:>7.1f} {m['peak_worker_rss_mb']:>7.1f}")  # fmt: skip


if __name__ == "__main__":
    run_main(main)
