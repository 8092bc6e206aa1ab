"""GPT-2's text formats for a byte-level BPE: `encoder.json`-style vocabularies and `vocab.bpe`-style merges.

GPT-2 writes each token's bytes as printable characters: the 188 printable, non-space Latin-1 bytes stand
for themselves and the other 68 bytes (controls, space, ...) map to U+0100 onwards, so a space is `Ġ` and a
newline `Ċ`. A token string never contains a real space, which lets a merges file hold one pair per line.
Files are parsed (JSON and plain lines), never evaluated, and every entry is type-checked.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping, Sequence

from scratchlm.errors import DataError
from scratchlm.fileio import refuse_special_file

MAX_TOKEN_ID = 1 << 32


@functools.cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@functools.cache
def unicode_to_byte() -> dict[str, int]:
    return {char: b for b, char in byte_to_unicode().items()}


def token_to_text(token: bytes) -> str:
    table = byte_to_unicode()
    return "".join(table[b] for b in token)


@functools.cache
def _to_latin1_table() -> dict[int, int]:
    return {ord(char): b for b, char in byte_to_unicode().items()}


@functools.cache
def _not_gpt2_char() -> re.Pattern[str]:
    return re.compile("[^" + "".join(re.escape(char) for char in unicode_to_byte()) + "]")


def text_to_token(text: str, where: str) -> bytes:
    bad = _not_gpt2_char().search(text)
    if bad is not None:
        raise DataError(
            f"{where}: {text!r} contains {bad.group()!r}, which is not a GPT-2 byte character; "
            "the file is not in GPT-2's byte-level format."
        )
    # Each GPT-2 character becomes the code point equal to its byte, which latin-1 encodes as that byte.
    return text.translate(_to_latin1_table()).encode("latin-1")


def read_vocab_json(path: str | os.PathLike) -> dict[int, bytes]:
    """Read an `encoder.json`-style vocabulary {token string: id} into {id: bytes}."""
    refuse_special_file(path, "vocabulary file")
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        raise DataError(f"vocabulary file {os.fspath(path)} does not exist; check the path.") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurdly nested
        raise DataError(f"vocabulary file {os.fspath(path)} is not valid JSON ({exc}); pass a vocab.json.") from None
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"vocabulary file {os.fspath(path)} must hold a non-empty JSON object {{token: id}}.")
    vocab: dict[int, bytes] = {}
    for text, token_id in raw.items():
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < MAX_TOKEN_ID:
            raise DataError(
                f"vocabulary file {os.fspath(path)}: token {text!r} has id {token_id!r}; ids must be "
                f"non-negative integers below {MAX_TOKEN_ID} (token files store uint32)."
            )
        if token_id in vocab:
            raise DataError(f"vocabulary file {os.fspath(path)}: id {token_id} is used twice; ids must be unique.")
        vocab[token_id] = text_to_token(text, os.fspath(path))
    return vocab


def read_merges_txt(path: str | os.PathLike) -> list[tuple[bytes, bytes]]:
    """Read a `vocab.bpe`-style merges file: optional `#version` line, then `left right` per line."""
    refuse_special_file(path, "merges file")
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except FileNotFoundError:
        raise DataError(f"merges file {os.fspath(path)} does not exist; check the path.") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"merges file {os.fspath(path)} is not UTF-8 text ({exc}); pass a merges.txt.") from None
    merges: list[tuple[bytes, bytes]] = []
    for number, line in enumerate(lines, start=1):
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise DataError(
                f"merges file {os.fspath(path)} line {number}: expected two tokens separated by one space, "
                f"got {line!r}."
            )
        where = f"merges file {os.fspath(path)} line {number}"
        merges.append((text_to_token(parts[0], where), text_to_token(parts[1], where)))
    return merges


def vocab_json_text(vocab: Mapping[int, bytes]) -> str:
    """The `encoder.json`-style text of a vocabulary (ids ascending); byte strings must be distinct."""
    by_text: dict[str, int] = {}
    for token_id in sorted(vocab):
        text = token_to_text(vocab[token_id])
        if text in by_text:
            raise DataError(
                f"ids {by_text[text]} and {token_id} hold the same bytes {vocab[token_id]!r}; a vocabulary "
                "file maps each token to one id, so remove the duplicate."
            )
        by_text[text] = token_id
    return json.dumps(by_text, ensure_ascii=False, indent=0) + "\n"


def merges_txt_text(merges: Sequence[tuple[bytes, bytes]]) -> str:
    lines = ["#version: 0.2"] + [f"{token_to_text(a)} {token_to_text(b)}" for a, b in merges]
    return "\n".join(lines) + "\n"
