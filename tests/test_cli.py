"""The command line: commands run, and mistakes are one clear line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scratchlm.cli import main, run_guarded
from scratchlm.errors import EXIT_OUT_OF_MEMORY
from scratchlm.presets import list_presets


def test_presets_lists_every_shipped_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in list_presets())
    assert {"debug", "scratch1", "scratch1-quick", "shakespeare-char", "tinystories-17m", "capstone-10m"} <= set(
        list_presets()
    )


def test_info_reports_counts_and_applies_file_then_cli_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[model]\nd_model = 64\nnum_heads = 8\n")
    assert main(["info", "--preset", "debug", "--config", str(config), "--set", "model.num_heads=2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["d_model"] == 64  # from the file
    assert report["model"]["num_heads"] == 2  # the command line wins over the file
    assert report["params"]["total"] > report["params"]["non_embedding"] > 0
    assert report["flops_per_token"]["train"] == pytest.approx(3 * report["flops_per_token"]["forward"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "--preset", "nope"], "unknown preset 'nope'; available presets:"),
        (["info", "--set", "model.d_model=30"], "divisible by model.num_heads"),
        (["info", "--set", "model.depth=3"], "unknown model key(s) ['depth']; valid keys:"),
        (["info", "--set", "model.d_model=big"], "model.d_model must be int, got 'big'"),
        (["info", "--set", "d_model"], "--set expects section.key=value"),
        (["info", "--config", "/nonexistent.toml"], "does not exist"),
    ],
)
def test_mistakes_are_one_clear_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scratchlm: error:") and message in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_malformed_toml_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nd_model = \n")
    assert main(["info", "--config", str(bad)]) == 2
    assert "is not valid TOML" in capsys.readouterr().err


def test_console_script_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scratchlm.cli", "info", "--preset", "tinystories-17m", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout)["params"]["non_embedding"] == 17_576_448


@pytest.mark.parametrize(
    ("raised", "status", "line"),
    [
        (ZeroDivisionError("division by zero"), 1, "scratchlm: error: internal error (ZeroDivisionError: division by"),
        (PermissionError(13, "Permission denied", "/x"), 5, "scratchlm: error: cannot access /x: permission denied"),
        (KeyboardInterrupt(), 130, "scratchlm: interrupted"),
    ],
    ids=["bug", "os-error", "ctrl-c"],
)
def test_unexpected_failures_are_one_line_and_debug_adds_the_traceback(
    raised: BaseException, status: int, line: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from scratchlm.commands import presets

    def broken(args: object) -> int:
        raise raised

    monkeypatch.setattr(presets, "run", broken)
    assert main(["presets"]) == status
    err = capsys.readouterr().err
    assert err.startswith(line) and len(err.strip().splitlines()) == 1
    assert main(["presets", "--debug"]) == status
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and err.strip().splitlines()[-1].startswith(line)


@pytest.mark.parametrize(
    "exc",
    [
        MemoryError(),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity)"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: 5 bytes"),
    ],
)
def test_memory_any_command_runs_out_of_is_exit_4_and_one_sentence(
    exc: BaseException, capsys: pytest.CaptureFixture[str]
) -> None:
    def exhausted() -> int:
        raise exc

    assert run_guarded(exhausted, debug=False) == EXIT_OUT_OF_MEMORY
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("scratchlm: error: the machine ran out of memory (")
    assert "bug" not in err and "use a machine with more memory" in err


def test_output_cut_short_by_its_reader_is_a_quiet_exit_141(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class ClosedPipe:  # what stdout is once `| head -1` has read its line and gone
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["presets"]) == 141
    assert "error" not in capsys.readouterr().err  # it was "cannot access a file: broken pipe", exit 5
