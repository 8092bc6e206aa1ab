"""The reference (pure-Python) BPE encoder: apply a merge list to the bytes of one pre-token.

Repeatedly find the adjacent pair whose merge comes first in the list and replace every occurrence of it,
scanning left to right, until no adjacent pair is a listed merge. This is exactly the order in which BPE
training merged the training words, so training text re-encodes to the pieces training built.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from scratchlm.errors import ConfigError


class MergeList:
    """Merge-list BPE over token ids: `encode(data)` maps bytes to ids."""

    def __init__(self, token_ids: Mapping[bytes, int], merges: Sequence[tuple[bytes, bytes]]) -> None:
        missing = [b for b in range(256) if bytes([b]) not in token_ids]
        if missing:
            raise ConfigError(
                f"the vocabulary lacks {len(missing)} single-byte token(s) (first: {bytes([missing[0]])!r}); a "
                "byte-level BPE vocabulary must contain all 256 bytes."
            )
        self.byte_ids = [token_ids[bytes([b])] for b in range(256)]
        # (left id, right id) -> (rank, merged id); the first listing of a pair wins, as in the list's order.
        self.table: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (left, right) in enumerate(merges):
            try:
                key = (token_ids[left], token_ids[right])
                merged = token_ids[left + right]
            except KeyError as exc:
                raise ConfigError(
                    f"merge {rank} ({left!r}, {right!r}) uses or makes {exc.args[0]!r}, which is not in the "
                    "vocabulary; the vocabulary and merges do not belong together."
                ) from None
            self.table.setdefault(key, (rank, merged))

    def encode(self, data: bytes) -> list[int]:
        byte_ids = self.byte_ids
        ids = [byte_ids[b] for b in data]
        table = self.table
        while len(ids) > 1:
            best: tuple[int, int] | None = None
            best_pair = (0, 0)
            for pair in itertools.pairwise(ids):
                entry = table.get(pair)
                if entry is not None and (best is None or entry[0] < best[0]):
                    best, best_pair = entry, pair
            if best is None:
                break
            left, right = best_pair
            merged = best[1]
            out: list[int] = []
            i, n = 0, len(ids)
            while i < n:
                if i + 1 < n and ids[i] == left and ids[i + 1] == right:
                    out.append(merged)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return ids
