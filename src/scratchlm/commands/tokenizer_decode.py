"""`scratchlm tokenizer decode`: token ids -> text with a saved tokenizer."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", required=True, metavar="DIR", help="saved tokenizer directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ids", nargs="+", metavar="ID", help="token ids (space or comma separated)")
    source.add_argument("--input", metavar="FILE", help="token file (.bin) written for this tokenizer")


def run(args: argparse.Namespace) -> int:
    from scratchlm.errors import DataError
    from scratchlm.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    if args.input:
        from scratchlm.data.token_files import load_token_file

        ids = load_token_file(args.input, tokenizer.vocab_size).tolist()
    else:
        words = [w for arg in args.ids for w in arg.replace(",", " ").split()]
        try:
            ids = [int(w) for w in words]
        except ValueError:
            bad = next(w for w in words if not w.lstrip("-").isdigit())
            raise DataError(f"--ids must be integers, got {bad!r}.") from None
    print(tokenizer.decode(ids))
    return 0
