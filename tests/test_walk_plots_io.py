"""Walkthrough of `scratchlm plot` and `scratchlm attention` on the files a user can get wrong: a missing path,
a folder that is no run, damaged or empty metrics, a checkpoint that is no checkpoint, a folder or a named pipe
where a file should be, and a write that is refused. Each is one sentence on stderr with the exit status of
`scratchlm.errors`, and the figures an earlier invocation drew are kept. Also: `plot` reads every run's
metrics.jsonl once."""

from __future__ import annotations

import errno
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure

from scratchlm.analysis import plots
from scratchlm.cli import main
from scratchlm.errors import EXIT_BAD_INPUT, EXIT_IO
from scratchlm.presets import resolve_run_config
from scratchlm.train.trainer import train
from tests.experiment_helpers import debug_overrides, tiny_trajectories


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("walk-plots-io")
    train(resolve_run_config("debug", None, debug_overrides(tiny_trajectories(root), 4)), root / "run")
    return root / "run"


def copy_run(finished: Path, target: Path) -> Path:
    shutil.copytree(finished, target, ignore=shutil.ignore_patterns("plots"))
    return target


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    return copy_run(finished, tmp_path / "run")


def fails(argv: list[str], capsys: pytest.CaptureFixture[str], status: int, *needles: str) -> str:
    """Run the CLI, expect `status`, and return its one stderr line (no traceback, no internal error)."""
    assert main(argv) == status
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if " WARNING " not in line and " INFO " not in line]
    assert len(lines) == 1, err
    (line,) = lines
    assert line.startswith("scratchlm: error: ") and "Traceback" not in err and "internal error" not in line
    for needle in needles:
        assert needle in line, line
    return line


