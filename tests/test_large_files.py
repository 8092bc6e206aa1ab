"""Bounded memory on large inputs, at test-sized scale: an 80 MB token file and a 24 MB text file.

The figures at full size (a 2 GB token file, a 1 GB text file) come from benchmarks/large_files.py. Here
peak memory is read from the kernel: /proc/self/clear_refs resets the process's high-water mark (VmHWM),
so the peak of one operation is measured exactly, whatever ran before it in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from scratchlm.data.text import prepare_text_corpus
from scratchlm.data.token_files import load_token_file
from scratchlm.data.tokens import windows_at
from scratchlm.tokenizers import Tokenizer, train_bpe
from scratchlm.train.sources import TokenWindows

VOCAB = 50257
MB = 1 << 20


def status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))


def peak_growth_mb(operation: Callable[[], object]) -> float:
    """How far resident memory rose above its starting point while `operation` ran."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
    except OSError:
        pytest.skip("this kernel does not let a process reset its peak-memory mark")
    start = status_kb("VmRSS")
    operation()
    return (status_kb("VmHWM") - start) / 1024


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "train.bin"
    rng = np.random.default_rng(0)
    with open(path, "wb") as fh:
        for _ in range(5):
            fh.write(rng.integers(0, VOCAB, size=8 << 20, dtype=np.uint16).tobytes())  # 5 x 16 MB
    return path


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("text")
    rng = np.random.default_rng(1)
    words = ["".join(rng.choice(list("abcdefghij"), size=rng.integers(2, 8))) for _ in range(2000)]
    lines = [" ".join(rng.choice(words, size=rng.integers(3, 15))) + ".\n" for _ in range(4000)]
    block = "".join(lines) + "<|endoftext|>\n"
    text = root / "big.txt"
    text.write_text(block * (24 * MB // len(block)))
    (root / "sample.txt").write_text(block)
    vocab, merges = train_bpe(root / "sample.txt", 400, ["<|endoftext|>"], num_workers=1, progress=False)
    Tokenizer(vocab, merges, ["<|endoftext|>"]).save(root / "tokenizer")
    return text, root / "tokenizer"


def test_checking_every_id_of_a_token_file_reads_through_a_small_buffer(token_file: Path) -> None:
    assert token_file.stat().st_size == 80 * MB
    grown = peak_growth_mb(lambda: load_token_file(token_file, VOCAB, full_check=True))
    assert grown < 24, f"a full check of an 80 MB file raised resident memory by {grown:.0f} MB"


def test_random_windows_over_a_memmap_keep_resident_memory_flat(token_file: Path) -> None:
    tokens = load_token_file(token_file, VOCAB)
    source = TokenWindows(tokens, 16, 256, torch.device("cpu"), seed=0)

    def draw() -> None:
        for _ in range(400):  # 6400 windows: read through the mapping, they would page in most of the file
            source.next_batch()

    grown = peak_growth_mb(draw)
    assert grown < 16, f"400 batches raised resident memory by {grown:.0f} MB"


def test_windows_read_from_the_file_equal_indexing_the_array(token_file: Path) -> None:
    tokens = load_token_file(token_file, VOCAB)
    in_memory = np.fromfile(token_file, dtype=np.uint16)
    starts_B = np.array([0, 1, 12345, len(in_memory) - 257])
    inputs, targets = windows_at(tokens, starts_B, 256, torch.device("cpu"))
    expected = torch.from_numpy(in_memory[starts_B[:, None] + np.arange(257)].astype(np.int64))
    assert torch.equal(inputs, expected[:, :-1]) and torch.equal(targets, expected[:, 1:])
    view_inputs, _ = windows_at(tokens[10:], starts_B[:3], 256, torch.device("cpu"))  # a slice: read by indexing
    assert torch.equal(view_inputs, torch.from_numpy(in_memory[10:][starts_B[:3, None] + np.arange(256)]).long())


def test_encode_iterable_over_a_large_file_stays_small(text_file: tuple[Path, Path]) -> None:
    from scratchlm.tokenizers import load_tokenizer

    text, tokenizer_dir = text_file
    tokenizer = load_tokenizer(tokenizer_dir)
    counted = {}

    def encode() -> None:
        with open(text, encoding="utf-8") as fh:
            counted["tokens"] = sum(1 for _ in tokenizer.encode_iterable(fh))

    grown = peak_growth_mb(encode)
    assert counted["tokens"] > 24 * MB // 8
    assert grown < 16, f"encode_iterable over 24 MB raised resident memory by {grown:.0f} MB"


def test_preparing_a_corpus_holds_a_bounded_slice_of_it(text_file: tuple[Path, Path], tmp_path: Path) -> None:
    text, tokenizer_dir = text_file
    meta = {}

    def prepare() -> None:
        meta.update(prepare_text_corpus(text, tmp_path / "data", str(tokenizer_dir), num_workers=1, progress=False))

    grown = peak_growth_mb(prepare)
    assert meta["splits"]["train"]["tokens"] > 24 * MB // 8
    # The whole 24 MB fits in one encoding task here; its ids must still not all be Python ints at once
    # (~14M ids, most above the small-int cache: ~400 MB in a list). Measured growth: ~50-65 MB.
    assert grown < 80, f"preparing a 24 MB corpus raised resident memory by {grown:.0f} MB"
