"""Encoding throughput and compression on TinyStories text.

Figures: MB/s of the pure-Python path and the fast (tiktoken-backed) path of a 10k BPE vocabulary trained
on the two TinyStories training files; our GPT-2 tokenizer's fast path against tiktoken's own `gpt2`
encoding (loaded offline from the shared GPT-2 files through tiktoken's cache); bytes per token of both
vocabularies on the validation excerpt (which neither was trained on); and corpus encoding to a token file
with 1 and 2 worker processes. Every throughput is one `encode` call on the whole text, median of repeats
(the pure path's memo cache is cleared before each repeat, so each is a cold single pass).

    python benchmarks/tokenizer_encode.py [--repeats 5] [--data DIR] [--out benchmarks/results/X.json]
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from machine_info import describe_machine, emit, parse_checked, require, run_main, shared_data_parser

EOT = "<|endoftext|>"
GPT2_URLS = {
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}


def throughput(encode: Callable[[str], list[int]], text: str, repeats: int, before: Callable[[], None]) -> dict:
    nbytes = len(text.encode("utf-8"))
    seconds = []
    for _ in range(repeats):
        before()
        t_start = time.perf_counter()
        ids = encode(text)
        seconds.append(time.perf_counter() - t_start)
    median = statistics.median(seconds)
    return {"mb_per_s": nbytes / 1e6 / median, "best_mb_per_s": nbytes / 1e6 / min(seconds), "tokens": len(ids)}


def tiktoken_gpt2(gpt2_dir: Path, cache_dir: Path):
    """tiktoken's registered `gpt2` encoding, its downloads answered from the shared files."""
    for name, url in GPT2_URLS.items():
        shutil.copyfile(gpt2_dir / name, cache_dir / hashlib.sha1(url.encode()).hexdigest())
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    import tiktoken

    return tiktoken.get_encoding("gpt2")


def main() -> None:
    args = parse_checked(shared_data_parser(__doc__.splitlines()[0], repeats=5))
    needed = [
        args.data / "text" / name
        for name in ("tinystories_v1_train_2mib.txt", "tinystories_v2_train_1728.txt", "tinystories_valid_prefix.txt")
    ] + [args.data / "gpt2" / name for name in ("encoder.json", "vocab.bpe")]
    missing = [str(path) for path in needed if not path.is_file()]
    require(
        not missing,
        f"no {', '.join(missing)}; pass --data DIR, the shared data directory (text/ with the TinyStories "
        "excerpts, gpt2/ with GPT-2's encoder.json and vocab.bpe).",
    )

    from scratchlm.data.text import encode_sources
    from scratchlm.data.token_files import token_dtype
    from scratchlm.tokenizers import Tokenizer, train_bpe
    from scratchlm.tokenizers.chunks import TextSource

    machine = describe_machine()
    text_dir = args.data / "text"
    train_files = [text_dir / "tinystories_v1_train_2mib.txt", text_dir / "tinystories_v2_train_1728.txt"]
    valid = (text_dir / "tinystories_valid_prefix.txt").read_text(encoding="utf-8")
    vocab, merges = train_bpe(train_files, 10000, [EOT])
    ours = Tokenizer(vocab, merges, [EOT])
    gpt2 = Tokenizer.from_gpt2_files(args.data / "gpt2" / "encoder.json", args.data / "gpt2" / "vocab.bpe")
    assert ours.uses_fast_path and gpt2.uses_fast_path
    ours.encode("warm-up")  # first-use costs (the fast backend's Unicode probe) are not throughput
    with tempfile.TemporaryDirectory() as cache_dir:
        reference = tiktoken_gpt2(args.data / "gpt2", Path(cache_dir))
        assert reference.encode(valid, allowed_special="all") == gpt2.encode(valid)

        def clear_caches() -> None:
            ours._cache.clear()
            gpt2._cache.clear()

        rows = {
            "ours10k_pure": throughput(ours.encode_pure, valid, args.repeats, clear_caches),
            "ours10k_fast": throughput(ours.encode, valid, args.repeats, clear_caches),
            "gpt2_pure": throughput(gpt2.encode_pure, valid, args.repeats, clear_caches),
            "gpt2_fast": throughput(gpt2.encode, valid, args.repeats, clear_caches),
            "tiktoken_gpt2": throughput(
                lambda t: reference.encode(t, allowed_special="all"), valid, args.repeats, clear_caches
            ),
        }
    nbytes = len(valid.encode("utf-8"))
    compression = {name: nbytes / rows[name]["tokens"] for name in ("ours10k_fast", "gpt2_fast")}

    corpus = [
        TextSource(str(text_dir / name)) for name in sorted(os.listdir(text_dir)) if name.startswith("tinystories")
    ]
    corpus_mb = sum(os.path.getsize(s.path) for s in corpus) / 1e6
    parallel = {}
    with tempfile.TemporaryDirectory() as out_dir:
        for workers in (1, 2):
            seconds = []
            for _ in range(max(1, args.repeats // 2)):
                t_start = time.perf_counter()
                count = encode_sources(ours, corpus, Path(out_dir) / f"w{workers}.bin", token_dtype(10000), workers)
                seconds.append(time.perf_counter() - t_start)
            parallel[f"workers_{workers}"] = {"mb_per_s": corpus_mb / statistics.median(seconds), "tokens": count}
        same = np.array_equal(
            np.fromfile(Path(out_dir) / "w1.bin", np.uint16), np.fromfile(Path(out_dir) / "w2.bin", np.uint16)
        )

    result = {
        "benchmark": "tokenizer_encode",
        "device": "cpu",
        "machine": machine,
        "load_average_1m_end": round(os.getloadavg()[0], 2),
        "text": "tinystories_valid_prefix.txt",
        "text_mb": nbytes / 1e6,
        "throughput": rows,
        "ratio_fast_to_pure_ours10k": rows["ours10k_fast"]["mb_per_s"] / rows["ours10k_pure"]["mb_per_s"],
        "ratio_tiktoken_to_our_gpt2_fast": rows["tiktoken_gpt2"]["mb_per_s"] / rows["gpt2_fast"]["mb_per_s"],
        "bytes_per_token": compression,
        "corpus_encoding": {"input_mb": corpus_mb, **parallel, "identical_outputs": same},
    }
    print(f"machine: {machine['cpu']}, {machine['usable_cpus']} usable CPUs, load {machine['load_average_1m']}")
    print(f"encoding {nbytes / 1e6:.2f} MB of TinyStories validation text (median of {args.repeats}):")
    print(f"  {'path':16s} {'MB/s':>7s} {'best':>7s} {'tokens':>8s}")
    for name, row in rows.items():
        print(f"  {name:16s} {row['mb_per_s']:7.2f} {row['best_mb_per_s']:7.2f} {row['tokens']:8d}")
    print(
        f"  fast / pure (10k): {result['ratio_fast_to_pure_ours10k']:.1f}x; "
        f"tiktoken gpt2 / our gpt2 fast: {result['ratio_tiktoken_to_our_gpt2_fast']:.2f}x"
    )
    print(f"  bytes per token: ours 10k {compression['ours10k_fast']:.3f}, GPT-2 {compression['gpt2_fast']:.3f}")
    print(
        f"corpus encoding ({corpus_mb:.2f} MB to a token file): 1 worker {parallel['workers_1']['mb_per_s']:.2f} MB/s, "
        f"2 workers {parallel['workers_2']['mb_per_s']:.2f} MB/s, identical: {same}"
    )
    emit(result, args.out)


if __name__ == "__main__":
    run_main(main)
