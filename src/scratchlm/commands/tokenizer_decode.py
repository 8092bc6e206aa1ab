"""`scratchlm tokenizer decode`: token ids -> text with a saved tokenizer.

The ids come from `--ids`, from a file, or from stdin, in the form `scratchlm tokenizer encode` prints them
(integers separated by whitespace or commas), so `encode ... | decode ...` works as a pipe; a binary token
file (`encode --out`, `data text`'s splits) is read with `--input FILE` as well.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import io
import os
import re
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from scratchlm.tokenizers.base import TextTokenizer

_ID_WORD = re.compile(rb"-?[0-9]+")
_ID_PREFIX = re.compile(rb"-?[0-9]*")
# Bytes that ids printed as text are made of; a token file whose first block holds nothing else is
# practically impossible (every byte of every id would have to be a digit, space, comma or minus).
_ID_TEXT = re.compile(rb"[0-9\s,-]*")
_SNIFF_BYTES = 1 << 16
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_MAX_ID_DIGITS = 12  # longer words are out of any vocabulary; int() of huge ones would even refuse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", required=True, metavar="DIR", help="saved tokenizer directory")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--ids", nargs="+", metavar="ID", help="token ids (space or comma separated)")
    source.add_argument(
        "--input",
        metavar="FILE",
        help="ids as `tokenizer encode` prints them, in a file or '-' for stdin (the default when stdin is "
        "piped), or a token file (.bin) written for this tokenizer",
    )
    parser.add_argument(
        "-n",
        "--no-newline",
        action="store_true",
        help="print the text exactly, without a final newline (so `encode FILE | decode -n` gives back FILE)",
    )


def run(args: argparse.Namespace) -> int:
    from scratchlm.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    size = tokenizer.vocab_size
    if args.ids is not None:
        # surrogateescape gives back the argument's original bytes, so an odd one is shown as it was typed.
        words = " ".join(args.ids).encode("utf-8", "surrogateescape")
        ids = parse_ids(io.BytesIO(words), "--ids", size)
    elif args.input is None or args.input == "-":
        ids = parse_ids(_stdin(args.input is None), "the ids on stdin", size)
    else:
        ids = _read_input(Path(args.input), Path(args.tokenizer), tokenizer)
    text = tokenizer.decode(ids) + ("" if args.no_newline else "\n")
    # UTF-8 whatever the locale, as `tokenizer encode` reads its input: print() would write a cp1252 or
    # latin-1 console's encoding (and fail on an emoji), so `encode | decode -n` would not give back the file.
    out = getattr(sys.stdout, "buffer", None)
    if out is None:  # a text-only stream (an embedding application's): it gets the text
        sys.stdout.write(text)
    else:
        sys.stdout.flush()
        out.write(text.encode("utf-8"))
        out.flush()
    return 0


def parse_ids(stream: BinaryIO, where: str, vocab_size: int, chunk_bytes: int = 1 << 16) -> list[int]:
    """Token ids written as text (`1 2 3`, `1,2,3`, one per line, ...), read from `stream` in chunks.

    DataError, naming `where` and the word's position, for a word that is not an integer or an id outside
    0..vocab_size-1: decoding would otherwise fail later with less to go on, or not at all for ids that
    another tokenizer produced.
    """
    ids: list[int] = []
    tail = b""
    while True:
        data = stream.read(chunk_bytes)
        text = tail + data
        words = text.replace(b",", b" ").split()
        tail = b""
        if data and words and not text[-1:].isspace() and text[-1:] != b",":  # the last word may go on
            tail = words.pop()
        # int() also takes "+1" and "1_0"; a chunk holding either is checked word by word.
        lenient = b"+" in text or b"_" in text
        ids.extend(_ids_of(words, len(ids), where, vocab_size, lenient))
        # A word is only carried over while it can still become an id, so junk without spaces (a binary
        # file on stdin) fails at its first chunk instead of filling memory.
        if tail and (_ID_PREFIX.fullmatch(tail) is None or len(tail) > _MAX_ID_DIGITS):
            _id_of(tail, len(ids) + 1, where, vocab_size)
        if not data:
            return ids


def _ids_of(words: list[bytes], before: int, where: str, vocab_size: int, lenient: bool) -> list[int]:
    """`words` as ids, `before` ids of the input having been read; word by word only to name a bad one."""
    values = None
    if not lenient:
        with contextlib.suppress(ValueError):  # the word-by-word pass names the culprit
            values = list(map(int, words))
    if values is not None and (not values or (min(values) >= 0 and max(values) < vocab_size)):
        return values
    return [_id_of(word, before + i + 1, where, vocab_size) for i, word in enumerate(words)]


def _id_of(word: bytes, position: int, where: str, vocab_size: int) -> int:
    from scratchlm.errors import DataError

    if _ID_WORD.fullmatch(word) is None:
        if not _looks_like_text(word):
            raise DataError(
                f"{where} are binary data, not ids as text (from word {position} on); pass a token file "
                "written by `scratchlm tokenizer encode --out` as --input FILE."
            )
        raise DataError(
            f"{where} must be integers, got {_shown(word)} (word {position}); give token ids separated by "
            "spaces or commas, as `scratchlm tokenizer encode` prints them."
        )
    value = int(word) if len(word) <= _MAX_ID_DIGITS else vocab_size
    if not 0 <= value < vocab_size:
        raise DataError(
            f"cannot decode token id {_shown(word)[1:-1]} (word {position} of {where}): this tokenizer has ids "
            f"0..{vocab_size - 1}; decode with the tokenizer that encoded them."
        )
    return value


def _looks_like_text(data: bytes) -> bool:
    """Whether `data` is UTF-8 (a character cut at its end allowed) without control characters but
    whitespace, as no token file of any length is in practice."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(data)  # not final: a cut character is fine
    except UnicodeDecodeError:
        return False
    return _CONTROL.search(text) is None


