"""Pre-tokenization shared by BPE training and encoding: special-token splitting and the GPT-2 regex.

Text is first cut at special tokens (longest match first, so `<|a|><|a|>` beats `<|a|>` when both are
special); the pieces between them are cut into pre-tokens by the GPT-2 pattern. BPE merges never cross a
pre-token, and special tokens are never pre-tokenized or merged.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence

import regex

from scratchlm.errors import ConfigError

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PRETOKEN_RE = regex.compile(GPT2_PATTERN)
PRETOKEN_SPACE_RE = regex.compile(r"\s")  # whitespace as the pattern's \s sees it (Unicode, not str.isspace)


def check_special_tokens(special_tokens: Sequence[str] | None) -> list[str]:
    """Validate a special-token list and return it as a list (order kept: it decides their ids)."""
    if special_tokens is None:
        return []
    if isinstance(special_tokens, (str, bytes)):
        raise ConfigError(
            f"special_tokens must be a list of strings, got the single {type(special_tokens).__name__} "
            f"{special_tokens!r}; wrap it in a list."
        )
    tokens = list(special_tokens)
    for token in tokens:
        if not isinstance(token, str) or not token:
            raise ConfigError(f"every special token must be a non-empty string, got {token!r}.")
    duplicates = sorted({t for t in tokens if tokens.count(t) > 1})
    if duplicates:
        raise ConfigError(f"special tokens {duplicates} are listed more than once; list each once.")
    return tokens


def special_pattern(special_tokens: Sequence[str]) -> re.Pattern[str] | None:
    """A pattern matching any special token, longest first; None when there are none."""
    if not special_tokens:
        return None
    # Alternation tries branches in order, so sorting longest first makes an overlapping pair match the
    # longer token at a given position.
    ordered = sorted(special_tokens, key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in ordered))


def split_specials(text: str, pattern: re.Pattern[str] | None) -> Iterator[tuple[str, bool]]:
    """Yield `(piece, is_special)` in order; ordinary pieces are never empty."""
    if pattern is None:
        if text:
            yield text, False
        return
    start = 0
    for match in pattern.finditer(text):
        if match.start() > start:
            yield text[start : match.start()], False
        yield match.group(), True
        start = match.end()
    if start < len(text):
        yield text[start:], False


def count_pretokens(text: str, pattern: re.Pattern[str] | None) -> Counter[str]:
    """How often each pre-token occurs in `text`, special tokens excluded."""
    counts: Counter[str] = Counter()
    pieces = [text] if pattern is None else pattern.split(text)
    for piece in pieces:
        if piece:
            counts.update(PRETOKEN_RE.findall(piece))
    return counts
