"""Corpus preparation (`scratchlm data text`), token files, the tokenizer commands, and the CS336 adapters."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from scratchlm.cli import main
from scratchlm.data import text as text_data
from scratchlm.data.text import load_token_dir, prepare_text_corpus
from scratchlm.data.token_files import load_token_file, token_dtype
from scratchlm.errors import ConfigError, DataError
from scratchlm.tokenizers import CharTokenizer, counting, load_tokenizer

EOT = "<|endoftext|>"
STORY = "Tom had a red ball. He liked to play with it every day. One day, the ball rolled away!\n"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "stories.txt"
    path.write_text("".join(f"{i}: {STORY}{STORY.upper()}{EOT}" for i in range(200)), encoding="utf-8")
    return path


def _decode_splits(directory: Path) -> tuple[str, str]:
    corpus = load_token_dir(directory, full_check=True)
    tokenizer = corpus.tokenizer()
    return tokenizer.decode(corpus.train.tolist()), tokenizer.decode(corpus.val.tolist())


def test_bpe_corpus_round_trips_and_meta_describes_it(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    meta = prepare_text_corpus(corpus, out, "bpe", vocab_size=400, val_fraction=0.2)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "tokenizer", "train.bin", "val.bin"]
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["vocab_size"] == 400 and meta["dtype"] == "uint16"
    assert meta["tokenizer"] == {
        "kind": "bpe",
        "dir": "tokenizer",
        "special_tokens": [EOT],
        "source": {"trained": "bpe", "vocab_size_requested": 400},
    }
    assert meta["sources"][0]["sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    text = corpus.read_text(encoding="utf-8")
    cut = meta["val_split"]["byte_offset"]
    assert 0.75 * len(text) < cut < 0.85 * len(text)
    assert "".join(_decode_splits(out)) == text
    loaded = load_token_dir(out)
    assert len(loaded.train) == meta["splits"]["train"]["tokens"] and loaded.train.dtype == np.uint16
    assert loaded.tokenizer().encode(text[cut:]) == loaded.val.tolist()


def test_parallel_encoding_equals_single_process(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counting, "MIN_CHUNK_BYTES", 2048)
    one = prepare_text_corpus(corpus, tmp_path / "one", "bpe", vocab_size=300, num_workers=1)
    two = prepare_text_corpus(corpus, tmp_path / "two", "bpe", vocab_size=300, num_workers=2)
    assert one["splits"] == two["splits"]
    for name in ("train.bin", "val.bin"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_chunked_encoding_equals_one_call_with_overlapping_specials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scratchlm.data.text import encode_sources
    from scratchlm.tokenizers import Tokenizer, train_bpe
    from scratchlm.tokenizers.chunks import TextSource

    monkeypatch.setattr(counting, "MIN_CHUNK_BYTES", 64)
    path = tmp_path / "runs.txt"
    text = "".join(f"story {i}:\n{STORY}{EOT * (i % 5)}x\n'll\n" for i in range(60))
    path.write_text(text, encoding="utf-8")
    vocab, merges = train_bpe(path, 300, [EOT])
    tok = Tokenizer(vocab, merges, [EOT, EOT * 2])
    for workers in (1, 2):
        count = encode_sources(tok, [TextSource(str(path))], tmp_path / "t.bin", token_dtype(tok.vocab_size), workers)
        assert np.fromfile(tmp_path / "t.bin", dtype=np.uint16).tolist() == tok.encode(text)
        assert count == len(tok.encode(text))


def test_char_corpus_with_separate_validation_file(corpus: Path, tmp_path: Path) -> None:
    val = tmp_path / "val.txt"
    val.write_text("Tom ran home.\n", encoding="utf-8")
    meta = prepare_text_corpus(corpus, tmp_path / "char", "char", val_inputs=[val])
    assert meta["tokenizer"]["kind"] == "char" and meta["val_split"]["kind"] == "files"
    assert _decode_splits(tmp_path / "char")[1] == "Tom ran home.\n"
    assert meta["splits"]["train"]["tokens"] == len(corpus.read_text(encoding="utf-8"))


def test_reusing_a_saved_tokenizer_directory(corpus: Path, tmp_path: Path) -> None:
    prepare_text_corpus(corpus, tmp_path / "first", "bpe", vocab_size=300)
    meta = prepare_text_corpus(corpus, tmp_path / "second", str(tmp_path / "first" / "tokenizer"))
    assert meta["tokenizer"]["source"]["loaded"].endswith("tokenizer")
    assert (tmp_path / "first" / "train.bin").read_bytes() == (tmp_path / "second" / "train.bin").read_bytes()


def test_gpt2_corpus_uses_uint16(shared_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "s.txt"
    src.write_text(STORY * 20, encoding="utf-8")
    meta = prepare_text_corpus(src, tmp_path / "g", "gpt2", gpt2_dir=shared_data / "gpt2")
    assert meta["vocab_size"] == 50257 and meta["dtype"] == "uint16"
    assert "".join(_decode_splits(tmp_path / "g")) == STORY * 20


def test_failed_preparation_leaves_no_partial_output(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good text\n" * 50 + b"\xff\xfe broken\n" + b"more\n" * 10)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="offset 500"):
        prepare_text_corpus(bad, out, "char")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.txt"]  # the staging directory is gone too


def test_failed_rerun_keeps_the_previous_output(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    prepare_text_corpus(corpus, out, "char")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def explode(*args, **kwargs):
        raise DataError("simulated failure while encoding.")

    monkeypatch.setattr(text_data, "encode_sources", explode)
    with pytest.raises(DataError, match="simulated"):
        prepare_text_corpus(corpus, out, "char")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"tokenizer": "char", "vocab_size": 100}, ConfigError, "only applies to --tokenizer bpe"),
        ({"tokenizer": "bpe", "vocab_size": 100}, ConfigError, "smaller than the 256 byte tokens"),
        ({"tokenizer": "nope"}, ConfigError, "or a saved tokenizer directory"),
        ({"tokenizer": "gpt2", "gpt2_dir": None}, ConfigError, "--gpt2-dir"),
        ({"tokenizer": "char", "val_fraction": 1.5}, ConfigError, "between 0 and 1"),
    ],
)
def test_bad_options(corpus: Path, tmp_path: Path, monkeypatch, kwargs: dict, error: type, message: str) -> None:
    monkeypatch.delenv("SCRATCHLM_GPT2_DIR", raising=False)
    tokenizer = kwargs.pop("tokenizer")
    with pytest.raises(error, match=message):
        prepare_text_corpus(corpus, tmp_path / "out", tokenizer, **kwargs)
    assert not (tmp_path / "out").exists()


def test_empty_input_and_unsplittable_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="is empty"):
        prepare_text_corpus(empty, tmp_path / "o", "char")
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("a")
    with pytest.raises(DataError, match="cannot split"):
        prepare_text_corpus(tiny, tmp_path / "o", "char")


# ---- token files ----------------------------------------------------------------------------------------
def test_token_dtype_boundaries() -> None:
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_load_token_file_checks(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    np.arange(100, dtype=np.uint16).tofile(path)
    assert load_token_file(path, 100).tolist() == list(range(100))
    with pytest.raises(DataError, match="token 99 has id 99, not below the vocabulary size 99"):
        load_token_file(path, 99)
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="201 bytes, not a multiple of 2"):
        load_token_file(path, 100)
    path.write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        load_token_file(path, 100)
    with pytest.raises(DataError, match="does not exist"):
        load_token_file(tmp_path / "missing.bin", 100)
    np.arange(10, dtype=np.uint32).tofile(path)
    with pytest.raises(DataError, match=r"meta\.json records 7"):
        load_token_file(
            path, {"vocab_size": 10, "dtype": "uint32", "splits": {"train": {"file": "t.bin", "tokens": 7}}}
        )


def test_huge_files_are_sampled_unless_asked_for_every_id(tmp_path: Path, monkeypatch) -> None:
    from scratchlm.data import token_files

    monkeypatch.setattr(token_files, "FULL_CHECK_TOKENS", 1000)
    monkeypatch.setattr(token_files, "_SAMPLE_BLOCK_TOKENS", 16)
    tokens = np.zeros(100_000, dtype=np.uint16)
    tokens[-1] = 500  # the last block is always sampled
    tokens.tofile(tmp_path / "a.bin")
    with pytest.raises(DataError, match="token 99999 has id 500"):
        load_token_file(tmp_path / "a.bin", 100)
    tokens[-1], tokens[50_007] = 0, 500  # between sampled blocks: found only by the full check
    tokens.tofile(tmp_path / "a.bin")
    assert len(load_token_file(tmp_path / "a.bin", 100)) == 100_000
    with pytest.raises(DataError, match="token 50007 has id 500"):
        load_token_file(tmp_path / "a.bin", 100, full_check=True)


def test_load_token_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"meta\.json does not exist"):
        load_token_dir(tmp_path)
    (tmp_path / "meta.json").write_text('{"format": 1, "splits": {}}')
    with pytest.raises(DataError, match="lacks the 'train' split"):
        load_token_dir(tmp_path)


# ---- command line ---------------------------------------------------------------------------------------
def test_cli_data_text_and_tokenizer_commands(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "data"
    argv = ["data", "text", "--input", str(corpus), "--tokenizer", "bpe", "--vocab-size", "300", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    assert "train" in capsys.readouterr().out
    tok_dir = tmp_path / "tok"
    assert main(["tokenizer", "train", "--input", str(corpus), "--vocab-size", "300", "--out", str(tok_dir)]) == 0
    assert load_tokenizer(tok_dir).vocab_size == load_tokenizer(out / "tokenizer").vocab_size == 300
    capsys.readouterr()
    assert main(["tokenizer", "encode", "--tokenizer", str(tok_dir), "--text", f"Tom had{EOT}"]) == 0
    ids = capsys.readouterr().out.split()
    assert ids[-1] == "256"
    assert main(["tokenizer", "decode", "--tokenizer", str(tok_dir), "--ids", *ids]) == 0
    assert capsys.readouterr().out == f"Tom had{EOT}\n"
    assert (
        main(
            [
                "tokenizer",
                "encode",
                "--tokenizer",
                str(tok_dir),
                "--input",
                str(corpus),
                "--out",
                str(tmp_path / "c.bin"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["tokenizer", "decode", "--tokenizer", str(tok_dir), "--input", str(tmp_path / "c.bin")]) == 0
    assert capsys.readouterr().out == corpus.read_text(encoding="utf-8") + "\n"
    assert main(["tokenizer", "train", "--kind", "char", "--input", str(corpus), "--out", str(tmp_path / "ch")]) == 0
    assert load_tokenizer(tmp_path / "ch").kind == "char"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tokenizer", "decode", "--tokenizer", "{tok}", "--ids", "1", "x"], "--ids must be integers, got 'x'"),
        (["tokenizer", "decode", "--tokenizer", "{tok}", "--ids", "99999"], "cannot decode token id 99999"),
        (["tokenizer", "encode", "--tokenizer", "{tmp}", "--text", "a"], "tokenizer.json does not exist"),
        (["tokenizer", "train", "--input", "{tmp}/none.txt", "--out", "{tmp}/t"], "does not exist"),
        (["tokenizer", "train", "--input", "{corpus}", "--vocab-size", "10", "--out", "{tmp}/t"], "use at least 257"),
        (["data", "text", "--input", "{corpus}", "--tokenizer", "gpt2", "--out", "{tmp}/o"], "--gpt2-dir"),
    ],
)
def test_cli_mistakes_are_one_line(
    argv: list[str], message: str, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    monkeypatch.delenv("SCRATCHLM_GPT2_DIR", raising=False)
    tok = tmp_path / "tokdir"
    CharTokenizer("Tom had").save(tok)
    filled = [a.format(tok=tok, tmp=tmp_path, corpus=corpus) for a in argv]
    assert main(filled) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scratchlm: error:") and message in err and len(err.splitlines()) == 1


# ---- CS336 adapters -------------------------------------------------------------------------------------
def test_cs336_adapters(corpus: Path) -> None:
    from scratchlm.compat.cs336 import get_tokenizer, run_train_bpe

    vocab, merges = run_train_bpe(corpus, 300, [EOT])
    tok = get_tokenizer(vocab, merges, [EOT])
    text = corpus.read_text(encoding="utf-8")
    assert tok.decode(tok.encode(text)) == text
    assert list(tok.encode_iterable(text.splitlines(keepends=True))) == tok.encode(text)


@pytest.mark.parametrize("fraction", [0.1, 0.13, 0.17, 0.3])
def test_the_validation_split_starts_at_a_document_with_the_default_special_token(
    tmp_path: Path, fraction: float
) -> None:
    # Cyrillic stories: no ASCII spacing to cut at, and no --special-tokens given (bpe's default is EOT).
    path = tmp_path / "ru.txt"
    path.write_text(EOT.join(f"жили-были дед и баба {i}" for i in range(150)), encoding="utf-8")
    prepare_text_corpus(path, tmp_path / f"data{fraction}", "bpe", vocab_size=300, val_fraction=fraction)
    train, val = _decode_splits(tmp_path / f"data{fraction}")
    assert train + val == path.read_text(encoding="utf-8")
    assert val.startswith(EOT) and not train.endswith("<")


def test_the_validation_split_of_plain_text_starts_at_a_line(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(300)))
    prepare_text_corpus(path, tmp_path / "data", "char", val_fraction=0.1)
    train, val = _decode_splits(tmp_path / "data")
    assert train.endswith("\n") and val.startswith("line ")  # not between two words of a line


def test_a_validation_input_that_is_also_a_training_input_is_refused(corpus: Path, tmp_path: Path) -> None:
    other = tmp_path / "more.txt"
    other.write_text(STORY * 20, encoding="utf-8")
    with pytest.raises(ConfigError, match="is both a training input and the validation input"):
        prepare_text_corpus([corpus, other], tmp_path / "data", "char", val_inputs=[other])


def test_non_ascii_text_is_cut_into_ranges_for_bounded_memory(tmp_path: Path) -> None:
    from scratchlm.tokenizers.chunks import TextSource, iter_ranges, read_range
    from scratchlm.tokenizers.pretokenize import PRETOKEN_RE

    path = tmp_path / "zh-ru.txt"
    lines = (f"жили-были {i} 中文 文本\n\u3000дед\u00a0и баба.\n" for i in range(2000))
    path.write_text("".join(lines), encoding="utf-8")
    ranges = list(iter_ranges(TextSource(str(path)), [], 1024))
    assert len(ranges) > 50  # it was one range: the whole file, decoded and encoded at once
    text = path.read_text(encoding="utf-8")
    assert [t for a, b in ranges for t in PRETOKEN_RE.findall(read_range(path, a, b))] == PRETOKEN_RE.findall(text)


def test_get_batch_reads_a_copy_on_write_memmap_as_its_array(tmp_path: Path) -> None:
    from scratchlm.data.tokens import get_batch

    path = tmp_path / "raw.bin"
    np.arange(1000, dtype=np.uint16).tofile(path)
    written = np.memmap(path, np.uint16, mode="c")
    written[:] = 7  # in memory only: the file still holds 0..999
    x, y = get_batch(written, 4, 3, "cpu")
    assert x.eq(7).all() and y.eq(7).all()


def test_input_files_are_separated_by_end_of_text_as_documents(tmp_path: Path) -> None:
    files = []
    stories = (("a", "first story ends here.\n"), ("b", f"second story.{EOT}\n"), ("c", f"\n{EOT}third.\n"))
    for name, text in stories:
        files.append(tmp_path / f"{name}.txt")
        files[-1].write_text(text * 40, encoding="utf-8")
    last = tmp_path / "d.txt"
    last.write_text("fourth and last, long enough to hold the split.\n" * 40, encoding="utf-8")
    meta = prepare_text_corpus([*files, last], tmp_path / "data", "char", special_tokens=[EOT], val_fraction=0.1)
    train, val = _decode_splits(tmp_path / "data")
    a, b, c = (f.read_text(encoding="utf-8") for f in files)
    # One EOT between a and b and between c and d; b ends with one already and c starts with one, so none
    # is added between them.
    assert train.startswith(a + EOT + b + c + EOT) and meta["file_separator"] == EOT
    # The split cuts d in the middle: no separator at the cut, so the two halves make d again.
    assert train[len(a + EOT + b + c + EOT) :] + val == last.read_text(encoding="utf-8")
    characters = len(train + val) - (len(EOT) - 1) * (train + val).count(EOT)  # EOT is one token
    assert meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"] == characters
    # Without an end-of-text token there is nothing to separate with: the files are joined as they are.
    plain = prepare_text_corpus([*files, last], tmp_path / "plain", "char", special_tokens=[], val_fraction=0.1)
    assert (
        "".join(_decode_splits(tmp_path / "plain")) == a + b + c + last.read_text() and plain["file_separator"] is None
    )


def test_a_validation_file_list_is_separated_too(tmp_path: Path) -> None:
    train_file, val1, val2 = (tmp_path / f"{n}.txt" for n in ("train", "v1", "v2"))
    train_file.write_text("some training text\n" * 30, encoding="utf-8")
    val1.write_text("held out one\n", encoding="utf-8")
    val2.write_text("held out two\n", encoding="utf-8")
    prepare_text_corpus(train_file, tmp_path / "data", "bpe", vocab_size=300, val_inputs=[val1, val2])
    train, val = _decode_splits(tmp_path / "data")
    assert train == train_file.read_text() and val == f"held out one\n{EOT}held out two\n"
