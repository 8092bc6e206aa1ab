"""`Tokenizer`: byte-level BPE encoding and decoding from a vocabulary and merge list.

Encoding cuts the text at special tokens (longest first), pre-tokenizes the rest with the GPT-2 regex and
applies the merge list to each pre-token. Two backends give identical ids: the pure-Python merge list (the
reference) and a tiktoken `Encoding` built from the same ranks, used automatically when `fast.py` proves it
exact for this vocabulary. Text is encoded as UTF-8; a string with a lone surrogate (which UTF-8 cannot
hold) is rejected by both paths rather than silently altered.

On disk (`save(dir)` / `Tokenizer.load(dir)`): `tokenizer.json` ({"kind": "bpe", "format": 1, "vocab":
"vocab.json", "merges": "merges.txt", "special_tokens": [...]}), `vocab.json` (GPT-2 `encoder.json` format:
{token: id}, token bytes in GPT-2's printable byte alphabet) and `merges.txt` (GPT-2 `vocab.bpe` format). GPT-2's
own files load with `from_gpt2_files`. Special tokens are in `vocab.json` too (as GPT-2's `<|endoftext|>`
is), so `from_files(vocab.json, merges.txt, special_tokens)` rebuilds the same ids.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import regex

from scratchlm.errors import ConfigError, DataError
from scratchlm.fileio import refuse_special_file
from scratchlm.tokenizers import fast as fast_backend
from scratchlm.tokenizers import gpt2_files
from scratchlm.tokenizers.base import TokenizerAPIMixin, id_list
from scratchlm.tokenizers.merge_list import MergeList
from scratchlm.tokenizers.pretokenize import (
    PRETOKEN_RE,
    PRETOKEN_SPACE_RE,
    check_special_tokens,
    special_pattern,
    split_specials,
)
from scratchlm.tokenizers.saving import write_tokenizer_files

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_CACHE_LIMIT = 1 << 14  # distinct pre-tokens memoized by the pure path (bounded: a few MB at most)
_FLUSH_CHARS = 1 << 14  # encode_iterable encodes once this much text is buffered
# A cut after a newline with printable, non-space ASCII on both sides is a pre-token boundary (see chunks.py).
# Before the last character of an ASCII whitespace run between non-space characters (`x␣|␣y`,
# `x|\ny`, `x\r|\ny`, `x\n\t|\ty`): the GPT-2 pattern ends a pre-token there whole and apart (chunks.py says
# why); the cut is the match's end.
_WHITESPACE_CUT = regex.compile(r"\S[\t\n\r ]*(?=[\t\n\r ]\S)")  # \S as the GPT-2 pattern sees it


class Tokenizer(TokenizerAPIMixin):
    """Byte-level BPE tokenizer over `vocab` (id -> bytes) and `merges` (in the order learned).

    Special tokens are matched before pre-tokenization, longest first, and always encode to one id; a
    special token missing from `vocab` is appended with a new id. `fast=None` uses the tiktoken backend
    where it is exact, `False` never, `True` insists (ConfigError if this vocabulary cannot have it).

    `token_to_id` / `id_to_token` use a token's string as in `vocab.json` and HF's ByteLevel (GPT-2's
    printable byte alphabet: `token_to_id("Ġthe")` is GPT-2's id of " the"); a special token is its text.
    `encode_batch(texts, num_threads=N)` can use threads on the fast path (tiktoken encodes outside the GIL).
    """

    kind = "bpe"

    def __init__(
        self,
        vocab: Mapping[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Sequence[str] | None = None,
        *,
        fast: bool | None = None,
    ) -> None:
        self.vocab: dict[int, bytes] = _checked_vocab(vocab)
        self.merges: list[tuple[bytes, bytes]] = _checked_merges(merges)
        self.special_tokens: list[str] = check_special_tokens(special_tokens)
        token_ids: dict[bytes, int] = {}
        for token_id in sorted(self.vocab):
            token_ids.setdefault(self.vocab[token_id], token_id)
        self._special_ids: dict[str, int] = {}
        for token in self.special_tokens:
            raw = token.encode("utf-8")
            if raw not in token_ids:
                token_ids[raw] = max(self.vocab, default=-1) + 1
                self.vocab[token_ids[raw]] = raw
            self._special_ids[token] = token_ids[raw]
        self._special_re = special_pattern(self.special_tokens)
        self._merge_list = MergeList(token_ids, self.merges)
        self._cache: dict[str, list[int]] = {}
        # tiktoken may split special tokens itself only when no two can match at one position (one a prefix
        # of another): its alternation order is unspecified, while ours is longest first.
        self._fast_specials = not any(
            a != b and b.startswith(a) for a in self.special_tokens for b in self.special_tokens
        )
        self._fast = None
        self.fast_declined_because = "disabled" if fast is False else ""
        if fast is not False:
            self._fast, self.fast_declined_because = fast_backend.build_fast_encoding(
                _fast_ranks_vocab(self.vocab, self._special_ids, self.merges),
                self.merges,
                reassembles=lambda token: self._merge_list.encode(token) == [token_ids[token]],
                special_ids=self._special_ids if self._fast_specials else None,
            )
            if self._fast is None:
                if fast:
                    raise ConfigError(
                        f"the fast backend cannot reproduce this vocabulary: {self.fast_declined_because}."
                    )
                logger.info("tokenizer uses the pure-Python path: %s", self.fast_declined_because)

    # ----------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Embedding rows needed: one more than the largest id."""
        return max(self.vocab) + 1

    @property
    def uses_fast_path(self) -> bool:
        return self._fast is not None

    @property
    def _encode_releases_gil(self) -> bool:
        return self._fast is not None

    def _id_strings(self) -> dict[int, str]:
        """GPT-2 byte-alphabet strings (as in `vocab.json`), special tokens as their text."""
        specials = {token_id: token for token, token_id in self._special_ids.items()}
        return {i: specials.get(i) or gpt2_files.token_to_text(token) for i, token in self.vocab.items()}

    def special_token_id(self, token: str) -> int:
        """The id of a special token; ConfigError if it is not one of this tokenizer's."""
        try:
            return self._special_ids[token]
        except KeyError:
            raise ConfigError(f"{token!r} is not a special token of this tokenizer ({self.special_tokens}).") from None

    # ----------------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, a special token's text becoming its id; `decode(encode(text)) == text` for
        every string UTF-8 can encode (a lone surrogate is a DataError)."""
        if self._fast is not None and self._fast_specials:
            return fast_backend.encode_exact(self._fast, text, self._fast.special_tokens_set)
        ids: list[int] = []
        for piece, is_special in split_specials(text, self._special_re):
            if is_special:
                ids.append(self._special_ids[piece])
            else:
                ids.extend(self._encode_ordinary(piece))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text` with special tokens' text encoded as ordinary text (tiktoken's
        `encode_ordinary`): for text from users, whose "<|endoftext|>" must not end a document."""
        return self._encode_ordinary(text)

    def encode_pure(self, text: str) -> list[int]:
        """`encode` through the pure-Python path only (the reference the fast path is tested against)."""
        ids: list[int] = []
        for piece, is_special in split_specials(text, self._special_re):
            if is_special:
                ids.append(self._special_ids[piece])
            else:
                ids.extend(self._encode_pure(piece))
        return ids

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        """Ids of the concatenation of `iterable`'s strings (e.g. a file's lines), yielded lazily.

        About 16k characters are buffered (up to twice the longest stretch without a safe cut, such as one
        unbroken pre-token), and the result equals `encode("".join(iterable))`: text is only encoded up to
        a point where no pre-token or special token can continue past it.
        """
        buffer = ""
        next_look = _FLUSH_CHARS
        for chunk in iterable:
            buffer += chunk
            if len(buffer) < next_look:
                continue
            cut = self._safe_cut(buffer)
            if cut > 0:
                yield from self.encode(buffer[:cut])
                buffer = buffer[cut:]
            # Look again once what is left has doubled (or grown by the flush size): a long stretch without
            # a cut (100k blank lines fed one by one) is scanned a logarithmic number of times, not per chunk.
            next_look = len(buffer) + max(_FLUSH_CHARS, len(buffer))
        if buffer:
            yield from self.encode(buffer)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The concatenated bytes of `ids`; DataError naming unknown ids."""
        vocab = self.vocab
        ids = id_list(ids)
        try:
            return b"".join([vocab[i] for i in ids])
        except (KeyError, TypeError):
            unknown = sorted({repr(i) for i in ids if not _known(vocab, i)})
            raise DataError(
                f"cannot decode unknown token id(s) {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}; "
                f"valid ids are in the vocabulary (0..{self.vocab_size - 1})."
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ----------------------------------------------------------------------------------------------------
    def _encode_ordinary(self, text: str) -> list[int]:
        if self._fast is not None:
            return fast_backend.encode_exact(self._fast, text, set())
        return self._encode_pure(text)

    def _encode_pure(self, text: str) -> list[int]:
        cache = self._cache
        ids: list[int] = []
        for piece in PRETOKEN_RE.findall(text):
            piece_ids = cache.get(piece)
            if piece_ids is None:
                try:
                    data = piece.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise fast_backend.surrogate_error(piece, exc) from None
                piece_ids = self._merge_list.encode(data)
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[piece] = piece_ids
            ids.extend(piece_ids)
        return ids

    def _safe_cut(self, text: str) -> int:
        """A length n such that encoding text[:n] and the rest separately equals encoding all of it,
        whatever text follows; 0 when no such point is known yet."""
        # From `uncertain` on, the text may be the start of a special token that more text would complete.
        uncertain = len(text)
        for token in self.special_tokens:
            for k in range(min(len(token) - 1, len(text)), 0, -1):
                if text.endswith(token[:k]):
                    uncertain = min(uncertain, len(text) - k)
                    break
        # Special-token matches starting before `uncertain` are final (every longer alternative was fully
        # visible), even when they end after it; the scan must cover the whole text for that reason.
        segment_start = 0
        if self._special_re is not None:
            for match in self._special_re.finditer(text):
                if match.start() >= uncertain:
                    break
                segment_start = match.end()
        if segment_start >= uncertain:
            return segment_start
        limit = uncertain
        # The lookahead stops at `limit`, so the character after a cut is never the start of a special token.
        for span in (256, _FLUSH_CHARS):  # the last cut; ordinary text has one in its last few words
            cuts = list(_WHITESPACE_CUT.finditer(text, max(segment_start, limit - span), limit))
            if cuts and cuts[-1].end() > segment_start:
                return cuts[-1].end()
        # No such cut (text without ASCII spacing): keep every pre-token whose match may depend on characters
        # not seen yet. The GPT-2 pattern looks at most two characters past a match ("'" then "ll"), so
        # matches ending two or more characters before the limit are final -- except a whitespace run,
        # which a following whitespace joins (the piece "\n\n" alone is one pre-token, "\n\nHe" two).
        cut = segment_start
        for match in PRETOKEN_RE.finditer(text, segment_start, limit):
            if match.end() > limit - 2:
                break
            if not PRETOKEN_SPACE_RE.match(text, match.end() - 1):
                cut = match.end()
        return cut

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `tokenizer.json`, `vocab.json` and `merges.txt` into `directory` (created if needed), in
        place of any tokenizer saved there before (see `saving.py`)."""
        directory = Path(directory)
        meta = {
            "kind": self.kind,
            "format": FORMAT_VERSION,
            "vocab": "vocab.json",
            "merges": "merges.txt",
            "special_tokens": self.special_tokens,
            "vocab_size": self.vocab_size,
            "pattern": PRETOKEN_RE.pattern,
        }
        texts = {
            "vocab.json": gpt2_files.vocab_json_text(self.vocab),
            "merges.txt": gpt2_files.merges_txt_text(self.merges),
            "tokenizer.json": json.dumps(meta, ensure_ascii=False, indent=2) + "\n",
        }
        return write_tokenizer_files(directory, texts)

    @classmethod
    def from_files(
        cls,
        vocab_filepath: str | os.PathLike,
        merges_filepath: str | os.PathLike,
        special_tokens: Sequence[str] | None = None,
        *,
        fast: bool | None = None,
    ) -> Tokenizer:
        """Build from a GPT-2-format `vocab.json` ({token: id}) and `merges.txt` (as written by `save`)."""
        vocab = gpt2_files.read_vocab_json(vocab_filepath)
        merges = gpt2_files.read_merges_txt(merges_filepath)
        return cls(vocab, merges, special_tokens, fast=fast)

    @classmethod
    def from_gpt2_files(
        cls,
        encoder_json: str | os.PathLike,
        vocab_bpe: str | os.PathLike,
        special_tokens: Sequence[str] | None = ("<|endoftext|>",),
        *,
        fast: bool | None = None,
    ) -> Tokenizer:
        """GPT-2's tokenizer from its released `encoder.json` and `vocab.bpe` (offline)."""
        return cls.from_files(encoder_json, vocab_bpe, special_tokens, fast=fast)

    @classmethod
    def load(cls, directory: str | os.PathLike, *, fast: bool | None = None) -> Tokenizer:
        """Read a directory written by `save`."""
        directory = Path(directory)
        meta = read_tokenizer_meta(directory, expected_kind=cls.kind)
        vocab = gpt2_files.read_vocab_json(directory / _file_name(meta, "vocab", directory))
        merges = gpt2_files.read_merges_txt(directory / _file_name(meta, "merges", directory))
        special_tokens = meta.get("special_tokens", [])
        if not isinstance(special_tokens, list):
            raise DataError(f"{directory / 'tokenizer.json'}: special_tokens must be a list of strings.")
        return cls(vocab, merges, special_tokens, fast=fast)


def read_tokenizer_meta(directory: Path, expected_kind: str | None = None) -> dict:
    """Parse `directory/tokenizer.json`; DataError when missing, malformed, or of another kind."""
    path = directory / "tokenizer.json"
    refuse_special_file(path, "tokenizer file")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; point at a directory written by a tokenizer's save().") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurdly nested
        raise DataError(f"{path} is not valid JSON ({exc}); re-save the tokenizer.") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str):
        raise DataError(f"{path} must be a JSON object with a string 'kind'; re-save the tokenizer.")
    if meta.get("format") != FORMAT_VERSION:
        raise DataError(f"{path} has format {meta.get('format')!r}; this version reads format {FORMAT_VERSION}.")
    if expected_kind is not None and meta["kind"] != expected_kind:
        raise DataError(f"{path} describes a {meta['kind']!r} tokenizer, not {expected_kind!r}.")
    return meta


