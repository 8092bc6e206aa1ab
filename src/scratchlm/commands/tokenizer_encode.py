"""`scratchlm tokenizer encode`: text -> token ids with a saved tokenizer (printed, or written as a .bin)."""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", required=True, metavar="DIR", help="saved tokenizer directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="text to encode")
    source.add_argument("--input", metavar="FILE", help="UTF-8 file to encode ('-' for stdin)")
    parser.add_argument("--out", metavar="FILE", help="write ids to this token file (uint16/uint32) instead of stdout")
    parser.add_argument("--workers", type=int, help="processes for --out (default: all CPUs for large inputs)")


def run(args: argparse.Namespace) -> int:
    from scratchlm.data.text import encode_sources
    from scratchlm.data.token_files import token_dtype
    from scratchlm.errors import ConfigError
    from scratchlm.tokenizers import load_tokenizer
    from scratchlm.tokenizers.chunks import TextSource, read_range, total_size

    tokenizer = load_tokenizer(args.tokenizer)
    if args.input == "-":
        if args.out:
            raise ConfigError("--out needs --input FILE, not stdin (a file can be encoded in parallel chunks).")
        ids = list(tokenizer.encode_iterable(sys.stdin))
    elif args.input is not None:
        source = TextSource(args.input)
        size = total_size([source])
        if args.out and os.path.exists(args.out) and os.path.samefile(args.input, args.out):
            raise ConfigError(
                f"--out {args.out} is the input file itself, and writing ids there would destroy the text; choose "
                "another --out."
            )
        if args.out:
            dtype = token_dtype(tokenizer.vocab_size)
            count = encode_sources(tokenizer, [source], args.out, dtype, num_workers=args.workers)
            print(f"wrote {count} tokens ({dtype.name}) to {args.out}")
            return 0
        ids = tokenizer.encode(read_range(args.input, 0, size))
    else:
        if args.out:
            raise ConfigError("--out needs --input FILE; --text prints its ids.")
        ids = tokenizer.encode(args.text)
    print(" ".join(map(str, ids)))
    return 0
