"""`scratchlm tokenizer train`: train a BPE (or char) tokenizer on text files and save it to a directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE", help="UTF-8 training text file(s)")
    parser.add_argument("--kind", choices=("bpe", "char"), default="bpe", help="tokenizer kind (default bpe)")
    parser.add_argument("--vocab-size", type=int, help="BPE vocabulary size (default 10000)")
    parser.add_argument(
        "--special-tokens",
        nargs="*",
        metavar="TOKEN",
        help="special tokens (default for bpe: <|endoftext|>; for char: none)",
    )
    parser.add_argument("--workers", type=int, help="pre-tokenization processes (default: all CPUs for large inputs)")
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="directory to save the tokenizer in (a tokenizer already there is replaced; other files stay)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    import time

    from scratchlm.errors import ConfigError
    from scratchlm.tokenizers import CharTokenizer, Tokenizer, train_bpe

    if args.kind == "char" and args.vocab_size is not None:
        raise ConfigError("--vocab-size only applies to --kind bpe; a char tokenizer's vocabulary is its alphabet.")
    if not args.out:  # Path("") is the current directory
        raise ConfigError("--out is empty; give the directory to save the tokenizer in (e.g. --out tokenizer).")
    check_out(Path(args.out))  # before training, which can take minutes
    t_start = time.perf_counter()
    if args.kind == "char":
        tokenizer = CharTokenizer.train(args.input, args.special_tokens)
    else:
        specials = ["<|endoftext|>"] if args.special_tokens is None else args.special_tokens
        progress = False if args.no_progress else None
        vocab_size = 10000 if args.vocab_size is None else args.vocab_size
        vocab, merges = train_bpe(args.input, vocab_size, specials, num_workers=args.workers, progress=progress)
        tokenizer = Tokenizer(vocab, merges, specials)
    duration_s = time.perf_counter() - t_start
    replaced = saved_kind(Path(args.out))
    tokenizer.save(args.out)  # in place of the tokenizer there, whose files the new one does not use go too
    note = f", replacing the {replaced} tokenizer there" if replaced else ""
    print(
        f"trained a {args.kind} tokenizer with {tokenizer.vocab_size} ids in {duration_s:.2f} s; saved to "
        f"{args.out}{note}"
    )
    return 0


def saved_kind(directory: Path) -> str | None:
    """The kind of the tokenizer already saved in `directory`, or None when there is none we can read."""
    from scratchlm.errors import DataError
    from scratchlm.tokenizers.tokenizer import read_tokenizer_meta

    if not (directory / "tokenizer.json").is_file():
        return None
    try:
        return read_tokenizer_meta(directory)["kind"]
    except DataError:
        return None


def check_out(out: Path) -> None:
    """Refuse an --out that is a file, or the tokenizer of a corpus: that corpus's token files were made
    with it, and a new tokenizer saved there would decode them to other text."""
    from scratchlm.errors import ConfigError
    from scratchlm.fileio import refuse_special_file

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give the path of a directory to save the tokenizer in.")
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):  # the save replaces them: regular files only
        refuse_special_file(out / name, "--out file")
    # The save would fail only after training, which can take minutes: a file where a directory must go.
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(
                    f"--out {out} cannot be created: {parent} is a file, not a directory; choose another --out."
                )
            break
    from scratchlm.data.text import read_corpus_meta
    from scratchlm.errors import DataError

    corpus_dir = out.resolve().parent
    if not (corpus_dir / "meta.json").is_file():
        return
    try:
        tokenizer_dir = read_corpus_meta(corpus_dir)["tokenizer"]["dir"]
    except DataError:  # not a corpus description
        return
    if tokenizer_dir == out.resolve().name:
        raise ConfigError(
            f"--out {out} is the tokenizer of the corpus in {corpus_dir}, whose token files need it; "
            "save the new tokenizer in another directory."
        )
