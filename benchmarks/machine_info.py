"""Shared by the benchmarks: the machine a figure was measured on, how results are printed and saved, the
arguments of the benchmarks over the shared data, and how a script reports a user's mistake (one sentence,
no traceback)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from scratchlm.train.tracking import dumps_strict

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the checkout


def describe_machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def current_rss_mb() -> float:
    """Resident memory of this process now (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


# One strict-JSON writer for the project: a value that is not finite becomes null (JSON has no NaN).
strict_json = dumps_strict


def emit(result: dict, out: str | os.PathLike | None) -> None:
    """Print the result as one JSON line and, when `out` is given, write it there (pretty-printed).

    Strict JSON: a value that is not finite (a missing measurement) is null.
    """
    print(strict_json(result))
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(strict_json(result, indent=2) + "\n", encoding="utf-8")


def require(condition: bool, message: str) -> None:
    """Raise scratchlm's ConfigError with `message` (one sentence) unless `condition` holds."""
    if not condition:
        from scratchlm.errors import ConfigError

        raise ConfigError(message)


def shared_data_parser(description: str, repeats: int, repeats_help: str | None = None) -> argparse.ArgumentParser:
    """The arguments of a benchmark over the shared data: --data, --repeats and --out (see `parse_checked`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared data directory")
    parser.add_argument("--repeats", type=int, default=repeats, help=repeats_help)
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    return parser


def parse_checked(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """parse_args, with --repeats (where the parser has it) refused below 1 in one sentence."""
    args = parser.parse_args()
    require(getattr(args, "repeats", 1) >= 1, f"--repeats must be at least 1, got {getattr(args, 'repeats', 1)}.")
    return args


def device_from(name: str) -> Any:
    """The torch.device for --device NAME, or a one-sentence DeviceError (e.g. cuda on a machine without one)."""
    from scratchlm.device import resolve_device

    return resolve_device(name)


def run_main(main: Callable[[], int | None]) -> NoReturn:
    """Run a benchmark's main() and exit with its status; a scratchlm error (a bad argument, a device this
    machine lacks, an input that does not fit) is printed as its one sentence, without a traceback, and
    exits with that error's status, as the `scratchlm` command does."""
    try:
        code = main()
    except Exception as exc:
        from scratchlm.errors import ScratchLMError  # imported here: bpe_train's HF child must not load torch

        if not isinstance(exc, ScratchLMError):
            raise
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    raise SystemExit(code or 0)
