"""What `scratchlm data text` / `prepare_text_corpus` does with an --out that already holds something:
another corpus is refused before any work (a run may train on its token files) unless --overwrite, the
same preparation run again rewrites the same files, and files that are not a corpus are left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from scratchlm.cli import main
from scratchlm.data.text import prepare_text_corpus
from scratchlm.errors import ConfigError, DataError
from scratchlm.tokenizers import bpe

EOT = "<|endoftext|>"


@pytest.fixture
def stories(tmp_path: Path) -> Path:
    path = tmp_path / "stories.txt"
    path.write_text("".join(f"Story {i}: the cat sat on the mat.\nThe end.\n{EOT}" for i in range(60)), "utf-8")
    return path


@pytest.fixture
def other(tmp_path: Path) -> Path:
    path = tmp_path / "other.txt"
    path.write_text("".join(f"Line {i} of a different text.\n" for i in range(80)), encoding="utf-8")
    return path


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _no_training(*args, **kwargs):
    raise AssertionError("the output directory must be checked before the tokenizer is trained")


def test_another_corpus_is_refused_before_training(
    stories: Path, other: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "data"
    prepare_text_corpus(stories, out, "bpe", vocab_size=300)
    before = _files(out)
    monkeypatch.setattr(bpe, "train_bpe", _no_training)
    for kwargs, differ in (
        ({"inputs": other, "vocab_size": 300}, "input files"),
        ({"inputs": stories, "vocab_size": 320}, "tokenizer"),
        ({"inputs": stories, "vocab_size": 300, "val_fraction": 0.2}, "validation split"),
        ({"inputs": stories, "vocab_size": 300, "special_tokens": []}, "special tokens"),
    ):
        with pytest.raises(DataError, match=rf"another corpus .*this command differs in its {differ}.* --overwrite"):
            prepare_text_corpus(out_dir=out, tokenizer="bpe", **kwargs)
    with pytest.raises(DataError, match="already holds another corpus"):
        prepare_text_corpus(stories, out, "char")
    assert _files(out) == before


def test_the_same_preparation_again_rewrites_the_same_files(
    stories: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "data"
    prepare_text_corpus(stories, out, "bpe", vocab_size=300)
    before = {name: data for name, data in _files(out).items() if name != "meta.json"}
    monkeypatch.chdir(stories.parent)
    prepare_text_corpus(stories.name, out, "bpe", vocab_size=300)  # a relative spelling of the same path
    assert {name: data for name, data in _files(out).items() if name != "meta.json"} == before


def test_overwrite_replaces_another_corpus(stories: Path, other: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    prepare_text_corpus(stories, out, "bpe", vocab_size=300)
    meta = prepare_text_corpus(other, out, "char", overwrite=True)
    assert meta["tokenizer"]["kind"] == "char" and meta["sources"][0]["path"] == str(other)


def test_files_that_are_not_a_corpus_are_kept(stories: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "notes.txt"
    out_file.write_text("my notes")
    with pytest.raises(ConfigError, match="is a file; give the path of a directory"):
        prepare_text_corpus(stories, out_file, "char")
    assert out_file.read_text() == "my notes"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "train.bin").write_bytes(b"someone else's ids")
    with pytest.raises(DataError, match=r"holds train\.bin but no corpus meta\.json"):
        prepare_text_corpus(stories, foreign, "char")
    assert (foreign / "train.bin").read_bytes() == b"someone else's ids"
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "README").write_text("kept")
    prepare_text_corpus(stories, shared, "char")
    assert (shared / "README").read_text() == "kept" and (shared / "meta.json").is_file()


def test_cli_refuses_in_one_line_and_overwrites_when_asked(
    stories: Path, other: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "data"
    base = ["data", "text", "--tokenizer", "char", "--out", str(out), "--no-progress"]
    assert main([*base, "--input", str(stories)]) == 0
    assert main([*base, "--input", str(stories)]) == 0  # the same command again
    capsys.readouterr()
    assert main([*base, "--input", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds another corpus (a char tokenizer on stories.txt; this" in err
    assert main([*base, "--input", str(other), "--overwrite"]) == 0
