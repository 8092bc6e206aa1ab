"""The reference (pure-Python) BPE encoder: apply a merge list to the bytes of one pre-token.

Repeatedly find the adjacent pair whose merge comes first in the list and replace every occurrence of it,
scanning left to right, until no adjacent pair is a listed merge. This is exactly the order in which BPE
training merged the training words, so training text re-encodes to the pieces training built.

Done literally, that rescans the whole pre-token once per merge applied: a long unbroken word (a base64
blob, a minified line) took seconds per 10k bytes and hours for a megabyte. Long pre-tokens therefore keep
their candidate pairs in a heap keyed by (rank, position), which gives the same ids whenever each merged
token comes from one merge only and every merge uses tokens made by earlier ones (so a merge only creates
pairs of later rank, and the heap pops each rank's occurrences left to right, as one scan would). BPE
training and GPT-2's files have that property; other merge lists keep the literal scan.
"""

from __future__ import annotations

import heapq
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
        self.heap_exact = _merges_in_order(self.table, set(self.byte_ids))

    def encode(self, data: bytes) -> list[int]:
        byte_ids = self.byte_ids
        ids = [byte_ids[b] for b in data]
        if len(ids) >= _HEAP_MIN_LENGTH and self.heap_exact:
            return self._merge_by_heap(ids)
        return self._merge_by_scans(ids)

    def _merge_by_scans(self, ids: list[int]) -> list[int]:
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

    def _merge_by_heap(self, ids: list[int]) -> list[int]:
        table = self.table
        n = len(ids)
        symbols = list(ids)  # -1 marks a position absorbed into its left neighbour
        after = list(range(1, n + 1))
        before = list(range(-1, n - 1))
        heap = [(table[pair][0], i) for i, pair in enumerate(itertools.pairwise(ids)) if pair in table]
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            j = after[i]
            if symbols[i] < 0 or j >= n:
                continue
            entry = table.get((symbols[i], symbols[j]))
            # A rank names one pair, so a matching rank means the pair at i is still the one pushed.
            if entry is None or entry[0] != rank:
                continue
            merged = entry[1]
            symbols[i], symbols[j] = merged, -1
            k = after[j]
            after[i] = k
            if k < n:
                before[k] = i
                entry = table.get((merged, symbols[k]))
                if entry is not None:
                    heapq.heappush(heap, (entry[0], i))
            h = before[i]
            if h >= 0:
                entry = table.get((symbols[h], merged))
                if entry is not None:
                    heapq.heappush(heap, (entry[0], h))
        return [symbol for symbol in symbols if symbol >= 0]


_HEAP_MIN_LENGTH = 64  # below this a few rescans cost less than the heap's bookkeeping


def _merges_in_order(table: Mapping[tuple[int, int], tuple[int, int]], byte_ids: set[int]) -> bool:
    """Whether each merged id comes from one merge only and every merge uses bytes or earlier merges' ids."""
    made_at: dict[int, int] = {}
    for rank, merged in table.values():
        if merged in made_at or merged in byte_ids:
            return False
        made_at[merged] = rank
    for (left, right), (rank, _) in table.items():
        for part in (left, right):
            if part not in byte_ids and made_at.get(part, rank) >= rank:
                return False
    return True
