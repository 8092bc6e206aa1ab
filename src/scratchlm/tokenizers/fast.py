"""The fast encoding backend: a tiktoken `Encoding` built from a BPE vocabulary, used only where it is exact.

tiktoken and the merge-list algorithm differ in two ways, and this module guards both:

1. *Merge order.* tiktoken repeatedly joins the adjacent pair whose concatenation has the lowest rank
   (rank = token id); the merge list joins the adjacent pair that appears earliest in the list. With each
   merged token's id increasing with its merge index the two agree whenever the chosen pair is a listed
   merge. They can disagree only when two adjacent parts `x, y` concatenate to a token `t` that was learned
   from a *different* split `(a, b)` -- tiktoken would join them, the merge list would not. Such a pair
   never forms if the merge list encodes every token's own bytes to that single token (`reassembles`):
   tokens only grow, so while `x, y` cover the span of `t` no part ever crossed its edges, hence the span
   evolved exactly as the bytes of `t` do on their own; if those end as `[t]`, the state `[x, y]` (from
   which no listed merge leads to `t`) is never reached. Given that, both algorithms see the same candidate
   pairs with the same ranks at every step and produce the same ids. Vocabularies trained by BPE (and
   GPT-2's) satisfy it; `build_fast_encoding` verifies it and declines otherwise.
2. *Unicode tables.* tiktoken's Rust regex and the `regex` package classify recently assigned characters
   differently (letter or not). `tiktoken_pattern()` gives tiktoken a GPT-2 pattern whose character classes
   are corrected to match the `regex` package exactly (probed once per process).
"""

from __future__ import annotations

import array
import functools
import logging
import sys
from collections.abc import Callable, Mapping, Sequence

from scratchlm.errors import DataError

logger = logging.getLogger(__name__)


def build_fast_encoding(
    token_bytes: Mapping[int, bytes],
    merges: Sequence[tuple[bytes, bytes]],
    reassembles: Callable[[bytes], bool],
    special_ids: Mapping[str, int] | None = None,
    name: str = "scratchlm-bpe",
) -> tuple[object | None, str]:
    """A tiktoken Encoding equivalent to merge-list BPE over `token_bytes` (specials excluded), or None.

    `reassembles(token)` must say whether the merge list encodes `token`'s bytes to that one token.
    `special_ids` are registered with tiktoken (for callers that let it split special tokens). Returns
    `(encoding, reason)`; `reason` says why the fast path was declined (empty when it was built).
    """
    ranks: dict[bytes, int] = {}
    for token_id, token in token_bytes.items():
        if token in ranks:
            return None, f"ids {ranks[token]} and {token_id} share the bytes {token!r}"
        ranks[token] = token_id
    if any(bytes([b]) not in ranks for b in range(256)):
        return None, "the vocabulary lacks some single bytes"
    merge_of: dict[bytes, tuple[bytes, bytes]] = {}
    last_id = -1
    for left, right in merges:
        token = left + right
        token_id = ranks.get(token)
        if token_id is None or token in merge_of:
            return None, f"merge {left!r} + {right!r} is missing from the vocabulary or repeated"
        if token_id <= last_id:
            return None, "merged tokens' ids do not increase with merge order"
        merge_of[token] = (left, right)
        last_id = token_id
    if any(len(token) > 1 and token not in merge_of for token in ranks):
        return None, "some multi-byte token is not produced by any merge"
    # Two-byte tokens have one split only, so only longer ones need the (costlier) check.
    for token in ranks:
        if len(token) > 2 and not reassembles(token):
            return None, f"the merge list does not encode the bytes of token {token!r} to that token"
    pattern = tiktoken_pattern()
    if pattern is None:
        return None, "tiktoken's regex classifies some characters differently and cannot be corrected"
    import tiktoken

    specials = dict(special_ids or {})
    encoding = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)
    return encoding, ""


def encode_exact(encoding, text: str, allowed_special: set[str]) -> list[int]:
    """`encoding.encode` without tiktoken's silent replacement of lone surrogates (DataError instead)."""
    core = getattr(encoding, "_core_bpe", None)
    try:
        if core is None:  # pragma: no cover - a tiktoken without the private core: its public API
            text.encode("utf-8")
            return encoding.encode(text, allowed_special=allowed_special, disallowed_special=())
        return core.encode(text, allowed_special)
    except UnicodeEncodeError as exc:
        raise surrogate_error(text, exc) from None


def surrogate_error(text: str, exc: UnicodeEncodeError) -> DataError:
    return DataError(
        f"the text holds a lone surrogate U+{ord(text[exc.start]):04X}, which UTF-8 cannot encode; decode your "
        "input with errors='replace' (or fix its source) first."
    )


@functools.cache
def tiktoken_pattern() -> str | None:
    """The GPT-2 pattern rewritten so tiktoken's regex engine splits exactly like the `regex` package.

    The two engines ship different Unicode versions: recently assigned letters and digits are `\\p{L}` /
    `\\p{N}` to one and not the other. Each class is probed in both engines over every code point (tiktoken
    encodes only the text its pattern matches, so a one-class pattern returns exactly that class), and the
    differences are added to or removed from the class. Returns None if the corrected classes still differ.
    """
    import regex
    import tiktoken

    every_char = _every_code_point()

    def members(engine: str, char_class: str) -> set[str]:
        if engine == "regex":
            return set(regex.findall(char_class, every_char))
        single_bytes = {bytes([b]): b for b in range(256)}
        probe = tiktoken.Encoding("class-probe", pat_str=char_class, mergeable_ranks=single_bytes, special_tokens={})
        return set(bytes(probe.encode_ordinary(every_char)).decode("utf-8"))

    corrected: dict[str, str] = {}
    for name, char_class in (("L", r"\p{L}"), ("N", r"\p{N}"), ("S", r"\s")):
        ours, theirs = members("regex", char_class), members("tiktoken", char_class)
        added, removed = ours - theirs, theirs - ours
        body = char_class + _rust_ranges(added)
        if removed:
            body += "--[" + _rust_ranges(removed) + "]"
        fixed = f"[{body}]" if added or removed else char_class
        if fixed != char_class:
            logger.debug("tiktoken class %s corrected by +%d/-%d characters", char_class, len(added), len(removed))
            if members("tiktoken", fixed) != ours:
                return None
        corrected[name] = fixed
    letters, numbers, space = corrected["L"], corrected["N"], corrected["S"]
    return (
        rf"'(?:[sdmt]|ll|ve|re)| ?{letters}+| ?{numbers}+| ?[^{space}{letters}{numbers}]+"
        rf"|{space}+(?![^{space}])|{space}+"
    )


def _every_code_point() -> str:
    """Every Unicode scalar value (all code points but surrogates), in order."""
    code_points = array.array("I", range(0xD800))
    code_points.extend(range(0xE000, 0x110000))
    return code_points.tobytes().decode("utf-32-le" if sys.byteorder == "little" else "utf-32-be")


def _rust_ranges(chars: set[str]) -> str:
    """A Rust-regex character-class body for `chars`, runs of consecutive code points written as ranges."""
    if not chars:
        return ""
    codepoints = sorted(map(ord, chars))
    parts: list[str] = []
    start = prev = codepoints[0]
    for cp in [*codepoints[1:], -1]:
        if cp == prev + 1:
            prev = cp
            continue
        parts.append(f"\\x{{{start:X}}}" if start == prev else f"\\x{{{start:X}}}-\\x{{{prev:X}}}")
        start = prev = cp
    return "".join(parts)