def refuse_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every figure write fails with a full disk after writing part of its bytes: where the target itself was
    opened (not a temporary file beside it), the figure already there is torn."""

    def savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> None:
        if hasattr(fname, "write"):
            fname.write(b"partial")
        else:
            Path(fname).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", savefig)


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------- one read per run


def test_plot_reads_each_runs_metrics_once(finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = [copy_run(finished, tmp_path / name) for name in ("a", "b", "c")]
    reads: Counter[Path] = Counter()
    read = plots.read_metrics

    def counted(path: Any) -> list[dict[str, Any]]:
        reads[Path(path)] += 1
        return read(path)

    monkeypatch.setattr(plots, "read_metrics", counted)  # what read_run_metrics, and so runs_table, calls
    assert main(["plot", *map(str, runs)]) == 0
    assert reads == {run / "metrics.jsonl": 1 for run in runs}


def test_the_figures_drawn_from_rows_read_once_are_those_drawn_from_the_files(finished: Path, tmp_path: Path) -> None:
    a, b = copy_run(finished, tmp_path / "a"), copy_run(finished, tmp_path / "b")
    written = plots.plot_runs([a, b])
    floor = plots._loss_floor(a)  # the data's noise floor, from summary.json: the same data for both runs
    assert floor is not None
    own = plots.plot_training_curves([a], tmp_path / "own", labels=["a"], title="a", floor=floor, svg=False)
    both = plots.plot_training_curves(
        [a, b], tmp_path / "both", labels=["a", "b"], title="a vs b", floor=floor, svg=False
    )
    (overlay,) = [
        p for p in written if p.parent == a / "plots" and p.name.startswith("compare_") and p.suffix == ".png"
    ]
    assert (a / "plots" / "curves_step.png").read_bytes() == own[0].read_bytes()
    assert overlay.read_bytes() == both[0].read_bytes() == (b / "plots" / overlay.name).read_bytes()


# ---------------------------------------------------------------------------------------------- plot


def test_plot_of_a_path_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(["plot", str(tmp_path / "nope")], capsys, EXIT_BAD_INPUT, "nope does not exist", "check the path")


def test_plot_of_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(["plot", str(tmp_path)], capsys, EXIT_BAD_INPUT, "has no metrics.jsonl", "pass run directories")


def test_plot_of_a_file_in_a_run(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(["plot", str(run / "metrics.jsonl")], capsys, EXIT_BAD_INPUT, "is a file, not a run directory")


def test_a_torn_last_line_or_a_damaged_line_is_skipped_and_the_rest_plotted(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A torn last line is what a killed trainer leaves; read_metrics keeps every complete row around either.
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text("not json\n" + text + text.splitlines()[-1][:15])
    assert main(["plot", str(run)]) == 0
    assert (run / "plots" / "curves_step.png").read_bytes().startswith(b"\x89PNG")


def test_metrics_with_bytes_but_no_row_are_called_damaged_not_untrained(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run / "metrics.jsonl").write_text("not json\n[1, 2]\n")
    fails(["plot", str(run)], capsys, EXIT_BAD_INPUT, "no complete metrics row", "restore it from a copy")


def test_an_empty_metrics_file_says_to_train_further(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run / "metrics.jsonl").write_text("")
    fails(["plot", str(run)], capsys, EXIT_BAD_INPUT, "no row is logged yet", "train --resume")


def test_a_folder_in_place_of_the_metrics_file(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    fails(["plot", str(run)], capsys, EXIT_BAD_INPUT, "metrics.jsonl is a directory, not a regular file")


def test_a_named_pipe_in_place_of_the_metrics_file_is_not_read(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")  # reading it would wait for a writer forever
    fails(["plot", str(run)], capsys, EXIT_BAD_INPUT, "metrics.jsonl is a device, pipe or socket")


def test_one_unreadable_run_of_several_stops_plot_before_it_writes_anything(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = copy_run(finished, tmp_path / "good"), copy_run(finished, tmp_path / "bad")
    (bad / "metrics.jsonl").write_bytes(b"\xff\xfe not text\n")
    fails(["plot", str(good), str(bad)], capsys, EXIT_BAD_INPUT, "bad/metrics.jsonl is not UTF-8")
    assert not (good / "plots").exists()


def test_plots_being_a_file_is_a_write_error_naming_it(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run / "plots").write_text("notes")
    fails(["plot", str(run)], capsys, EXIT_IO, "plots/curves_step.png", "not a directory (ENOTDIR)")
    assert (run / "plots").read_text() == "notes"


def test_a_pipe_in_place_of_a_figure_is_refused_not_written_into(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run / "plots").mkdir()
    os.mkfifo(run / "plots" / "curves_step.png")
    fails(["plot", str(run)], capsys, EXIT_BAD_INPUT, "curves_step.png is a device, pipe or socket")
    assert (run / "plots" / "curves_step.png").is_fifo()


def test_a_refused_write_keeps_the_figures_drawn_before(
    run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["plot", str(run)]) == 0
    before = {p: p.read_bytes() for p in (run / "plots").iterdir()}
    capsys.readouterr()
    refuse_writes(monkeypatch)
    fails(["plot", str(run)], capsys, EXIT_IO, "curves_step.png: disk full (ENOSPC)", "the previous file is intact")
    assert {p: p.read_bytes() for p in (run / "plots").iterdir()} == before
    assert no_temp_files(run)


def test_a_refused_copy_of_the_overlay_keeps_the_one_drawn_before(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = copy_run(finished, tmp_path / "a"), copy_run(finished, tmp_path / "b")
    assert main(["plot", str(a), str(b)]) == 0
    capsys.readouterr()
    png, svg = sorted((b / "plots").glob("compare_*"))[:1][0], sorted((b / "plots").glob("compare_*.svg"))[0]
    svg_before = svg.read_bytes()
    png.unlink()
    png.mkdir()  # the overlay is drawn into a's plots/, and its copy into b's refused
    fails(["plot", str(a), str(b)], capsys, EXIT_IO, f"b/plots/{png.name}: it is a directory (EISDIR)")
    assert svg.read_bytes() == svg_before and no_temp_files(b)


# ------------------------------------------------------------------------------------------ attention


def test_attention_of_a_path_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(["attention", str(tmp_path / "nope")], capsys, EXIT_BAD_INPUT, "nope does not exist")
    assert "--run" not in line  # generate's option, not attention's


def test_attention_of_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(["attention", str(tmp_path)], capsys, EXIT_BAD_INPUT, "is not a run directory (no config.toml)")


def test_attention_of_a_run_whose_config_is_a_folder(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run / "config.toml").unlink()
    (run / "config.toml").mkdir()
    fails(["attention", str(run)], capsys, EXIT_BAD_INPUT, "config.toml is a directory, not a regular file")


def test_attention_of_a_checkpoint_that_is_not_one(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run / "checkpoints" / "best.pt").write_bytes(b"not a checkpoint")
    fails(["attention", str(run)], capsys, EXIT_BAD_INPUT, "best.pt' cannot be loaded safely", "corrupt")


def test_attention_of_a_file_that_is_not_a_checkpoint_given_as_run(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails(["attention", str(run / "metrics.jsonl")], capsys, EXIT_BAD_INPUT, "metrics.jsonl' cannot be loaded safely")


def test_attention_of_a_pipe_given_as_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.mkfifo(tmp_path / "run.pt")
    fails(["attention", str(tmp_path / "run.pt")], capsys, EXIT_BAD_INPUT, "run.pt is a device, pipe or socket")


@pytest.mark.parametrize("kind", ["directory", "pipe"])
def test_a_best_checkpoint_that_is_no_file_is_named_not_passed_over(
    run: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    best = run / "checkpoints" / "best.pt"
    best.unlink()
    best.mkdir() if kind == "directory" else os.mkfifo(best)
    fails(
        ["attention", str(run)],
        capsys,
        EXIT_BAD_INPUT,
        "best.pt is a " + ("directory" if kind == "directory" else "device, pipe"),
    )


@pytest.mark.parametrize("kind", ["directory", "pipe"])
def test_a_checkpoint_option_that_is_no_file(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    other = tmp_path / "other.pt"
    other.mkdir() if kind == "directory" else os.mkfifo(other)
    line = fails(["attention", str(run), "--checkpoint", str(other)], capsys, EXIT_BAD_INPUT, "other.pt is a")
    assert "does not exist" not in line


def test_attention_out_being_a_file_is_a_write_error_and_leaves_it(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").write_text("notes")
    fails(["attention", str(run), "--out", str(tmp_path / "out")], capsys, EXIT_IO, "out/attention_val0.png", "ENOTDIR")
    assert (tmp_path / "out").read_text() == "notes"


def test_attention_into_a_pipe_is_refused(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").mkdir()
    os.mkfifo(tmp_path / "out" / "attention_val0.png")
    fails(["attention", str(run), "--out", str(tmp_path / "out")], capsys, EXIT_BAD_INPUT, "device, pipe or socket")


def test_a_refused_attention_write_keeps_the_figures_drawn_before(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    assert main(["attention", str(run), "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {out / "attention_val0.png", out / "attention_val0_mean.png"}
    capsys.readouterr()
    refuse_writes(monkeypatch)
    fails(["attention", str(run), "--out", str(out)], capsys, EXIT_IO, "disk full (ENOSPC)", "previous file is intact")
    assert {p: p.read_bytes() for p in out.iterdir()} == before
    assert no_temp_files(out)
