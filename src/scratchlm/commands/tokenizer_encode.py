"""`scratchlm tokenizer encode`: text -> token ids with a saved tokenizer (printed, or written as a .bin)."""

from __future__ import annotations

import argparse
import codecs
import os
import sys
from collections.abc import Iterator
from typing import BinaryIO


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
    from scratchlm.tokenizers.chunks import TextSource, check_input_file, read_range

    if args.out is not None:
        check_out(args.out)
    tokenizer = load_tokenizer(args.tokenizer)
    if args.input == "-":
        if args.out:
            raise ConfigError("--out needs --input FILE, not stdin (a file can be encoded in parallel chunks).")
        ids = list(tokenizer.encode_iterable(utf8_chunks(sys.stdin.buffer, "stdin")))
    elif args.input is not None:
        source = TextSource(args.input)
        # An empty file encodes to no ids, as `--text ""` does; only training needs some text.
        size = check_input_file(source.path)
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


def check_out(out: str) -> None:
    """Refuse an --out that is empty or names a directory, device, FIFO or socket: the token file is written
    beside it and renamed over it, which would replace `/dev/null` or a named pipe with a regular file."""
    from scratchlm.errors import ConfigError
    from scratchlm.fileio import refuse_special_file

    if not out:
        raise ConfigError("--out is empty; give the path of the token file to write (e.g. --out train.bin).")
    refuse_special_file(out, "--out")  # before the encoding, which the write at its end would otherwise waste


def utf8_chunks(stream: BinaryIO, name: str, chunk_bytes: int = 1 << 16) -> Iterator[str]:
    """The text of a byte stream, decoded strictly as UTF-8 whatever the locale says; a bad byte raises
    DataError naming its offset (text-mode stdin would smuggle it in as a lone surrogate instead)."""
    from scratchlm.errors import DataError

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    while True:
        data = stream.read(chunk_bytes)
        try:
            text = decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            # The decoder's buffer holds at most 3 bytes of an unfinished character from the previous chunk.
            held = len(exc.object) - len(data)
            raise DataError(
                f"{name} is not valid UTF-8: byte 0x{exc.object[exc.start]:02x} at offset "
                f"{offset - held + exc.start} ({exc.reason}); re-encode the input as UTF-8."
            ) from None
        offset += len(data)
        if text:
            yield text
        if not data:
            return
