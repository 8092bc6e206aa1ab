"""`scratchlm data text`: tokenize a text corpus into train.bin / val.bin + tokenizer/ + meta.json."""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="FILE",
        help="UTF-8 text file(s) to tokenize; with an <|endoftext|> token one goes between two files",
    )
    val = parser.add_mutually_exclusive_group()
    val.add_argument("--val-input", nargs="+", metavar="FILE", help="validation text file(s)")
    val.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="without --val-input: the last fraction of the input becomes validation text (default 0.1)",
    )
    parser.add_argument(
        "--tokenizer",
        default="bpe",
        metavar="{bpe,char,gpt2,PATH}",
        help="train a BPE or char tokenizer, use GPT-2's, or load a saved tokenizer directory (default bpe)",
    )
    parser.add_argument("--vocab-size", type=int, help="BPE vocabulary size (default 10000)")
    parser.add_argument(
        "--special-tokens", nargs="*", metavar="TOKEN", help="special tokens (bpe default: <|endoftext|>)"
    )
    parser.add_argument("--gpt2-dir", help="directory with GPT-2's encoder.json and vocab.bpe (for --tokenizer gpt2)")
    parser.add_argument("--workers", type=int, help="worker processes (default: all CPUs for large inputs)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output data directory")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace another corpus already in --out (the same command run again needs no flag)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--json", action="store_true", help="print meta.json instead of a summary")


def run(args: argparse.Namespace) -> int:
    from scratchlm.data.text import prepare_text_corpus

    meta = prepare_text_corpus(
        args.input,
        args.out,
        args.tokenizer,
        val_inputs=args.val_input,
        val_fraction=args.val_fraction,
        vocab_size=args.vocab_size,
        special_tokens=args.special_tokens,
        gpt2_dir=args.gpt2_dir,
        num_workers=args.workers,
        progress=False if args.no_progress else None,
        overwrite=args.overwrite,
    )
    if args.json:
        print(json.dumps(meta))
        return 0
    splits = meta["splits"]
    print(f"wrote {args.out}: {meta['tokenizer']['kind']} tokenizer, vocab {meta['vocab_size']}, dtype {meta['dtype']}")
    for name in ("train", "val"):
        tokens, nbytes = splits[name]["tokens"], splits[name]["bytes"]
        print(f"  {name:5s} {tokens:>12,} tokens from {nbytes:>13,} bytes ({nbytes / tokens:.2f} bytes/token)")
    print(f"  timings (s): {meta['timings_s']}")
    return 0
