"""Cut a text file into byte ranges that can be pre-tokenized (or encoded) independently and exactly.

A cut at byte `q` is safe when pre-tokenizing (or encoding) the two sides separately gives the same
pre-tokens as the whole. Three kinds of position qualify:
  * the start of a special token, since text is split at special tokens before anything else;
  * just after a newline that has a printable, non-space ASCII character on both sides (`x\\ny`): the GPT-2
    pattern always ends a pre-token at such a newline (it cannot join a newline to a word, and the lone
    newline between two non-space characters is its own pre-token either way);
  * between the two bytes of a Windows line break with such characters around it (`x\\r|\\ny`): whole, the
    pattern splits `\\r\\n` before a word into `\\r` and `\\n` (`\\s+(?!\\S)` gives back the last space), just as
    the two sides do apart; after the `\\n` would not do, since `x\\r\\n` alone ends in the one pre-token `\\r\\n`.
    Without this a CRLF file with no special tokens had no safe cut at all and was read, and encoded, whole.
    Not before a special token, though (`x\\r|\\n<|endoftext|>`): the piece before it then ends in `\\r\\n`, one
    pre-token, which the cut would split in two.
In each case no special-token occurrence may straddle `q`. Ranges are found by scanning the file in small
windows, so memory stays bounded however large the file is; the file is never decoded here (UTF-8 is
self-synchronizing, so byte-level search for a special token's encoding finds exactly its occurrences).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from scratchlm.errors import DataError
from scratchlm.fileio import refuse_special_file

_WINDOW_BYTES = 1 << 16  # bytes scanned per look; the window slides on when it holds no safe cut
_NEWLINE_CUT = re.compile(rb"(?<=[\x21-\x7e]\n)(?=[\x21-\x7e])|(?<=[\x21-\x7e]\r)(?=\n[\x21-\x7e])")


@dataclass(frozen=True)
class TextSource:
    """Bytes [start, end) of a UTF-8 file (`end=None`: to the end); a range should start and end at safe cuts."""

    path: str
    start: int = 0
    end: int | None = None

    def stop(self) -> int:
        return os.path.getsize(self.path) if self.end is None else self.end


def as_sources(inputs: str | os.PathLike | TextSource | Sequence[str | os.PathLike | TextSource]) -> list[TextSource]:
    """Normalize one or several paths or TextSources to a list of TextSources."""
    if isinstance(inputs, (str, os.PathLike, TextSource)):
        inputs = [inputs]
    return [item if isinstance(item, TextSource) else TextSource(os.fspath(item)) for item in inputs]


def iter_ranges(source: TextSource, special_tokens: Sequence[str], target_bytes: int) -> Iterator[tuple[int, int]]:
    """Yield `(start, end)` byte ranges covering the source in order, each about `target_bytes` or longer.

    A range only ends at a safe cut (see the module docstring); when none exists before the end of the
    source the rest is one range.
    """
    size = source.stop()
    specials = [t.encode("utf-8") for t in special_tokens]
    start = source.start
    with open(source.path, "rb") as fh:
        while size - start > target_bytes:
            cut = next_safe_cut(fh, start + target_bytes, size, specials)
            if cut is None:
                break
            yield start, cut
            start = cut
    if start < size:
        yield start, size


def next_safe_cut(fh: BinaryIO, position: int, size: int, specials: Sequence[bytes]) -> int | None:
    """The first safe cut in [position, size) of an open binary file, or None if there is none.

    `size` is where the text ends (a cut exactly there is not returned).
    """
    longest = max((len(s) for s in specials), default=1)
    # At each position the lookahead captures the longest special starting there (shorter ones at the same
    # position are its prefixes, so they straddle a cut only if it does).
    ordered = sorted(specials, key=len, reverse=True)
    special_starts = re.compile(b"(?=(" + b"|".join(re.escape(s) for s in ordered) + b"))") if specials else None
    lower = position  # candidates below this were judged (and rejected) in an earlier window
    window_start = max(0, position - longest - 1)
    while True:
        fh.seek(window_start)
        window = fh.read(min(_WINDOW_BYTES + 2 * longest + 2, size - window_start))
        window_end = window_start + len(window)
        # A cut is judged only when every special occurrence that could straddle it, and the bytes around it,
        # lie inside this window.
        upper = window_end if window_end == size else window_end - longest - 1
        occurrences: list[tuple[int, int]] = []  # every special occurrence, overlapping ones included
        candidates: list[int] = []
        if special_starts is not None:
            for match in special_starts.finditer(window):
                begin = window_start + match.start()
                occurrences.append((begin, begin + len(match.group(1))))
            candidates.extend(begin for begin, _ in occurrences)
        candidates.extend(window_start + m.start() for m in _NEWLINE_CUT.finditer(window))
        starts = {begin for begin, _ in occurrences}
        for cut in sorted(c for c in candidates if lower <= c <= upper and 0 < c < size):
            if any(begin < cut < end for begin, end in occurrences):
                continue
            # `x\r|\n<special>`: whole, the `\r\n` ends its piece and is one pre-token; cut, it would be two.
            if cut + 1 in starts and window[cut - window_start - 1 : cut - window_start + 1] == b"\r\n":
                continue
            return cut
        if window_end >= size:
            return None
        lower = upper + 1
        window_start = lower - longest - 1


def read_range(path: str | os.PathLike, start: int, end: int) -> str:
    """Decode bytes [start, end) of a UTF-8 file; a bad byte raises DataError naming its file offset."""
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        raise DataError(
            f"{os.fspath(path)} is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {offset} "
            f"({exc.reason}); re-encode the file as UTF-8."
        ) from None


def _looks_like_text(path: str) -> bool:
    return len(path) > 255 or "\n" in path  # longer than a file name can be, or several lines


def check_input_file(path: str) -> int:
    """The size of the text file `path`; DataError when it is missing, a directory, or not a regular file."""
    if not os.path.isfile(path) and _looks_like_text(path):
        raise DataError(
            f"the input {path[:40]!r}... looks like text, not a file path; training reads files: write "
            "the text to a file and pass its path."
        )
    if os.path.isdir(path):
        raise DataError(f"input {path} is a directory, not a text file; pass the file(s) inside it.")
    refuse_special_file(path, "input")
    if not os.path.isfile(path):
        raise DataError(f"input file {path} does not exist; check the path.")
    return os.path.getsize(path)


def total_size(sources: Sequence[TextSource]) -> int:
    """Bytes in all sources; a missing file or an all-empty input raises DataError."""
    total = 0
    for source in sources:
        check_input_file(source.path)
        total += source.stop() - source.start
    if total == 0:
        names = ", ".join(source.path for source in sources)
        raise DataError(f"input {names} is empty; give a file with some text in it.")
    return total
