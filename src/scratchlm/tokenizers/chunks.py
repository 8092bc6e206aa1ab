"""Cut a text file into byte ranges that can be pre-tokenized (or encoded) independently and exactly.

A cut at byte `q` is safe when pre-tokenizing (or encoding) the two sides separately gives the same
pre-tokens as the whole. Two kinds of position qualify:
  * the start of a special token, since text is split at special tokens before anything else;
  * before the last character of a run of ASCII whitespace (space, tab, CR, LF) that has a non-space
    character on both sides (`x␣|␣y`, `x|\\ny`, `x\\r|\\ny`, `x\\n\\n|\\ny`). Whole, the GPT-2
    pattern ends a pre-token there: no pattern joins a non-space character to the whitespace after it,
    `\\s+(?!\\S)` gives the run back its last character, and that character then starts the next pre-token
    (a space joins the word after it, a newline or tab stands alone). Apart, the left side ends in the run
    minus its last character, which `\\s+(?!\\S)` takes whole at the end of the text, and the right side starts
    the same. Not where `y` starts a special token and the run is longer than one character
    (`x\\r|\\n<|endoftext|>`): the piece before the special then ends in the whole run, one pre-token, which
    the cut would split in two. With single line breaks as the only cuts, a file of paragraphs separated
    by blank lines had none and was read, and encoded, whole.
In each case no special-token occurrence may straddle `q`. Ranges are found by scanning the file in small
windows, so memory stays bounded however large the file is; the file is never decoded here (UTF-8 is
self-synchronizing, so byte-level search for a special token's encoding finds exactly its occurrences).
"""

from __future__ import annotations

import bisect
import heapq
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from scratchlm.errors import DataError
from scratchlm.fileio import refuse_special_file
from scratchlm.tokenizers.pretokenize import PRETOKEN_SPACE_RE

_WINDOW_BYTES = 1 << 16  # bytes scanned per look; the window slides on when it holds no safe cut
# The cut is the match's end. x is printable ASCII or the last byte of a multi-byte character, y printable
# ASCII or a lead byte; multi-byte ones are decoded and must be no Unicode whitespace (U+00A0, U+3000, ...),
# which the pattern's \s would join to the run.
_WHITESPACE_CUT = re.compile(rb"[\x21-\x7e\x80-\xbf][\t\n\r ]*(?=[\t\n\r ][\x21-\x7e\xc2-\xf4])")
_ASCII_SPACE = frozenset(b"\t\n\r ")


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
        begins: list[int] = []  # every special occurrence in order, overlapping ones included
        reach: list[int] = []  # reach[i]: the furthest end of occurrences 0..i
        if special_starts is not None:
            for match in special_starts.finditer(window):
                begin = window_start + match.start()
                begins.append(begin)
                reach.append(max(begin + len(match.group(1)), reach[-1] if reach else 0))
        # Candidates in order, the spacing ones found lazily: the first safe cut is usually a word away.
        spacing = (window_start + cut for cut in _spacing_cuts(window, max(0, lower - window_start - 1)))
        starts = set(begins)
        for cut in heapq.merge(begins, spacing):
            if cut < lower or cut == 0:
                continue
            if cut > upper or cut >= size:
                break
            earlier = bisect.bisect_left(begins, cut) - 1  # the occurrences that begin before the cut
            if earlier >= 0 and reach[earlier] > cut:
                continue  # one of them straddles it
            # `x\r|\n<special>`: whole, the `\r\n` ends its piece and is one pre-token; cut, it would be two.
            if cut + 1 in starts and window[cut - window_start - 1] in _ASCII_SPACE:
                continue
            return cut
        if window_end >= size:
            return None
        lower = upper + 1
        window_start = lower - longest - 1


def _spacing_cuts(window: bytes, start: int) -> Iterator[int]:
    """Offsets in `window` (from `start` on) before the last character of a whitespace run between two
    non-space characters (see the module docstring)."""
    for match in _WHITESPACE_CUT.finditer(window, start):
        if window[match.start()] >= 0x80 and not _is_non_space(_char_ending_at(window, match.start())):
            continue
        after = match.end() + 1
        if window[after] >= 0x80 and not _is_non_space(_char_starting_at(window, after)):
            continue
        yield match.end()


def _char_starting_at(window: bytes, start: int) -> str | None:
    lead = window[start]
    length = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    try:
        return window[start : start + length].decode("utf-8")
    except UnicodeDecodeError:  # cut off by the window's end, or not UTF-8: no cut here
        return None


def _char_ending_at(window: bytes, last: int) -> str | None:
    for length in (2, 3, 4):
        begin = last - length + 1
        if begin >= 0 and window[begin] >= 0xC0:
            try:
                return window[begin : last + 1].decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None


def _is_non_space(char: str | None) -> bool:
    return char is not None and len(char) == 1 and PRETOKEN_SPACE_RE.match(char) is None


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
