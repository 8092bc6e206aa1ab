"""Worker pools of BPE counting and corpus encoding end cleanly even under the CLI's SIGTERM handler.

`Pool.__exit__` terminates workers with SIGTERM; with a Python-level handler inherited through fork, a
worker blocked on the task queue's lock could sleep through it and the parent waited forever.
"""

from __future__ import annotations

import multiprocessing.pool
import signal
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from scratchlm.data import text as text_data
from scratchlm.tokenizers import CharTokenizer, counting
from scratchlm.tokenizers.chunks import TextSource


def _report_sigterm_disposition(task: tuple) -> tuple[Counter[str], int]:
    """Stands in for counting._count_range inside a worker: what SIGTERM does there."""
    default = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    return Counter({f"default={default}": 1}), task[2] - task[1]


def _never_terminate(self: multiprocessing.pool.Pool) -> None:
    raise AssertionError("a clean run must close and join its pool, not terminate it with SIGTERM")


@pytest.fixture
def python_sigterm_handler():
    """A Python-level SIGTERM handler in the parent, as `scratchlm.cli.run_guarded` installs."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    yield
    signal.signal(signal.SIGTERM, previous)


def _lines(tmp_path: Path) -> Path:
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"line{i} has some words.\n" for i in range(400)), encoding="utf-8")
    return path


def test_counting_workers_restore_the_default_sigterm_action(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python_sigterm_handler
) -> None:
    monkeypatch.setattr(counting, "MIN_CHUNK_BYTES", 1024)
    monkeypatch.setattr(counting, "_count_range", _report_sigterm_disposition)
    counts = counting.count_files([_lines(tmp_path)], [], num_workers=2)
    assert set(counts) == {"default=True"} and counts["default=True"] > 1  # several chunks, all in workers


def test_clean_runs_close_their_pools_instead_of_terminating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python_sigterm_handler
) -> None:
    monkeypatch.setattr(counting, "MIN_CHUNK_BYTES", 1024)
    monkeypatch.setattr(multiprocessing.pool.Pool, "terminate", _never_terminate)
    path = _lines(tmp_path)
    assert counting.count_files([path], [], num_workers=2) == counting.count_files([path], [], num_workers=1)
    tokenizer = CharTokenizer.train([path])
    out = tmp_path / "ids.bin"
    count = text_data.encode_sources(tokenizer, [TextSource(str(path))], out, np.dtype("<u2"), num_workers=2)
    assert np.fromfile(out, dtype="<u2").tolist() == tokenizer.encode(path.read_text(encoding="utf-8"))
    assert count == path.stat().st_size


def test_a_failing_task_still_terminates_the_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counting, "MIN_CHUNK_BYTES", 1024)
    path = _lines(tmp_path)
    path.write_bytes(path.read_bytes() + b"\xff broken\n")
    with pytest.raises(Exception, match="not valid UTF-8"):
        counting.count_files([path], [], num_workers=2)
