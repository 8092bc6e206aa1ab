"""`scratchlm tokenizer decode`: token ids -> text with a saved tokenizer."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scratchlm.tokenizers.base import TextTokenizer


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

        check_corpus_tokenizer(Path(args.input), Path(args.tokenizer), tokenizer)
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


def check_corpus_tokenizer(token_file: Path, tokenizer_dir: Path, tokenizer: TextTokenizer) -> None:
    """When `token_file` is a split of a corpus directory, refuse a tokenizer other than the corpus's own:
    ids of another vocabulary decode without error, to other text."""
    from scratchlm.data.text import read_corpus_meta
    from scratchlm.errors import DataError
    from scratchlm.tokenizers import load_tokenizer

    corpus_dir = token_file.resolve().parent
    if not (corpus_dir / "meta.json").is_file():
        return
    try:
        meta = read_corpus_meta(corpus_dir)
    except DataError:  # not a corpus description we can trust: nothing to compare with
        return
    own_dir = corpus_dir / meta["tokenizer"]["dir"]
    if token_file.resolve().name not in {meta["splits"][name]["file"] for name in ("train", "val")}:
        return
    if not (own_dir / "tokenizer.json").is_file() or own_dir.resolve() == tokenizer_dir.resolve():
        return
    own = load_tokenizer(own_dir)
    size = tokenizer.vocab_size
    same = own.vocab_size == size and all(own.id_to_token(i) == tokenizer.id_to_token(i) for i in range(size))
    if not same:
        raise DataError(
            f"{token_file} was written with the corpus's own tokenizer, {own_dir}, not this one; pass "
            f"--tokenizer {own_dir}."
        )
