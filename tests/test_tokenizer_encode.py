"""Tokenizer encode/decode: exact round trips, fast path == pure path, special tokens, lazy encoding with
bounded memory, the on-disk format, GPT-2 parity with tiktoken (offline), and errors."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import pytest

from scratchlm.errors import ConfigError, DataError
from scratchlm.tokenizers import Tokenizer, load_tokenizer, train_bpe
from scratchlm.tokenizers.bpe import train_bpe_from_counts
from tests.text_helpers import ADVERSARIAL, tiktoken_gpt2_offline

EOT = "<|endoftext|>"
TRAIN_TEXT = (
    (
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine. "
        "One day, she saw a big, red ball in the park. \"Can I play?\" she asked. It's 3 o'clock!\n"
    )
    * 30
    + EOT
    + "The end. Ünïcödé text 🙂 and 中文 too.\n"
)


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    path = tmp_path_factory.mktemp("bpe") / "train.txt"
    path.write_text(TRAIN_TEXT, encoding="utf-8")
    vocab, merges = train_bpe(path, 400, [EOT])
    return Tokenizer(vocab, merges, [EOT])


@pytest.fixture(scope="module")
def gpt2(request: pytest.FixtureRequest) -> Tokenizer:
    from tests.conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return Tokenizer.from_gpt2_files(SHARED_DATA / "gpt2" / "encoder.json", SHARED_DATA / "gpt2" / "vocab.bpe")


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_round_trip_and_fast_equals_pure_on_adversarial_strings(small_tokenizer: Tokenizer, text: str) -> None:
    assert small_tokenizer.uses_fast_path
    ids = small_tokenizer.encode(text)
    assert ids == small_tokenizer.encode_pure(text)
    assert small_tokenizer.decode(ids) == text


def test_fast_equals_pure_on_random_unicode(small_tokenizer: Tokenizer) -> None:
    rng = random.Random(7)
    pools = [" \n\t'abcxyz0123.,!?", "éüßΩж中文🙂\u0558\u0301\u200d\u00a0\u3000", EOT]
    for _ in range(300):
        text = "".join(rng.choice(rng.choice(pools)) if rng.random() < 0.95 else EOT for _ in range(rng.randint(0, 40)))
        ids = small_tokenizer.encode(text)
        assert ids == small_tokenizer.encode_pure(text), text
        assert small_tokenizer.decode(ids) == text


def test_fast_path_splits_recently_assigned_letters_like_the_regex_package() -> None:
    # U+0558 and U+10940 are letters to the `regex` package but not to tiktoken's bundled Unicode tables; with
    # GPT-2's pattern as is, tiktoken would cut "a\u0558b" into three pre-tokens and never build its token.
    import tiktoken

    from scratchlm.tokenizers.pretokenize import GPT2_PATTERN

    vocab, merges = train_bpe_from_counts({"a\u0558b": 10, " a\u0558b": 10, "\U00010940\U00010941": 5}, 265)
    tok = Tokenizer(vocab, merges)
    text = "a\u0558b a\u0558b \U00010940\U00010941"
    assert tok.uses_fast_path
    want = [vocab_id(tok, "a\u0558b"), vocab_id(tok, " a\u0558b"), ord(" "), vocab_id(tok, "\U00010940\U00010941")]
    assert tok.encode(text) == tok.encode_pure(text) == want
    ranks = {token: i for i, token in tok.vocab.items()}
    uncorrected = tiktoken.Encoding("uncorrected", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})
    assert uncorrected.encode_ordinary(text) != tok.encode_pure(text)  # the case the corrected pattern fixes


def vocab_id(tok: Tokenizer, text: str) -> int:
    return next(i for i, token in tok.vocab.items() if token == text.encode())


def test_special_tokens_encode_to_one_id_and_never_merge(small_tokenizer: Tokenizer) -> None:
    eot = small_tokenizer.special_token_id(EOT)
    assert eot == 256
    assert small_tokenizer.encode(f"a{EOT}b") == [*small_tokenizer.encode("a"), eot, *small_tokenizer.encode("b")]
    assert small_tokenizer.encode(EOT * 3) == [eot] * 3


def test_overlapping_special_tokens_match_longest_first(small_tokenizer: Tokenizer) -> None:
    double = EOT * 2
    tok = Tokenizer(small_tokenizer.vocab, small_tokenizer.merges, [EOT, double])
    eot, eot2 = tok.special_token_id(EOT), tok.special_token_id(double)
    assert eot2 == max(tok.vocab)  # appended: it was not in the vocabulary
    ids = tok.encode(f"Hi{EOT * 3}there{EOT}")
    assert ids.count(eot2) == 1 and ids.count(eot) == 2
    assert ids == tok.encode_pure(f"Hi{EOT * 3}there{EOT}")
    assert tok.decode(ids) == f"Hi{EOT * 3}there{EOT}"
    text = f"a{EOT * 5}b{EOT}" * 300
    assert list(tok.encode_iterable(list(text))) == tok.encode(text)


def test_without_special_tokens_the_marker_is_plain_text(small_tokenizer: Tokenizer) -> None:
    plain = Tokenizer(
        {i: t for i, t in small_tokenizer.vocab.items() if t != EOT.encode()}, small_tokenizer.merges, None
    )
    ids = plain.encode(EOT)
    assert len(ids) > 1 and plain.decode(ids) == EOT


def test_lone_surrogates_are_rejected_by_both_paths(small_tokenizer: Tokenizer) -> None:
    for encode in (small_tokenizer.encode, small_tokenizer.encode_pure):
        with pytest.raises(DataError, match=r"lone surrogate U\+D800"):
            encode("ab\ud800c")


def test_decode_replaces_invalid_utf8(small_tokenizer: Tokenizer) -> None:
    euro_first_byte = small_tokenizer.encode("€")[0]  # the byte 0xE2 alone
    assert small_tokenizer.vocab[euro_first_byte] == b"\xe2"
    assert small_tokenizer.decode([euro_first_byte]) == "\ufffd"
    assert small_tokenizer.decode([]) == ""


@pytest.mark.parametrize("bad", [[10**6], [-1], [1, "2"], [None]])
def test_decode_unknown_ids(small_tokenizer: Tokenizer, bad: list) -> None:
    with pytest.raises(DataError, match="cannot decode unknown token id"):
        small_tokenizer.decode(bad)


def test_encode_iterable_equals_encode_for_any_chunking(small_tokenizer: Tokenizer) -> None:
    text = "".join(ADVERSARIAL) + TRAIN_TEXT
    expected = small_tokenizer.encode(text)
    rng = random.Random(3)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(text)), 40))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert list(small_tokenizer.encode_iterable(chunks)) == expected
    # one character at a time stresses the buffer boundaries ('ll contractions, partial specials)
    hard = f"you'll we've  \n\n x{EOT[:5]}y{EOT}{EOT}z ''' 12 34"
    assert list(small_tokenizer.encode_iterable(list(hard) * 600)) == small_tokenizer.encode(hard * 600)


def test_encode_iterable_file_lines_and_bounded_memory(small_tokenizer: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text(TRAIN_TEXT * 60, encoding="utf-8")  # ~1.3 MB
    with open(path, encoding="utf-8") as fh:
        expected = small_tokenizer.encode(fh.read())
    tracemalloc.start()
    count = 0
    with open(path, encoding="utf-8") as fh:
        for position, token in enumerate(small_tokenizer.encode_iterable(fh)):
            assert token == expected[position]
            count += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == len(expected)
    assert peak < 1_000_000  # the assignment's budget for encode_iterable


def test_inconsistent_vocabulary_falls_back_to_pure_path() -> None:
    # "bc" is merged before "ab", so the merge list never builds "abc" from ("ab", "c") the way tiktoken would.
    vocab = {i: bytes([i]) for i in range(256)}
    merges = [(b"b", b"c"), (b"a", b"b"), (b"ab", b"c")]
    for left, right in merges:
        vocab[len(vocab)] = left + right
    tok = Tokenizer(vocab, merges)
    assert not tok.uses_fast_path and "abc" in tok.fast_declined_because
    assert tok.decode(tok.encode("abc")) == "abc"
    assert tok.encode("abc") == [ord("a"), 256]  # merge list: a + bc; tiktoken would say [abc]
    with pytest.raises(ConfigError, match="fast backend cannot reproduce"):
        Tokenizer(vocab, merges, fast=True)


def test_trained_vocabularies_always_get_the_fast_path() -> None:
    rng = random.Random(11)
    for _ in range(30):
        words = {"".join(rng.choice("aab ") for _ in range(rng.randint(2, 12))): rng.randint(1, 9) for _ in range(30)}
        vocab, merges = train_bpe_from_counts(words, 256 + rng.randint(5, 60))
        tok = Tokenizer(vocab, merges)
        assert tok.uses_fast_path, tok.fast_declined_because
        for _ in range(50):
            text = "".join(rng.choice("aab ") for _ in range(rng.randint(0, 30)))
            assert tok.encode(text) == tok.encode_pure(text)


def test_save_load_and_from_files_round_trip(small_tokenizer: Tokenizer, tmp_path: Path) -> None:
    small_tokenizer.save(tmp_path / "tok")
    assert {p.name for p in (tmp_path / "tok").iterdir()} == {"tokenizer.json", "vocab.json", "merges.txt"}
    for loaded in (
        Tokenizer.load(tmp_path / "tok"),
        load_tokenizer(tmp_path / "tok"),
        Tokenizer.from_files(tmp_path / "tok" / "vocab.json", tmp_path / "tok" / "merges.txt", [EOT]),
    ):
        assert loaded.vocab == small_tokenizer.vocab
        assert loaded.merges == small_tokenizer.merges
        assert loaded.encode(TRAIN_TEXT) == small_tokenizer.encode(TRAIN_TEXT)


@pytest.mark.parametrize(
    ("vocab_text", "merges_text", "message"),
    [
        ("{not json", "#version: 0.2\n", "is not valid JSON"),
        ('["a"]', "#version: 0.2\n", "non-empty JSON object"),
        ('{"a": "1"}', "#version: 0.2\n", "ids must be non-negative integers"),
        ('{"a": 1, "b": 1}', "#version: 0.2\n", "id 1 is used twice"),
        ('{"a b": 1}', "#version: 0.2\n", "not a GPT-2 byte character"),
        ('{"a": 1}', "#version: 0.2\na b c\n", "expected two tokens"),
    ],
)
def test_malformed_files_are_rejected(tmp_path: Path, vocab_text: str, merges_text: str, message: str) -> None:
    (tmp_path / "vocab.json").write_text(vocab_text, encoding="utf-8")
    (tmp_path / "merges.txt").write_text(merges_text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        Tokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt")


def test_vocabulary_without_all_bytes_or_with_foreign_merges_is_rejected() -> None:
    vocab = {i: bytes([i]) for i in range(256)}
    with pytest.raises(ConfigError, match="lacks 1 single-byte token"):
        Tokenizer({i: t for i, t in vocab.items() if i != 7}, [])
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        Tokenizer(vocab, [(b"a", b"b")])
    with pytest.raises(ConfigError, match="pair of non-empty bytes"):
        Tokenizer(vocab, [("a", "b")])
    with pytest.raises(ConfigError, match="must be non-empty bytes"):
        Tokenizer({0: "a"}, [])


def test_load_rejects_missing_or_foreign_directories(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"kind": "sentencepiece", "format": 1}))
    with pytest.raises(DataError, match="unknown kind 'sentencepiece'"):
        load_tokenizer(tmp_path)


# ---- GPT-2 (shared data) ----------------------------------------------------------------------------------
def test_gpt2_ids_equal_tiktoken_gpt2(
    gpt2: Tokenizer, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tiktoken_gpt2_offline(shared_data / "gpt2", tmp_path / "tiktoken-cache", monkeypatch)
    assert gpt2.uses_fast_path and gpt2.vocab_size == reference.n_vocab == 50257
    texts = [
        *ADVERSARIAL,
        (shared_data / "text" / "tinystories_valid_prefix.txt").read_text(encoding="utf-8")[:200_000],
    ]
    texts.append((shared_data / "text" / "corpus.en").read_text(encoding="utf-8"))
    for text in texts:
        want = reference.encode(text, allowed_special="all")
        assert gpt2.encode(text) == want
        assert gpt2.encode_pure(text) == want
        assert gpt2.decode(want) == text


def test_trained_tinystories_fast_equals_pure_on_real_text(shared_data: Path) -> None:
    train = shared_data / "text" / "tinystories_v2_train_1728.txt"
    vocab, merges = train_bpe(train, 2000, [EOT])
    tok = Tokenizer(vocab, merges, [EOT])
    assert tok.uses_fast_path
    text = (shared_data / "text" / "tinystories_valid_prefix.txt").read_text(encoding="utf-8")[:300_000]
    text += train.read_text(encoding="utf-8")[:300_000]
    ids = tok.encode(text)
    assert ids == tok.encode_pure(text)
    assert tok.decode(ids) == text


SPACED_TEXTS = {  # none has the `x\ny` line break the streaming cut once relied on
    "crlf": "".join(f"Line {i} of the file.\r\n" + "\r\n" * (i % 3 == 0) for i in range(1200)),
    "tabs": "".join(f"\tif x{i}:\n\t\treturn {i}\n" for i in range(900)),
    "paragraphs": "".join(f"Paragraph {i} is here.\n\n" for i in range(1200)),
}


@pytest.fixture(scope="module")
def spacing_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """A BPE whose merges join whitespace runs (\\n\\n, \\t\\t, ...), so a run cut in two changes the ids."""
    path = tmp_path_factory.mktemp("spacing") / "train.txt"
    runs = "end.\n\n\nStart\t\t\tcode\r\n\r\n\r\nmore\n" * 1000  # runs the pattern keeps whole, to merge
    path.write_text("".join(SPACED_TEXTS.values()) + runs, encoding="utf-8", newline="")
    vocab, merges = train_bpe(path, 300, [])
    assert {b"\n\n", b"\t\t", b"\r\n\r"} <= set(vocab.values())
    return Tokenizer(vocab, merges)


@pytest.mark.parametrize("name", sorted(SPACED_TEXTS))
def test_encode_iterable_equals_encode_on_crlf_tabs_and_blank_lines(spacing_tokenizer: Tokenizer, name: str) -> None:
    text = SPACED_TEXTS[name] * 2
    expected = spacing_tokenizer.encode(text)
    rng = random.Random(len(name))
    cuts = sorted(rng.sample(range(1, len(text)), 300))
    for chunks in (
        list(text),
        text.splitlines(keepends=True),
        [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)],
    ):
        assert list(spacing_tokenizer.encode_iterable(chunks)) == expected


def test_encode_iterable_looks_for_a_cut_a_logarithmic_number_of_times(
    small_tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = Tokenizer._safe_cut
    monkeypatch.setattr(Tokenizer, "_safe_cut", lambda self, text: calls.append(len(text)) or real(self, text))
    lines = ["\n"] * 100_000  # one run of blank lines: no safe cut until it ends
    assert list(small_tokenizer.encode_iterable(lines)) == small_tokenizer.encode("".join(lines))
    assert len(calls) < 20  # it was one scan of the whole buffer per line once the buffer held 16k characters
