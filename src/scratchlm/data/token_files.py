"""Token files: flat arrays of little-endian unsigned ids (`train.bin`, `val.bin`) opened as np.memmap.

The dtype is uint16 when every id fits (vocab_size <= 65536), else uint32. Opening a file checks that its
size is a whole number of ids and that ids are below the vocabulary size: every id for files up to
`FULL_CHECK_TOKENS` (or when asked), evenly spaced blocks otherwise, so opening a multi-GB file stays cheap.
The check reads the file through one reusable buffer of `_READ_BLOCK_TOKENS` ids, not through the memmap,
so even a full check of a huge file adds at most that buffer to the process's resident memory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from scratchlm.errors import DataError

FULL_CHECK_TOKENS = 1 << 25
_SAMPLE_BLOCKS = 64
_SAMPLE_BLOCK_TOKENS = 1 << 16
_READ_BLOCK_TOKENS = 1 << 22


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest dtype holding ids 0..vocab_size-1: uint16 up to 65536 ids, else uint32."""
    if vocab_size < 1:
        raise DataError(f"vocab_size must be positive, got {vocab_size}.")
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def fully_checked(num_tokens: int) -> bool:
    """Whether opening a file of this many tokens checks every id (else evenly spaced samples of them)."""
    return num_tokens <= FULL_CHECK_TOKENS


def load_token_file(
    path: str | os.PathLike,
    meta_or_vocab_size: Mapping | int,
    *,
    dtype: str | np.dtype | None = None,
    full_check: bool = False,
) -> np.memmap:
    """Open a token file read-only after checking it; DataError says what is wrong and how to fix it.

    `meta_or_vocab_size` is a corpus `meta.json` dict (vocab size and dtype come from it, and the token
    count is checked when the file is one of its splits) or the vocabulary size itself (dtype then
    defaults to `token_dtype(vocab_size)`). `full_check` checks every id even in huge files.
    """
    path = os.fspath(path)
    expected_tokens = None
    if isinstance(meta_or_vocab_size, Mapping):
        meta = meta_or_vocab_size
        vocab_size, dtype = meta.get("vocab_size"), dtype or meta.get("dtype")
        splits = meta.get("splits", {})
        for split in splits.values() if isinstance(splits, Mapping) else ():
            if isinstance(split, Mapping) and split.get("file") == os.path.basename(path):
                expected_tokens = split.get("tokens")
    else:
        vocab_size = meta_or_vocab_size
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise DataError(f"{path}: vocab size must be a positive integer, got {vocab_size!r}.")
    try:
        dt = token_dtype(vocab_size) if dtype is None else np.dtype(dtype)
    except TypeError:
        raise DataError(f"{path}: {dtype!r} is not a NumPy dtype; token files are uint16 or uint32.") from None
    if dt.kind != "u":
        raise DataError(f"{path}: token files hold unsigned integers, got dtype {dt}.")
    if not os.path.isfile(path):
        raise DataError(f"token file {path} does not exist; prepare it with `scratchlm data text`.")
    size = os.path.getsize(path)
    if size % dt.itemsize:
        raise DataError(
            f"{path} is {size} bytes, not a multiple of {dt.itemsize} ({dt.name}); the file is truncated or "
            "was written with another dtype -- prepare it again."
        )
    if size == 0:
        raise DataError(f"token file {path} is empty; prepare it again from non-empty text.")
    if int(np.iinfo(dt).max) + 1 < vocab_size:
        raise DataError(f"{path}: dtype {dt.name} cannot hold ids up to {vocab_size - 1}; use uint32.")
    tokens = np.memmap(path, dtype=dt, mode="r")
    if expected_tokens is not None and len(tokens) != expected_tokens:
        raise DataError(
            f"{path} holds {len(tokens)} tokens but meta.json records {expected_tokens}; the directory is "
            "inconsistent -- prepare it again."
        )
    _check_ids(path, dt, len(tokens), vocab_size, full_check or fully_checked(len(tokens)))
    return tokens


def _check_ids(path: str, dt: np.dtype, n: int, vocab_size: int, full: bool) -> None:
    if full:
        block = _READ_BLOCK_TOKENS
        starts: list[int] | range = range(0, n, block)
    else:
        block = min(_SAMPLE_BLOCK_TOKENS, n)
        starts = sorted({*np.linspace(0, n - block, _SAMPLE_BLOCKS, dtype=np.int64).tolist(), n - block})
    buffer = np.empty(block, dtype=dt)
    with open(path, "rb") as fh:
        for start in starts:
            fh.seek(start * dt.itemsize)
            count = fh.readinto(memoryview(buffer).cast("B")) // dt.itemsize
            window = buffer[:count]
            if count and int(window.max()) >= vocab_size:
                offset = int(np.argmax(window >= vocab_size))
                raise DataError(
                    f"{path}: token {start + offset} has id {int(window[offset])}, not below the vocabulary size "
                    f"{vocab_size}; the file was made with another tokenizer -- prepare it again."
                )
