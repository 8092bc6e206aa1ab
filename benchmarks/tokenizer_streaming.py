"""Streaming encode and byte-range cutting: the host-side work around the BPE itself.

Figures (GPT-2's vocabulary from the shared data, Tiny Shakespeare; medians of repeats):
  * `encode_iterable` over the file's lines, against one `encode` of the whole text;
  * `encode_iterable` over 100,000 one-line chunks of blank lines (a stretch with no safe cut);
  * `iter_ranges` cutting the file at a 64 KiB target (what parallel counting and `data text` do first),
    and the number of ranges a paragraphs-only rewrite of the file (blank lines, no single line breaks)
    is cut into.

To compare two trees side by side, run this script against each one's sources:
    PYTHONPATH=/path/to/old/src python benchmarks/tokenizer_streaming.py
    python benchmarks/tokenizer_streaming.py [--repeats 5] [--data DIR] [--out benchmarks/results/X.json]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from machine_info import describe_machine, emit, parse_checked, require, run_main, shared_data_parser


def median_s(work: Callable[[], object], repeats: int) -> tuple[float, object]:
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def main() -> None:
    args = parse_checked(shared_data_parser(__doc__.splitlines()[0], repeats=5))
    gpt2, text_path = args.data / "gpt2", args.data / "text" / "tinyshakespeare.txt"
    require(
        (gpt2 / "encoder.json").is_file() and text_path.is_file(),
        f"{args.data} lacks gpt2/encoder.json or text/tinyshakespeare.txt; pass --data with the shared data.",
    )
    import scratchlm
    from scratchlm.tokenizers import Tokenizer
    from scratchlm.tokenizers.chunks import TextSource, iter_ranges

    tok = Tokenizer.from_gpt2_files(gpt2 / "encoder.json", gpt2 / "vocab.bpe", special_tokens=["<|endoftext|>"])
    text = text_path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    blank = ["\n"] * 100_000
    rows = []

    whole_s, whole = median_s(lambda: tok.encode(text), args.repeats)
    stream_s, streamed = median_s(lambda: list(tok.encode_iterable(lines)), args.repeats)
    require(streamed == whole, "encode_iterable disagrees with encode on the file; this tree has a bug.")
    rows.append({"case": "encode, whole file", "seconds": whole_s, "tokens": len(whole)})
    rows.append({"case": "encode_iterable, file lines", "seconds": stream_s, "tokens": len(streamed)})
    blank_s, blank_ids = median_s(lambda: list(tok.encode_iterable(blank)), min(args.repeats, 3))
    rows.append({"case": "encode_iterable, 100k blank lines", "seconds": blank_s, "tokens": len(blank_ids)})

    ranges_s, ranges = median_s(lambda: list(iter_ranges(TextSource(str(text_path)), [], 1 << 16)), args.repeats)
    rows.append({"case": "iter_ranges 64 KiB, file", "seconds": ranges_s, "ranges": len(ranges)})
    with tempfile.TemporaryDirectory() as tmp:
        paragraphs = Path(tmp) / "paragraphs.txt"
        paragraphs.write_text(text.replace("\n\n", "\0").replace("\n", " ").replace("\0", "\n\n"), encoding="utf-8")
        para_s, para = median_s(lambda: list(iter_ranges(TextSource(str(paragraphs)), [], 1 << 16)), args.repeats)
    rows.append({"case": "iter_ranges 64 KiB, paragraphs only", "seconds": para_s, "ranges": len(para)})

    print("| case | median s | tokens / ranges |\n|---|---|---|")
    for row in rows:
        print(f"| {row['case']} | {row['seconds']:.4f} | {row.get('tokens', row.get('ranges'))} |")
    emit(
        {
            "benchmark": "tokenizer_streaming",
            "scratchlm": str(Path(scratchlm.__file__).resolve().parent),
            "repeats": args.repeats,
            "machine": describe_machine(),
            "rows": [{**row, "seconds": round(row["seconds"], 5)} for row in rows],
        },
        args.out,
    )


if __name__ == "__main__":
    run_main(main)
