"""A `scratchlm` process ends when its command does: the console entry point exits without the interpreter's
teardown (which garbage-collects the whole heap, ~400k objects after torch.compile, and kept a compiled
run alive 1.3-3 s after its summary), while still running exit hooks and flushing what it printed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROGRAM = """
import atexit, sys
from concurrent.futures import ThreadPoolExecutor
from scratchlm.cli import main

atexit.register(lambda: print("exit hook ran", file=sys.stderr))
ThreadPoolExecutor(2).submit(lambda: None).result()  # an idle pool, as inductor's compile threads leave one
sys.stdout.write("unflushed, no newline")
sys.argv = ["scratchlm", *sys.argv[1:]]
main()
print("main returned")
"""


@pytest.mark.parametrize(("argv", "status"), [(["presets"], 0), (["train", "--preset", "no-such-preset"], 2)])
def test_the_console_entry_point_exits_with_the_status_after_hooks_and_flushes(argv: list[str], status: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, *argv], capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == status, result.stderr[-3000:]
    assert result.stdout.startswith("unflushed, no newline")
    assert "main returned" not in result.stdout  # main(None) is the whole process
    assert result.stderr.rstrip().endswith("exit hook ran")
    if status == 0:
        assert "debug" in result.stdout  # the command's own output is all there
    else:
        assert "scratchlm: error: unknown preset 'no-such-preset'" in result.stderr


def test_main_with_arguments_returns_its_status_to_the_caller(capsys: pytest.CaptureFixture[str]) -> None:
    from scratchlm.cli import main

    assert main(["presets"]) == 0
    assert "debug" in capsys.readouterr().out
