"""What every scratchlm tokenizer offers, and `load_tokenizer` for any saved one.

A saved tokenizer is a directory whose `tokenizer.json` names its `kind`; the trainer and the generator
only need `load_tokenizer(run_or_data_dir / "tokenizer")` and the methods of `TextTokenizer`.
"""

from __future__ import annotations

import functools
import numbers
import operator
import os
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, runtime_checkable

from scratchlm.errors import ConfigError, DataError

END_OF_TEXT = "<|endoftext|>"


@runtime_checkable
class TextTokenizer(Protocol):
    """The common interface: ids are ints in [0, vocab_size)."""

    kind: str
    special_tokens: list[str]

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_ordinary(self, text: str) -> list[int]: ...

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def special_token_id(self, token: str) -> int: ...

    def save(self, directory: str | os.PathLike) -> Path: ...

    # Names from tiktoken and Hugging Face tokenizers / transformers (see `TokenizerAPIMixin`).
    def encode_batch(self, texts: Iterable[str], *, num_threads: int = 1) -> list[list[int]]: ...

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]: ...

    @property
    def n_vocab(self) -> int: ...

    def __len__(self) -> int: ...

    def get_vocab_size(self) -> int: ...

    def get_vocab(self) -> dict[str, int]: ...

    def token_to_id(self, token: str) -> int | None: ...

    def id_to_token(self, id: int) -> str | None: ...

    # `eot_token` is not listed: before Python 3.12 `isinstance(x, TextTokenizer)` reads every member, and
    # the property raises ConfigError on a tokenizer without `<|endoftext|>`.


