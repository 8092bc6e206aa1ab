"""`scratchlm tokenizer train`: train a BPE (or char) tokenizer on text files and save it to a directory."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE", help="UTF-8 training text file(s)")
    parser.add_argument("--kind", choices=("bpe", "char"), default="bpe", help="tokenizer kind (default bpe)")
    parser.add_argument("--vocab-size", type=int, default=10000, help="BPE vocabulary size (default 10000)")
    parser.add_argument(
        "--special-tokens",
        nargs="*",
        metavar="TOKEN",
        help="special tokens (default for bpe: <|endoftext|>; for char: none)",
    )
    parser.add_argument("--workers", type=int, help="pre-tokenization processes (default: all CPUs for large inputs)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to save the tokenizer in")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    import time

    from scratchlm.tokenizers import CharTokenizer, Tokenizer, train_bpe

    t_start = time.perf_counter()
    if args.kind == "char":
        tokenizer = CharTokenizer.train(args.input, args.special_tokens)
    else:
        specials = ["<|endoftext|>"] if args.special_tokens is None else args.special_tokens
        progress = False if args.no_progress else None
        vocab, merges = train_bpe(args.input, args.vocab_size, specials, num_workers=args.workers, progress=progress)
        tokenizer = Tokenizer(vocab, merges, specials)
    duration_s = time.perf_counter() - t_start
    tokenizer.save(args.out)
    print(f"trained a {args.kind} tokenizer with {tokenizer.vocab_size} ids in {duration_s:.2f} s; saved to {args.out}")
    return 0
