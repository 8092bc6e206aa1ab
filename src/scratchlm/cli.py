"""`scratchlm <command>`: the command tree. Each command lives in `scratchlm.commands.<module>` as
`add_arguments(parser)` plus `run(args) -> int`; this file only assembles them and reports errors.

Every user mistake surfaces as one line `scratchlm: error: ...` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from scratchlm import __version__
from scratchlm.errors import ScratchLMError

# (command words, module under scratchlm.commands, one-line help)
COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("presets",), "presets", "list the shipped presets"),
    (("info",), "info", "show a model config with its parameter and FLOP counts"),
    (("data", "trajectories"), "data_trajectories", "generate the Scratch-1 robot-trajectory dataset"),
    (("data", "text"), "data_text", "tokenize a text corpus into train.bin / val.bin with its tokenizer"),
    (("tokenizer", "train"), "tokenizer_train", "train a BPE or char tokenizer and save it"),
    (("tokenizer", "encode"), "tokenizer_encode", "encode text with a saved tokenizer"),
    (("tokenizer", "decode"), "tokenizer_decode", "decode token ids with a saved tokenizer"),
    (("train",), "train", "train a model (or resume a run)"),
    (("bench", "train"), "bench_train", "time training steps of a preset on random tokens"),
    (("report",), "report", "write the loss curve, attention maps and report.md of a run"),
    (("demo",), "demo", "the main job: Scratch-1 data -> train scratch1-quick -> report (runs/demo)"),
]

GROUP_HELP = {
    "data": "prepare datasets (robot trajectories, text corpora)",
    "bench": "benchmarks",
    "tokenizer": "train, encode and decode with tokenizers",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratchlm", description="From-scratch transformer LMs for text and robot actions."
    )
    parser.add_argument("--version", action="version", version=f"scratchlm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {
        (): parser.add_subparsers(dest="command", metavar="COMMAND")
    }
    for words, module_name, help_text in COMMANDS:
        for depth in range(1, len(words)):
            prefix = words[:depth]
            if prefix not in groups:
                group_parser = groups[prefix[:-1]].add_parser(prefix[-1], help=GROUP_HELP.get(prefix[-1]))
                group_parser.set_defaults(group_parser=group_parser)
                groups[prefix] = group_parser.add_subparsers(metavar="COMMAND")
        module = importlib.import_module(f"scratchlm.commands.{module_name}")
        command_parser = groups[words[:-1]].add_parser(words[-1], help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        getattr(args, "group_parser", parser).print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except ScratchLMError as exc:
        print(f"scratchlm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scratchlm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