class TokenizerAPIMixin:
    """The names users of tiktoken and Hugging Face `tokenizers` / `transformers` expect, defined once over
    each tokenizer's `encode`, `decode`, `vocab_size`, `special_tokens` / `special_token_id` and two hooks:
    `_id_strings()` (each id's string form, specials included) and `_encode_releases_gil`.
    """

    _encode_releases_gil: bool = False  # True where encode runs outside the GIL, so threads can overlap

    def _id_strings(self) -> Mapping[int, str]:
        """Each id's string form (special tokens included); defined by each tokenizer class."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------------------
    def encode_batch(self, texts: Iterable[str], *, num_threads: int = 1) -> list[list[int]]:
        """`[encode(t) for t in texts]` (tiktoken / HF name); the ids are the same however it runs.

        `num_threads > 1` spreads the texts over threads where encoding releases the GIL (the BPE fast
        path: tiktoken's Rust core); elsewhere it is a plain loop. Threads are opt-in, unlike tiktoken's
        default of 8: on a busy 2-core machine they were slower (each new thread starts with cold regex
        caches), so ask for them on a machine with idle cores and large batches.
        """
        if isinstance(texts, (str, bytes)):
            raise ConfigError(
                f"encode_batch takes a list of texts, got one {type(texts).__name__}; use encode(text) for one text."
            )
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ConfigError(f"num_threads must be a positive integer, got {num_threads!r}.")
        texts = list(texts)
        threads = min(num_threads, len(texts)) if self._encode_releases_gil else 1
        if threads <= 1:
            return [self.encode(text) for text in texts]
        with ThreadPoolExecutor(threads, thread_name_prefix="scratchlm-encode") as pool:
            return list(pool.map(self.encode, texts))

    def decode_batch(self, batch: Iterable[Iterable[int]]) -> list[str]:
        """`[decode(ids) for ids in batch]` (tiktoken / HF name); a 2-D tensor or array is a batch of rows."""
        rows = id_list(batch, check=False)
        if any(not hasattr(row, "__iter__") and not hasattr(row, "tolist") for row in rows):
            raise DataError("decode_batch takes a batch of id sequences (e.g. [[1, 2], [3]]); use decode(ids) for one.")
        return [self.decode(ids) for ids in rows]

    @property
    def n_vocab(self) -> int:
        """tiktoken's name for `vocab_size`."""
        return self.vocab_size

    def __len__(self) -> int:
        """`len(tokenizer)`, as in HF transformers: `vocab_size`."""
        return self.vocab_size

    def get_vocab_size(self) -> int:
        """HF tokenizers' name for `vocab_size`."""
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        """Every token's string form -> its id (HF tokenizers): GPT-2's byte alphabet for BPE tokens, the
        text for special tokens and characters."""
        return dict(self._token_tables[1])

    def token_to_id(self, token: str) -> int | None:
        """The id of the token whose string form is `token` (see the class's `_id_strings`), or None (HF
        tokenizers). A special token's text gives the special id, as `encode` does."""
        if not isinstance(token, str):
            raise TypeError(f"token_to_id takes a token string, got {type(token).__name__} {token!r}.")
        return self._token_tables[1].get(token)

    def id_to_token(self, id: int) -> str | None:  # `id`: HF tokenizers' parameter name
        """The string form of token `id`, or None when no token has that id (HF tokenizers)."""
        if isinstance(id, bool):
            raise TypeError(f"id_to_token takes an int id, got {id!r}.")
        try:
            index = operator.index(id)
        except TypeError:
            raise TypeError(f"id_to_token takes an int id, got {type(id).__name__} {id!r}.") from None
        return self._token_tables[0].get(index)

    @property
    def eot_token(self) -> int:
        """The id of `<|endoftext|>` (tiktoken's name); ConfigError if it is not a special token here."""
        return self.special_token_id(END_OF_TEXT)

    @functools.cached_property
    def _token_tables(self) -> tuple[dict[int, str], dict[str, int]]:
        """(id -> string, string -> id), built on first use. Where two ids share a string the lower
        ordinary id wins, and a special token's own id wins over any ordinary one (both as `encode`)."""
        by_id = dict(self._id_strings())
        by_string: dict[str, int] = {}
        for token_id in sorted(by_id):
            by_string.setdefault(by_id[token_id], token_id)
        for token in self.special_tokens:
            by_string[token] = self.special_token_id(token)
        return by_id, by_string


def id_list(ids: Iterable[int], *, check: bool = True) -> list:
    """`ids` as a list, from any iterable or from a tensor / NumPy array (through its .tolist(), as HF and
    tiktoken accept them): iterating a tensor would give 0-d tensors, not ids. With `check`, TypeError
    unless every id is an integer (not a bool or a float, which would match ids as dict keys)."""
    if hasattr(ids, "tolist"):
        dtype = getattr(ids, "dtype", None)
        if check and dtype is not None and not _integer_dtype(dtype):  # a float 1.0 would decode as id 1
            raise TypeError(
                f"token ids must be integers, got an array of {dtype}; cast it with .long() or .astype(int)."
            )
        values = ids.tolist()
        values = values if isinstance(values, list) else [values]
    else:
        values = list(ids)
    if check and not all(type(i) is int for i in values):  # the common case in one pass; else each id is checked
        # A bool or a float equals an int id as a dict key (True == 1 == 1.0): decoding would hide the mistake.
        # Anything else that is no id (a string, None) is the decoder's "cannot decode" error.
        numeric = (
            i
            for i in values
            if isinstance(i, bool) or (isinstance(i, numbers.Real) and not isinstance(i, numbers.Integral))
        )
        bad = next(numeric, None)
        if bad is not None:
            raise TypeError(f"token ids must be integers, got {bad!r} ({type(bad).__name__}).")
    return values


def _integer_dtype(dtype: object) -> bool:
    kind = getattr(dtype, "kind", None)  # a NumPy dtype's: "i" / "u" for integers
    if isinstance(kind, str):
        return kind in "iu"
    return not (
        getattr(dtype, "is_floating_point", False) or getattr(dtype, "is_complex", False) or str(dtype) == "torch.bool"
    )


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
