"""Character-level tokenizer (nanoGPT's shakespeare_char): one id per distinct character, sorted by code point.

Special tokens, if any, take the ids after the characters and are matched before single characters
(longest first). On disk: `tokenizer.json` = {"kind": "char", "format": 1, "chars": [...],
"special_tokens": [...]}.
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from scratchlm.errors import ConfigError, DataError
from scratchlm.tokenizers.base import TokenizerAPIMixin, id_list
from scratchlm.tokenizers.chunks import TextSource, as_sources, iter_ranges, read_range, total_size
from scratchlm.tokenizers.pretokenize import check_special_tokens, special_pattern, split_specials
from scratchlm.tokenizers.saving import write_tokenizer_files

FORMAT_VERSION = 1


class CharTokenizer(TokenizerAPIMixin):
    """Maps each character of a fixed alphabet to an id; characters outside it are an error.

    For `token_to_id` / `id_to_token` a token is its character, a special token its text.
    """

    kind = "char"

    def __init__(self, chars: Iterable[str], special_tokens: Sequence[str] | None = None) -> None:
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ConfigError(f"char tokenizer entries must be single characters, got {bad[0]!r}.")
        self.chars: list[str] = sorted(set(chars))
        if not self.chars:
            raise ConfigError("a char tokenizer needs at least one character; train it on non-empty text.")
        self.special_tokens = check_special_tokens(special_tokens)
        self._ids = {c: i for i, c in enumerate(self.chars)}
        self._special_ids = {t: len(self.chars) + i for i, t in enumerate(self.special_tokens)}
        self._strings = self.chars + self.special_tokens
        self._special_re = special_pattern(self.special_tokens)

    @classmethod
    def train(
        cls,
        inputs: str | os.PathLike | TextSource | Sequence[str | os.PathLike | TextSource],
        special_tokens: Sequence[str] | None = None,
    ) -> CharTokenizer:
        """The alphabet of the given UTF-8 files (read in bounded chunks), special tokens excluded."""
        sources = as_sources(inputs)
        total_size(sources)
        specials = check_special_tokens(special_tokens)
        pattern = special_pattern(specials)
        chars: set[str] = set()
        for source in sources:
            for start, end in iter_ranges(source, specials, 16 << 20):
                text = read_range(source.path, start, end)
                chars.update(text if pattern is None else "".join(pattern.split(text)))
        if not chars:
            raise DataError("the input holds nothing but special tokens; a char tokenizer needs some text.")
        return cls(chars, specials)

    @property
    def vocab_size(self) -> int:
        return len(self._strings)

    def _id_strings(self) -> dict[int, str]:
        return dict(enumerate(self._strings))

    def special_token_id(self, token: str) -> int:
        try:
            return self._special_ids[token]
        except KeyError:
            raise ConfigError(f"{token!r} is not a special token of this tokenizer ({self.special_tokens}).") from None

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece, is_special in split_specials(text, self._special_re):
            if is_special:
                ids.append(self._special_ids[piece])
            else:
                ids.extend(self.encode_ordinary(piece))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of `text`'s characters, special tokens' text included (tiktoken's `encode_ordinary`)."""
        table = self._ids
        try:
            return [table[c] for c in text]
        except KeyError:
            unknown = next(c for c in text if c not in table)
            raise DataError(
                f"character {unknown!r} (U+{ord(unknown):04X}) is not in this char tokenizer's alphabet of "
                f"{len(self.chars)}; train the tokenizer on text that contains it."
            ) from None

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        """Ids of the concatenated strings, lazily; a tail that may start a special token waits for more text."""
        longest = max((len(t) for t in self.special_tokens), default=1)
        buffer = ""
        for chunk in iterable:
            buffer += chunk
            cut = len(buffer) - (longest - 1)
            if self._special_re is not None:  # never cut inside a special token that is already complete
                for match in self._special_re.finditer(buffer):
                    if match.start() < cut < match.end():
                        cut = match.start()
            if cut > 0:
                yield from self.encode(buffer[:cut])
                buffer = buffer[cut:]
        if buffer:
            yield from self.encode(buffer)

    def decode(self, ids: Iterable[int]) -> str:
        strings = self._strings
        ids = id_list(ids)
        try:
            if ids and min(ids) < 0:  # a negative index would silently count from the end
                raise IndexError
            return "".join([strings[i] for i in ids])
        except (IndexError, TypeError):
            bad = next(i for i in ids if not _is_index(i) or not 0 <= i < len(strings))
            raise DataError(
                f"cannot decode token id {bad!r}; this char tokenizer has ids 0..{len(strings) - 1}."
            ) from None

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        meta = {
            "kind": self.kind,
            "format": FORMAT_VERSION,
            "chars": self.chars,
            "special_tokens": self.special_tokens,
            "vocab_size": self.vocab_size,
        }
        # In place of any tokenizer saved there before: a BPE's vocab.json and merges.txt go (saving.py).
        return write_tokenizer_files(
            directory, {"tokenizer.json": json.dumps(meta, ensure_ascii=True, indent=1) + "\n"}
        )

    @classmethod
    def load(cls, directory: str | os.PathLike) -> CharTokenizer:
        from scratchlm.tokenizers.tokenizer import read_tokenizer_meta

        directory = Path(directory)
        meta = read_tokenizer_meta(directory, expected_kind=cls.kind)
        chars, specials = meta.get("chars"), meta.get("special_tokens", [])
        if not isinstance(chars, list) or not isinstance(specials, list):
            raise DataError(f"{directory / 'tokenizer.json'}: 'chars' and 'special_tokens' must be lists.")
        return cls(chars, specials)


def _is_index(value: object) -> bool:
    try:
        operator.index(value)
    except TypeError:
        return False
    return not isinstance(value, bool)
