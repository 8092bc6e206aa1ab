"""What every scratchlm tokenizer offers, and `load_tokenizer` for any saved one.

A saved tokenizer is a directory whose `tokenizer.json` names its `kind`; the trainer and the generator
only need `load_tokenizer(run_or_data_dir / "tokenizer")` and the methods of `TextTokenizer`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from scratchlm.errors import DataError


@runtime_checkable
class TextTokenizer(Protocol):
    """The common interface: ids are ints in [0, vocab_size)."""

    kind: str
    special_tokens: list[str]

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def special_token_id(self, token: str) -> int: ...

    def save(self, directory: str | os.PathLike) -> Path: ...


def id_list(ids: Iterable[int]) -> list:
    """`ids` as a list, from any iterable or from a tensor / NumPy array (through its .tolist(), as HF and
    tiktoken accept them): iterating a tensor would give 0-d tensors, not ids."""
    if hasattr(ids, "tolist"):
        values = ids.tolist()
        return values if isinstance(values, list) else [values]
    return list(ids)


def load_tokenizer(directory: str | os.PathLike) -> TextTokenizer:
    """Load the tokenizer saved in `directory`, whatever its kind."""
    from scratchlm.tokenizers.char import CharTokenizer
    from scratchlm.tokenizers.tokenizer import Tokenizer, read_tokenizer_meta

    directory = Path(directory)
    kinds = {Tokenizer.kind: Tokenizer, CharTokenizer.kind: CharTokenizer}
    meta = read_tokenizer_meta(directory)
    if meta["kind"] not in kinds:
        raise DataError(
            f"{directory / 'tokenizer.json'} has unknown kind {meta['kind']!r}; known kinds: {sorted(kinds)}."
        )
    return kinds[meta["kind"]].load(directory)
