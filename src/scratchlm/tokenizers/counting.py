"""Count pre-tokens over text files, in parallel worker processes for large inputs.

Files are cut into byte ranges at safe cuts (see `chunks`), so the counts equal those of a single pass.
The main process only holds range boundaries and the merged counts; each worker reads its own range, so
memory stays bounded by the chunk size times the number of workers however large the corpus is.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.pool
import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from scratchlm.tokenizers.chunks import TextSource, as_sources, iter_ranges, read_range, total_size
from scratchlm.tokenizers.pretokenize import count_pretokens, special_pattern

logger = logging.getLogger(__name__)

# Below this many bytes a pool's start-up (fork, pickling the counts back) costs more than it saves.
PARALLEL_MIN_BYTES = 2 << 20
MIN_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 32 << 20


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def plan_workers(total_bytes: int, num_workers: int | None) -> tuple[int, int]:
    """(worker processes, target chunk bytes) for a corpus of `total_bytes`; 1 worker means no pool."""
    workers = available_cpus() if num_workers is None else max(1, num_workers)
    if num_workers is None and total_bytes < PARALLEL_MIN_BYTES:
        workers = 1
    if workers == 1:
        return 1, MAX_CHUNK_BYTES
    target = min(max(total_bytes // (4 * workers), MIN_CHUNK_BYTES), MAX_CHUNK_BYTES)
    return workers, target


def pool_context() -> multiprocessing.context.BaseContext:
    """Fork where available: workers inherit the imported modules instead of re-importing torch."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


@contextmanager
def worker_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()
) -> Iterator[multiprocessing.pool.Pool]:
    """A process pool whose workers end gracefully: `close()` and `join()` after the work, `terminate()` on error.

    `Pool.__exit__` would terminate the workers with SIGTERM even after a clean run. That ends a worker only
    under the default disposition: a Python-level handler (the CLI installs one) is inherited through fork
    and runs only between bytecodes, so a worker blocked on the task queue's lock slept on and the parent's
    `join()` waited forever (1 in 15 to 1 in 40 looped runs of `scratchlm tokenizer train` on 2 MiB). Workers therefore
    restore the default action first, and a clean run sends no signal at all.
    """
    pool = pool_context().Pool(workers, initializer=_start_worker, initargs=(initializer, initargs))
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # so that terminate() ends this worker wherever it is
    if initializer is not None:
        initializer(*initargs)


def _count_range(task: tuple[str, int, int, tuple[str, ...]]) -> tuple[Counter[str], int]:
    path, start, end, special_tokens = task
    return count_pretokens(read_range(path, start, end), special_pattern(special_tokens)), end - start


def count_files(
    inputs: str | os.PathLike | TextSource | Sequence[str | os.PathLike | TextSource],
    special_tokens: Sequence[str],
    num_workers: int | None = None,
    progress: bool | None = None,
) -> Counter[str]:
    """Pre-token counts over all inputs (each is its own text: no pre-token spans two of them).

    `num_workers=None` picks one process for small inputs and every available CPU otherwise; `progress=None`
    shows a progress bar only for inputs of 64 MiB or more.
    """
    sources = as_sources(inputs)
    total = total_size(sources)
    workers, target = plan_workers(total, num_workers)
    specials = tuple(special_tokens)
    tasks = (
        (source.path, start, end, specials)
        for source in sources
        for start, end in iter_ranges(source, specials, target)
    )
    bar = progress_bar(total, progress, "pre-tokenizing")
    counts: Counter[str] = Counter()
    try:
        if workers == 1:
            for task in tasks:
                chunk_counts, nbytes = _count_range(task)
                counts.update(chunk_counts)
                bar.update(nbytes)
        else:
            logger.debug("pre-tokenizing %d bytes with %d processes, ~%d-byte chunks", total, workers, target)
            with worker_pool(workers) as pool:
                for chunk_counts, nbytes in pool.imap_unordered(_count_range, tasks):
                    counts.update(chunk_counts)
                    bar.update(nbytes)
    finally:
        bar.close()
    return counts


def progress_bar(total: int, progress: bool | None, desc: str, unit: str = "B"):
    """A tqdm bar on stderr; `progress=None` shows it only for 64 MiB or more of input."""
    from tqdm.auto import tqdm

    enabled = total >= (64 << 20) if progress is None else progress
    return tqdm(total=total, unit=unit, unit_scale=unit == "B", desc=desc, disable=not enabled, leave=False)
