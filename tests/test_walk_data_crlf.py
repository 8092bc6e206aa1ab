"""A text file with Windows line breaks and no special tokens is cut into ranges like any other (so it is
counted, encoded and split for validation in bounded pieces), and the cuts change no pre-token or id."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from scratchlm.data.text import load_token_dir, prepare_text_corpus
from scratchlm.tokenizers import counting
from scratchlm.tokenizers.chunks import TextSource, iter_ranges, read_range
from scratchlm.tokenizers.pretokenize import PRETOKEN_RE, special_pattern, split_specials

LINES = ["Once upon a time,", "there was a cat.", "  It's   indented!", "", "x", "42 apples", "\tTabbed 'll"]


@pytest.fixture
def crlf(tmp_path: Path) -> Path:
    rng = random.Random(0)
    path = tmp_path / "windows.txt"
    path.write_bytes("\r\n".join(rng.choice(LINES) for _ in range(3000)).encode("utf-8") + b"\r\n")
    return path


def test_a_crlf_file_is_cut_before_the_last_byte_of_its_spacing(crlf: Path) -> None:
    data = crlf.read_bytes()
    ranges = list(iter_ranges(TextSource(str(crlf)), [], 4096))
    assert len(ranges) > 5  # before: one range, the whole file
    # x|\r\ny would split the one pre-token \r\n of `x\r\n` alone; x\r|\ny and x| y are exact.
    assert all(data[end : end + 1] in (b" ", b"\n", b"\t") and data[end - 1 : end] != b"\n" for _, end in ranges[:-1])
    pieces = [PRETOKEN_RE.findall(read_range(crlf, start, end)) for start, end in ranges]
    assert [token for piece in pieces for token in piece] == PRETOKEN_RE.findall(data.decode("utf-8"))


def test_crlf_counts_encodings_and_the_validation_cut_match_one_pass(
    crlf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(counting, "MIN_CHUNK_BYTES", 2048)
    assert counting.count_files([crlf], [], num_workers=2) == counting.count_files([crlf], [], num_workers=1)
    text = crlf.read_bytes().decode("utf-8")  # ASCII: character offsets are byte offsets
    data = tmp_path / "data"
    meta = prepare_text_corpus(crlf, data, "bpe", vocab_size=300, val_fraction=0.25, special_tokens=[], num_workers=2)
    cut = meta["val_split"]["byte_offset"]
    assert text[cut - 2 : cut] == "\r\n"  # the start of a line, not the middle of a word as before
    corpus = load_token_dir(data, full_check=True)
    tokenizer = corpus.tokenizer()
    assert corpus.train.tolist() == tokenizer.encode(text[:cut]) and corpus.val.tolist() == tokenizer.encode(text[cut:])


def test_no_cut_between_the_bytes_of_a_line_break_before_a_special_token(tmp_path: Path) -> None:
    # Before a special token `\r\n` ends its piece and is one pre-token; cut between `\r` and `\n` it was two.
    rng = random.Random(1)
    path = tmp_path / "documents.txt"
    docs = ("\r\n".join(rng.choice(LINES[:3]) for _ in range(rng.randint(1, 4))) for _ in range(600))
    path.write_bytes("".join(f"{doc}\r\n<|endoftext|>" for doc in docs).encode("utf-8"))
    specials = ["<|endoftext|>"]
    pattern = special_pattern(specials)

    def pretokens(text: str) -> list[str]:
        return [
            t
            for piece, special in split_specials(text, pattern)
            for t in ([piece] if special else PRETOKEN_RE.findall(piece))
        ]

    ranges = list(iter_ranges(TextSource(str(path)), specials, 256))
    assert len(ranges) > 5
    pieces = [token for start, end in ranges for token in pretokens(read_range(path, start, end))]
    assert pieces == pretokens(path.read_bytes().decode("utf-8"))
