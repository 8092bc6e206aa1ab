"""`scratchlm <command>`: the command tree. Each command lives in `scratchlm.commands.<module>` as
`add_arguments(parser)` plus `run(args) -> int`; this file only assembles them and reports errors.

Every failure surfaces as one line on stderr, `scratchlm: error: ...`, and an exit status that says what
kind of failure it was; `--debug` (before or after the command) adds the traceback.

| status | meaning |
|---|---|
| 0 | success |
| 1 | internal error: a bug in scratchlm (run again with `--debug` and report the traceback) |
| 2 | bad input: arguments, config keys or values, data / tokenizer / checkpoint files, resume conflicts |
| 3 | training stopped: the loss or gradients became NaN/Inf (the last good checkpoint is kept) |
| 4 | out of memory (the message names the setting to lower) |
| 5 | the operating system refused a read or write: disk full, permission denied, read-only file system |
| 6 | the run directory is in use by another `scratchlm train` (its `.lock` names the process) |
| 130 | interrupted by Ctrl-C (SIGINT) |
| 143 | terminated by SIGTERM (e.g. a scheduler's stop); checkpoints already written are intact |
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, NoReturn

from scratchlm import __version__
from scratchlm.errors import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_IO,
    EXIT_OUT_OF_MEMORY,
    EXIT_TERMINATED,
    ReportedElsewhere,
    ScratchLMError,
    Terminated,
    first_line,
    is_out_of_memory,
)
from scratchlm.fileio import describe_os_error

# (command words, module under scratchlm.commands, one-line help)
COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("presets",), "presets", "list the shipped presets, or print one as TOML (presets show NAME)"),
    (("info",), "info", "show a model config with its parameter and FLOP counts"),
    (("account",), "account", "parameters, training memory and forward FLOPs by component for a model shape"),
    (("data", "trajectories"), "data_trajectories", "generate the Scratch-1 robot-trajectory dataset"),
    (("data", "text"), "data_text", "tokenize a text corpus into train.bin / val.bin with its tokenizer"),
    (("tokenizer", "train"), "tokenizer_train", "train a BPE or char tokenizer and save it"),
    (("tokenizer", "encode"), "tokenizer_encode", "encode text with a saved tokenizer"),
    (("tokenizer", "decode"), "tokenizer_decode", "decode token ids with a saved tokenizer"),
    (("train",), "train", "train a model (or resume a run)"),
    (("bench", "train"), "bench_train", "time training steps of a preset on random tokens"),
    (("report",), "report", "a run's report: Markdown, the course's MDX submission page, or self-contained HTML"),
    (("plot",), "plot", "training curves (loss, perplexity, lr, grad norm) of one or more runs, PNG and SVG"),
    (("attention",), "attention", "attention maps of a run: every layer and head, and the head average per layer"),
    (("audit", "causal-mask"), "audit_causal_mask", "train with and without the causal mask and explain the gap"),
    (("ablate",), "ablate", "an ablation study: a grid of config values x seeds, a table and overlaid curves"),
    (("sweep", "lr"), "sweep_lr", "a learning-rate sweep with divergence detection, the best lr and the edge"),
    (("scaling",), "scaling", "loss against model size at fixed tokens or compute, with a fitted power law"),
    (("runs",), "runs", "a table of every run under a directory: config diff, steps, best val loss, time"),
    (("generate",), "generate", "sample text from a run's checkpoint, or roll out its trajectories"),
    (("demo",), "demo", "the main job: Scratch-1 data -> train scratch1-quick -> report (runs/demo)"),
]

GROUP_HELP = {
    "data": "prepare datasets (robot trajectories, text corpora)",
    "bench": "benchmarks",
    "audit": "audits of what a model learns",
    "sweep": "hyperparameter sweeps",
    "tokenizer": "train, encode and decode with tokenizers",
}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too (argparse prints the usage block above them otherwise)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"scratchlm: error: {message}; see `{self.prog} --help`.\n")


DEBUG_HELP = "show the full traceback of an error"
QUIET_RANK_GRACE_S = 5.0  # how long a rank that does not report lets the reporting one print and exit first


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="scratchlm", description="From-scratch transformer LMs for text and robot actions.")
    parser.add_argument("--version", action="version", version=f"scratchlm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
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
        # SUPPRESS: a command's own default must not overwrite `scratchlm --debug COMMAND`.
        command_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        command_parser.set_defaults(handler=module.run, command_parser=command_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `scratchlm ARGV` and return its exit status.

    `argv=None` (the console script, `python -m scratchlm`, `torchrun ... -m scratchlm.cli`) reads sys.argv
    and is the whole process: it exits with the status instead of returning (`exit_process`). A caller that
    passes `argv` (tests, scripts) gets the status back and keeps its process as it was.
    """
    exiting = argv is None
    status = _main(argv, exiting)
    if exiting:
        exit_process(status)
    return status


def _main(argv: Sequence[str] | None, exiting: bool) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse reports these from the top-level parser; the command's own --help is the one that helps.
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        group = getattr(args, "group_parser", parser)
        group.print_help()
        return _fail(f"`{group.prog}` needs a command (listed above).", EXIT_BAD_INPUT, debug=False)
    return run_guarded(lambda: int(handler(args) or 0), args.debug, exiting=exiting)


