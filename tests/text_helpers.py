"""Helpers for the tokenizer and text-corpus tests: a brute-force BPE reference, adversarial strings, and
tiktoken's own `gpt2` encoding loaded offline from the shared GPT-2 files."""

from __future__ import annotations

import hashlib
import itertools
import shutil
from collections import Counter
from pathlib import Path

import pytest

GPT2_URLS = {
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}

# Strings where pre-tokenization, byte fallback or special-token handling could go wrong.
ADVERSARIAL = [
    "",
    " ",
    "\n",
    "a",
    "Hello, world! It's 2024 -- isn't it?",
    "   leading and trailing spaces   ",
    "tabs\tand\r\nwindows\r\nnewlines\n\n\n   \n",
    "emoji 🙂🙃 👩‍👩‍👧‍👦 flags 🇺🇸🇯🇵 and skin 👍🏽",
    "mixed scripts: Ελληνικά русский 中文字符 日本語 한국어 العربية עברית हिन्दी",
    "combining: e\u0301 a\u0308 \u0915\u094d\u0937 zero\u200bwidth\u200djoiner",
    "digits 1234567890 ١٢٣ ½ ²³ and numbers 3.14159e-10",
    "contractions: I'll we've they're she'd you'm 's 'S 'LL",
    "punctuation runs: !!!??? ... --- ((( ))) <<<>>> ''' \"\"\"",
    "control chars \x00\x01\x1c\x1d\x1e\x1f\x85\x7f end",
    "whitespace zoo \u00a0\u2002\u2003\u3000\u2028\u2029\u000b\u000c",
    "recent letters \u0558\u058b\u088f\u0c5c\u0cdc and \U00010940 are letters to one regex engine only",
    "surrogate-free astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
    "x" * 300 + " " + "ab" * 200,
    " " * 40 + "word" + "\n" * 20,
    "<|endoftext|>",
    "<|endoftext|><|endoftext|>",
    "before<|endoftext|>after",
    "<|endoftext|>start and end<|endoftext|>",
    "partial <|endoftext| and <|endo and |> pieces",
    "a<|endoftext|><|endoftext|><|endoftext|>b",
    "\n<|endoftext|>\n\n<|endoftext|> ",
]


def reference_train(counts: dict[str, int], vocab_size: int, special_tokens: list[str]):
    """BPE by the definition: recount every pair after every merge; ties to the greatest (bytes, bytes)."""
    vocab = {i: bytes([i]) for i in range(256)}
    for token in special_tokens:
        vocab[len(vocab)] = token.encode("utf-8")
    words = {tuple(bytes([b]) for b in w.encode("utf-8")): c for w, c in counts.items()}
    merges = []
    while len(vocab) < vocab_size:
        pairs: Counter = Counter()
        for word, count in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        vocab[len(vocab)] = best[0] + best[1]
        merged = {}
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = count
        words = merged
    return vocab, merges


def tiktoken_gpt2_offline(gpt2_dir: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """tiktoken's registered `gpt2` encoding, fed the shared files through its cache (no download)."""
    import tiktoken
    import tiktoken.registry

    cache_dir.mkdir(parents=True, exist_ok=True)
    for name, url in GPT2_URLS.items():
        shutil.copyfile(gpt2_dir / name, cache_dir / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache_dir))
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "gpt2", None)  # build it from our cache, restored afterwards
    tiktoken.registry.ENCODINGS.pop("gpt2")
    return tiktoken.get_encoding("gpt2")
