"""The tokenizer commands refuse, in one line and before any work, what would lose or garble saved data:
encoding a file onto itself, saving over a corpus's tokenizer or onto a file, decoding a corpus split
with another tokenizer; and an input directory is named as such."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratchlm.cli import main
from scratchlm.data.text import prepare_text_corpus
from scratchlm.tokenizers import CharTokenizer, bpe

TEXT = "".join(f"Line {i}: the cat sat on the mat.\n" for i in range(50))


@pytest.fixture
def text(tmp_path: Path) -> Path:
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def _error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("scratchlm: error: "), err
    return err


def _no_training(*args, **kwargs):
    raise AssertionError("the command must refuse before training")


def test_encode_refuses_to_write_ids_over_its_input(text: Path, tmp_path: Path, capsys) -> None:
    CharTokenizer.train([text]).save(tmp_path / "tok")
    link = tmp_path / "link.txt"
    link.symlink_to(text)
    for source in (text, link):
        argv = ["tokenizer", "encode", "--tokenizer", str(tmp_path / "tok"), "--input", str(source), "--out", str(text)]
        assert "is the input file itself" in _error(capsys, argv)
    assert text.read_text(encoding="utf-8") == TEXT


def test_train_refuses_a_file_or_a_corpus_tokenizer_as_out_before_training(
    text: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare_text_corpus(text, tmp_path / "corpus", "char")
    own = tmp_path / "corpus" / "tokenizer"
    before = {p.name: p.read_bytes() for p in own.iterdir()}
    monkeypatch.setattr(bpe, "train_bpe", _no_training)
    train = ["tokenizer", "train", "--input", str(text), "--vocab-size", "300", "--out"]
    assert "is a file; give the path of a directory" in _error(capsys, [*train, str(text)])
    for out in (str(own), f"{own}/", str(tmp_path / "corpus" / "." / "tokenizer")):
        assert "is the tokenizer of the corpus in" in _error(capsys, [*train, out])
    assert {p.name: p.read_bytes() for p in own.iterdir()} == before


def test_train_refuses_vocab_size_for_a_char_tokenizer(text: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "t")
    argv = ["tokenizer", "train", "--kind", "char", "--vocab-size", "300", "--input", str(text), "--out", out]
    assert "--vocab-size only applies to --kind bpe" in _error(capsys, argv)
    assert not (tmp_path / "t").exists()


def test_decode_of_a_corpus_split_needs_the_corpus_tokenizer(text: Path, tmp_path: Path, capsys) -> None:
    prepare_text_corpus(text, tmp_path / "corpus", "char")
    other = tmp_path / "other"
    CharTokenizer([*sorted(set(TEXT)), "#"]).save(other)  # one character more: another vocabulary
    split = str(tmp_path / "corpus" / "val.bin")
    err = _error(capsys, ["tokenizer", "decode", "--tokenizer", str(other), "--input", split])
    assert f"pass --tokenizer {tmp_path / 'corpus' / 'tokenizer'}" in err
    copy = tmp_path / "copy"
    CharTokenizer.load(tmp_path / "corpus" / "tokenizer").save(copy)  # the same tokenizer elsewhere is fine
    assert main(["tokenizer", "decode", "--tokenizer", str(copy), "--input", split]) == 0
    assert TEXT.endswith(capsys.readouterr().out[:-1])


def test_an_input_directory_is_named_as_one(tmp_path: Path, capsys) -> None:
    err = _error(capsys, ["tokenizer", "train", "--input", str(tmp_path), "--out", str(tmp_path / "t")])
    assert "is a directory, not a text file; pass the file(s) inside it" in err


def test_a_corpus_re_encoded_with_its_own_tokenizer_is_a_re_run(text: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "corpus"
    first = prepare_text_corpus(text, out, "char")
    argv = ["data", "text", "--input", str(text), "--tokenizer", str(out / "tokenizer"), "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0, capsys.readouterr().err
    again = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    # meta.json still says how the tokenizer was made, not "loaded from the directory just replaced"
    assert again["tokenizer"]["source"] == first["tokenizer"]["source"] == {"trained": "char"}
    assert again["splits"] == first["splits"]
    # another input is another corpus, however its tokenizer is chosen
    other = tmp_path / "other.txt"
    other.write_text(TEXT.upper(), encoding="utf-8")
    argv[3] = str(other)
    assert "already holds another corpus" in _error(capsys, argv)


def test_a_built_in_tokenizer_name_shadowing_a_directory_is_named(
    text: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    CharTokenizer.train([text]).save(tmp_path / "char")
    with caplog.at_level("WARNING"):
        meta = prepare_text_corpus(text, tmp_path / "corpus", "char")
    assert meta["tokenizer"]["source"] == {"trained": "char"}
    assert "pass --tokenizer ./char" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        meta = prepare_text_corpus(text, tmp_path / "corpus2", "./char")
    assert "loaded" in meta["tokenizer"]["source"] and "built-in" not in caplog.text
