"""Char tokenizer: alphabet from files, exact round trip, special tokens, save/load, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from scratchlm.errors import ConfigError, DataError
from scratchlm.tokenizers import CharTokenizer, TextTokenizer, Tokenizer, load_tokenizer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


def test_train_encode_decode(tmp_path: Path) -> None:
    path = tmp_path / "shakespeare.txt"
    path.write_text(TEXT, encoding="utf-8")
    tok = CharTokenizer.train(path)
    assert isinstance(tok, TextTokenizer)
    assert tok.chars == sorted(set(TEXT)) and tok.vocab_size == len(set(TEXT))
    ids = tok.encode(TEXT)
    assert len(ids) == len(TEXT) and tok.decode(ids) == TEXT
    assert tok.encode("\n") == [0]  # ids follow code-point order, as in nanoGPT's shakespeare_char


def test_special_tokens_come_after_the_characters(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("ab<|endoftext|>ba<|endoftext|>", encoding="utf-8")
    tok = CharTokenizer.train(path, ["<|endoftext|>"])
    assert tok.chars == ["a", "b"]  # the special token's characters are not part of the alphabet
    assert tok.special_token_id("<|endoftext|>") == 2
    assert tok.encode("ab<|endoftext|>a") == [0, 1, 2, 0]
    pieces = ["a", "<|end", "oftext", "|", ">b", "<", "|endoftext|><|endoftext|>"]
    assert list(tok.encode_iterable(pieces)) == tok.encode("".join(pieces))


def test_save_and_load(tmp_path: Path) -> None:
    tok = CharTokenizer("hello world", ["<eos>"])
    tok.save(tmp_path / "tok")
    for loaded in (CharTokenizer.load(tmp_path / "tok"), load_tokenizer(tmp_path / "tok")):
        assert loaded.chars == tok.chars and loaded.special_tokens == ["<eos>"]
        assert loaded.encode("hello<eos>") == tok.encode("hello<eos>")


def test_unknown_characters_and_ids(tmp_path: Path) -> None:
    tok = CharTokenizer("abc")
    with pytest.raises(DataError, match=r"character 'z' \(U\+007A\) is not in this char tokenizer's alphabet"):
        tok.encode("abz")
    for bad in ([3], [-1], ["a"]):
        with pytest.raises(DataError, match="cannot decode token id"):
            tok.decode(bad)
    with pytest.raises(ConfigError, match="at least one character"):
        CharTokenizer("")
    with pytest.raises(ConfigError, match="single characters"):
        CharTokenizer(["ab"])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="is empty"):
        CharTokenizer.train(empty)


def test_tiny_shakespeare_has_65_characters(shared_data: Path) -> None:
    tok = CharTokenizer.train(shared_data / "text" / "tinyshakespeare.txt")
    assert tok.vocab_size == 65  # nanoGPT's shakespeare_char vocabulary


def test_decode_takes_tensors_and_arrays_and_training_says_when_it_was_given_text(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from scratchlm.tokenizers import train_bpe

    path = tmp_path / "in.txt"
    path.write_text("the cat sat on the mat\n" * 20, encoding="utf-8")
    for tokenizer in (CharTokenizer.train(path), Tokenizer(*train_bpe(path, 260))):
        ids = tokenizer.encode("the cat")
        # Iterating a tensor gives 0-d tensors, which the decoders used to report as unknown ids.
        assert tokenizer.decode(torch.tensor(ids)) == tokenizer.decode(np.array(ids)) == "the cat"
    with pytest.raises(DataError, match="looks like text, not a file path; training reads files"):
        train_bpe("the cat sat on the mat\n" * 20, 260)
    with pytest.raises(DataError, match="looks like text, not a file path"):
        CharTokenizer.train("the cat sat on the mat\n" * 20)