def _file_name(meta: dict, key: str, directory: Path) -> str:
    name = meta.get(key)
    if not isinstance(name, str) or not name or os.path.basename(name) != name:
        raise DataError(f"{directory / 'tokenizer.json'}: {key!r} must name a file in the same directory.")
    return name


def _fast_ranks_vocab(
    vocab: Mapping[int, bytes], special_ids: Mapping[str, int], merges: Sequence[tuple[bytes, bytes]]
) -> dict[int, bytes]:
    """The vocabulary tiktoken ranks: every id but the special tokens that only exist as specials.

    A special token whose bytes were already a token (a one-byte special such as "|" keeps the byte's id,
    or one equal to a merged token) stays: tiktoken needs every single byte, and every merge's result, among
    its ranks, and would decline the whole vocabulary without them. Keeping them changes no ids, because the
    text is cut at special tokens before any merging, so ordinary text never holds their bytes.
    """
    produced = {left + right for left, right in merges}
    dropped = {i for i in special_ids.values() if len(vocab[i]) > 1 and vocab[i] not in produced}
    return {i: token for i, token in vocab.items() if i not in dropped}


def _checked_vocab(vocab: Mapping[int, bytes]) -> dict[int, bytes]:
    if not isinstance(vocab, Mapping) or not vocab:
        raise ConfigError(f"vocab must be a non-empty mapping of int ids to bytes, got {type(vocab).__name__}.")
    for token_id, token in vocab.items():
        if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
            raise ConfigError(f"vocab ids must be non-negative integers, got {token_id!r}.")
        if not isinstance(token, bytes) or not token:
            raise ConfigError(f"vocab[{token_id}] must be non-empty bytes, got {token!r}.")
    return dict(vocab)


def _checked_merges(merges: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    checked: list[tuple[bytes, bytes]] = []
    for index, merge in enumerate(merges):
        if not (
            isinstance(merge, (tuple, list))
            and len(merge) == 2
            and all(isinstance(part, bytes) and part for part in merge)
        ):
            raise ConfigError(f"merges[{index}] must be a pair of non-empty bytes, got {merge!r}.")
        checked.append((merge[0], merge[1]))
    return checked


def _known(vocab: Mapping[int, bytes], token_id: object) -> bool:
    try:
        return token_id in vocab and not isinstance(token_id, bool)
    except TypeError:  # unhashable
        return False
