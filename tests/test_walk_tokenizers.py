"""A walk through `scratchlm tokenizer train/encode/decode` and the tokenizer API as a Hugging Face /
tiktoken user would take it: the mistakes and edge cases that once went wrong, each pinned by a test."""

from __future__ import annotations

import io
import itertools
import os
import random
import stat
import time
from pathlib import Path

import pytest

from scratchlm.cli import main
from scratchlm.tokenizers import Tokenizer, load_tokenizer, train_bpe
from scratchlm.tokenizers.merge_list import MergeList

EOT = "<|endoftext|>"
TEXT = "hello world, hello there! the cat sat on the mat.\n" * 20


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("walk")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT + EOT + TEXT, encoding="utf-8")
    vocab, merges = train_bpe(corpus, 300, [EOT])
    return Tokenizer(vocab, merges, [EOT]).save(root / "tok")


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape"))


def test_encode_out_refuses_a_fifo_instead_of_replacing_it(tokenizer_dir: Path, tmp_path: Path, capsys) -> None:
    # `--out /dev/null` once replaced the device node with a regular file (atomic rename over it).
    text = tmp_path / "in.txt"
    text.write_text("hello", encoding="utf-8")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    rc = main(["tokenizer", "encode", "--tokenizer", str(tokenizer_dir), "--input", str(text), "--out", str(fifo)])
    assert rc == 2
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    err = capsys.readouterr().err
    assert "not a regular file" in err and err.count("\n") == 1


def test_encode_out_empty_string_is_an_error(tokenizer_dir: Path, tmp_path: Path, capsys) -> None:
    text = tmp_path / "in.txt"
    text.write_text("hello", encoding="utf-8")
    rc = main(["tokenizer", "encode", "--tokenizer", str(tokenizer_dir), "--input", str(text), "--out", ""])
    assert rc == 2
    out = capsys.readouterr()
    assert out.out == "" and "--out" in out.err


def test_train_out_empty_string_is_an_error(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    # Path("") is the current directory: an empty $OUT once saved the tokenizer there.
    text = tmp_path / "in.txt"
    text.write_text(TEXT, encoding="utf-8")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    rc = main(["tokenizer", "train", "--input", str(text), "--vocab-size", "260", "--out", ""])
    assert rc == 2
    assert list(work.iterdir()) == []
    assert "--out" in capsys.readouterr().err


def test_train_out_under_a_file_fails_before_training(tmp_path: Path, capsys, monkeypatch) -> None:
    text = tmp_path / "in.txt"
    text.write_text(TEXT, encoding="utf-8")
    blocker = tmp_path / "afile"
    blocker.write_text("x", encoding="utf-8")

    def no_training(*args, **kwargs):
        raise AssertionError("trained although --out cannot be written")

    monkeypatch.setattr("scratchlm.tokenizers.train_bpe", no_training)
    rc = main(["tokenizer", "train", "--input", str(text), "--vocab-size", "260", "--out", str(blocker / "tok")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "afile" in err and "not a directory" in err


def test_encode_stdin_that_is_not_utf8_names_the_byte(tokenizer_dir: Path, capsys, monkeypatch) -> None:
    # Python decodes stdin with surrogateescape: the error used to speak of a "lone surrogate U+DCFF".
    _stdin(monkeypatch, b"ok \xff bad")
    rc = main(["tokenizer", "encode", "--tokenizer", str(tokenizer_dir), "--input", "-"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "UTF-8" in err and "0xff" in err and "surrogate" not in err


def test_encode_stdin_round_trips_crlf_and_multibyte_split_anywhere(tokenizer_dir: Path, capsys, monkeypatch) -> None:
    text = "a\r\nb\r\n\r\ncafé 🙂 e\u0301" + EOT + "end"
    _stdin(monkeypatch, text.encode("utf-8"))
    assert main(["tokenizer", "encode", "--tokenizer", str(tokenizer_dir), "--input", "-"]) == 0
    ids = [int(w) for w in capsys.readouterr().out.split()]
    assert load_tokenizer(tokenizer_dir).decode(ids) == text


def test_encode_an_empty_file_prints_no_ids(tokenizer_dir: Path, tmp_path: Path, capsys) -> None:
    # `--text ""` and an empty stdin gave an empty line; an empty file was an error.
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert main(["tokenizer", "encode", "--tokenizer", str(tokenizer_dir), "--input", str(empty)]) == 0
    assert capsys.readouterr().out == "\n"
    out = tmp_path / "empty.bin"
    rc = main(["tokenizer", "encode", "--tokenizer", str(tokenizer_dir), "--input", str(empty), "--out", str(out)])
    assert rc == 0 and out.read_bytes() == b""


def test_single_byte_special_token_trains_and_saves(tmp_path: Path) -> None:
    # The byte "!" already has id 33; a second id for the same bytes made save() fail after training.
    corpus = tmp_path / "in.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    vocab, merges = train_bpe(corpus, 270, ["!", EOT])
    assert len(set(vocab.values())) == len(vocab) == 270
    tokenizer = Tokenizer(vocab, merges, ["!", EOT])
    assert tokenizer.special_token_id("!") == 33
    loaded = load_tokenizer(tokenizer.save(tmp_path / "tok"))
    assert loaded.encode("hi!" + EOT) == tokenizer.encode("hi!" + EOT)
    assert loaded.decode(loaded.encode(TEXT)) == TEXT


def test_single_byte_special_tokens_do_not_count_against_vocab_size(tmp_path: Path) -> None:
    corpus = tmp_path / "in.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    vocab, _ = train_bpe(corpus, 256, ["\n"])
    assert len(vocab) == 256


def _reference_merge(merge_list: MergeList, data: bytes) -> list[int]:
    """Merge-list BPE by the definition: merge every occurrence of the best-ranked pair, then look again."""
    ids = [merge_list.byte_ids[b] for b in data]
    while True:
        ranked = [(merge_list.table[p][0], p) for p in itertools.pairwise(ids) if p in merge_list.table]
        if not ranked:
            return ids
        _, (left, right) = min(ranked)
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == (left, right):
                out.append(merge_list.table[(left, right)][1])
                i += 2
            else:
                out.append(ids[i])
                i += 1
        ids = out


def _letter_merges() -> MergeList:
    """Every pair of letters, then every letter pair followed by a letter: nested merges as in GPT-2."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    token_ids = {bytes([b]): b for b in range(256)}
    merges = []
    for parts in [(x, y) for x in letters for y in letters] + [
        (x + y, z) for x in "aeiou" for y in letters for z in letters
    ]:
        token_ids[(parts[0] + parts[1]).encode()] = len(token_ids)
        merges.append((parts[0].encode(), parts[1].encode()))
    return MergeList(token_ids, merges)


def test_pure_path_is_not_quadratic_on_one_long_word() -> None:
    # A 20k-letter word took seconds (each merge rescanned the whole word); 1 MB would have taken hours.
    rng = random.Random(0)
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(20000)).encode()
    merge_list = _letter_merges()
    start = time.perf_counter()
    merge_list.encode(word)
    assert time.perf_counter() - start < 0.5


def test_pure_path_merges_exactly_as_the_definition() -> None:
    rng = random.Random(1)
    merge_list = _letter_merges()
    for length in [*range(0, 12), 50, 300]:
        for alphabet in ("ab", "aeb", "abcdefghijklmnopqrstuvwxyz"):
            word = "".join(rng.choice(alphabet) for _ in range(length)).encode()
            assert merge_list.encode(word) == _reference_merge(merge_list, word), word