def _shown(word: bytes) -> str:
    text = word.decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= 24 else text[:21] + "...")


def _stdin(implicit: bool) -> BinaryIO:
    from scratchlm.errors import ConfigError

    stream = sys.stdin
    if stream is None or (implicit and stream.isatty()):
        # Waiting for ids typed at a terminal is never what someone who forgot --ids wants.
        raise ConfigError(
            "no token ids given; pass --ids ID ..., --input FILE, or pipe them in (e.g. `scratchlm tokenizer "
            "encode ... | scratchlm tokenizer decode --tokenizer DIR`)."
        )
    buffer = getattr(stream, "buffer", None)  # a text stream put in place of stdin may have none
    return buffer if buffer is not None else io.BytesIO(stream.read().encode("utf-8", "surrogateescape"))


def _read_input(path: Path, tokenizer_dir: Path, tokenizer: TextTokenizer) -> list[int]:
    """The ids in `path`: a token file (.bin, or any file that is not ids as text) or ids as text."""
    from scratchlm.data.token_files import load_token_file
    from scratchlm.errors import DataError
    from scratchlm.fileio import refuse_special_file

    where = f"the ids in {path}"
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(f"--input {path} does not exist; check the path, or pass '-' to read ids from stdin.") from None
    if stat.S_ISFIFO(mode):  # `--input <(scratchlm tokenizer encode ...)`: a stream, like stdin
        with open(path, "rb") as fh:
            return parse_ids(fh, where, tokenizer.vocab_size)
    refuse_special_file(path, "--input")
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
        if path.suffix != ".bin" and _ID_TEXT.fullmatch(head) is not None:
            fh.seek(0)
            return parse_ids(fh, where, tokenizer.vocab_size)
    check_corpus_tokenizer(path, tokenizer_dir, tokenizer)
    try:
        return load_token_file(path, tokenizer.vocab_size).tolist()
    except DataError:
        if not _looks_like_text(head):
            raise
    # Text that is not ids, say the text file itself instead of its encoding: the token file's complaint
    # (an odd size, an id beyond the vocabulary) would not tell what went wrong.
    word = next((w for w in head.replace(b",", b" ").split() if _ID_WORD.fullmatch(w) is None), b"")
    raise DataError(
        f"--input {path} is text ({_shown(word)} is not a token id), neither ids as `scratchlm tokenizer "
        "encode` prints them nor a token file; encode text with `scratchlm tokenizer encode`, or pass its ids."
    )


def check_corpus_tokenizer(token_file: Path, tokenizer_dir: Path, tokenizer: TextTokenizer) -> None:
    """When `token_file` is a split of a corpus directory, refuse a tokenizer other than the corpus's own:
    ids of another vocabulary decode without error, to other text."""
    from scratchlm.data.text import read_corpus_meta
    from scratchlm.errors import DataError
    from scratchlm.tokenizers import load_tokenizer

    corpus_dir = token_file.resolve().parent
    if not (corpus_dir / "meta.json").is_file():
        return
    try:
        meta = read_corpus_meta(corpus_dir)
    except DataError:  # not a corpus description we can trust: nothing to compare with
        return
    own_dir = corpus_dir / meta["tokenizer"]["dir"]
    if token_file.resolve().name not in {meta["splits"][name]["file"] for name in ("train", "val")}:
        return
    if not (own_dir / "tokenizer.json").is_file() or own_dir.resolve() == tokenizer_dir.resolve():
        return
    own = load_tokenizer(own_dir)
    size = tokenizer.vocab_size
    same = own.vocab_size == size and all(own.id_to_token(i) == tokenizer.id_to_token(i) for i in range(size))
    if not same:
        raise DataError(
            f"{token_file} was written with the corpus's own tokenizer, {own_dir}, not this one; pass "
            f"--tokenizer {own_dir}."
        )