def run_guarded(fn: Callable[[], int], debug: bool, prog: str = "scratchlm", *, exiting: bool = False) -> int:
    """Run `fn` the way every scratchlm entry point does: SIGTERM unwinds like Ctrl-C, and any failure is one
    line on stderr prefixed `prog` (the traceback too under `debug`) with the exit status of `errors`.

    exiting: the process exits when this returns, so after a SIGTERM the signal stays ignored (see
    `_sigterm_raises`) instead of getting its default action back."""
    error, stopped = f"{prog}: error: ", f"{prog}: "
    try:
        with _sigterm_raises(keep_ignoring=exiting):
            return fn()
    except ReportedElsewhere as exc:  # under torchrun: another rank prints the one error line
        # torchrun stops the whole job at the first process that exits: a quiet rank that left before the
        # reporting one had printed would leave the job without its error line.
        time.sleep(QUIET_RANK_GRACE_S)
        return exc.exit_code
    except ScratchLMError as exc:
        return _fail(str(exc), exc.exit_code, debug, prefix=error)
    except BrokenPipeError:
        # `scratchlm presets | head -1`: the reader has what it wanted. Not an I/O error to report; stdout goes
        # to /dev/null so the interpreter's own flush at exit cannot raise again.
        with suppress(OSError, AttributeError, ValueError):  # a stdout without a file descriptor has no flush to fear
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        return _fail(describe_os_error(exc, action="access"), EXIT_IO, debug, prefix=error)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED, debug, prefix=stopped, every_rank=False)
    except Terminated:
        return _fail("terminated by SIGTERM", EXIT_TERMINATED, debug, prefix=stopped, every_rank=False)
    except Exception as exc:
        # A library's cleanup can fail because a signal interrupted it (torch.save's zip writer does):
        # the signal is what happened, not a bug.
        signalled = _signal_behind(exc)
        if isinstance(signalled, KeyboardInterrupt):
            return _fail("interrupted", EXIT_INTERRUPTED, debug, prefix=stopped, every_rank=False)
        if isinstance(signalled, Terminated):
            return _fail("terminated by SIGTERM", EXIT_TERMINATED, debug, prefix=stopped, every_rank=False)
        if is_out_of_memory(exc):  # commands that know what to shrink say so themselves (train, bench train)
            detail = type(exc).__name__ + (f": {first_line(exc)}" if first_line(exc) else "")
            return _fail(
                f"the machine ran out of memory ({detail}); ask for less at once (fewer samples, runs or seeds, "
                "a smaller batch, model or input) or use a machine with more memory.",
                EXIT_OUT_OF_MEMORY,
                debug,
                prefix=error,
            )
        return _fail(
            f"internal error ({type(exc).__name__}: {first_line(exc)}); this is a bug in scratchlm: run the command "
            "again with --debug and report the traceback.",
            EXIT_INTERNAL,
            debug,
            prefix=error,
        )


def _signal_behind(exc: BaseException) -> BaseException | None:
    """The KeyboardInterrupt or Terminated that `exc` was raised while handling, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (KeyboardInterrupt, Terminated)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def _sigterm_raises(*, keep_ignoring: bool = False) -> Iterator[None]:
    """SIGTERM raises Terminated in the block, once; copies of it that follow are ignored. keep_ignoring: so
    they are after the block too, where the default action would kill a process that is exiting with 143."""
    if threading.current_thread() is not threading.main_thread():  # signals can only be handled there
        yield
        return

    owner = os.getpid()
    received = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal received
        if os.getpid() != owner:  # a forked worker (e.g. of a multiprocessing pool): die as by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        if received:
            # The same request again: a torchrun rank gets the scheduler's SIGTERM and torchrun's copy of it (and
            # another when a peer exits first). A second Terminated would cut short the unwinding of the first.
            return
        received = True
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN if received and keep_ignoring else previous)


def exit_process(status: int) -> NoReturn:
    """End the process with `status`: what the interpreter's own exit does for the program (threads joined,
    atexit hooks run, stdout and stderr flushed), without its teardown of every module and object.

    That teardown garbage-collects the whole heap several times over, and after torch.compile (dynamo,
    inductor, sympy: ~400k tracked objects) it kept a finished run alive 1.3-3 s after its summary, and
    0.8 s after any training run. The CLI's test harness (tests/cli_processes.py) has always exited this way.
    """
    if status == EXIT_TERMINATED:
        # Also when the stop was a torchrun peer's (PeerLostError), not a SIGTERM of our own: torchrun sends
        # one to the ranks left as soon as a rank exits, and the default action would turn the status 143
        # this rank reports into "killed by SIGTERM" while its exit hooks run.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads and idle executor pools
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):  # a closed or broken pipe: nothing left to flush into
            stream.flush()
    os._exit(status)


def _fail(message: str, code: int, debug: bool, prefix: str = "scratchlm: error: ", *, every_rank: bool = True) -> int:
    """Print the one-line report and return `code`. Ctrl-C and torchrun's SIGTERM reach every rank of a job
    (`every_rank=False`): rank 0 alone says so."""
    if not every_rank:
        from scratchlm.train.distributed import is_main_process  # only when failing: keeps the CLI's start light

        if not is_main_process():
            return code
    if debug:
        traceback.print_exc()
    print(f"{prefix}{message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
