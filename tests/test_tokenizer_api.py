"""The tiktoken / Hugging Face names on both tokenizer kinds: encode_batch / decode_batch, n_vocab / len /
get_vocab_size, token_to_id / id_to_token, eot_token; and GPT-2's token strings against its encoder.json."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from scratchlm.errors import ConfigError, DataError
from scratchlm.tokenizers import CharTokenizer, TextTokenizer, Tokenizer, train_bpe
from tests.text_helpers import ADVERSARIAL

EOT = "<|endoftext|>"
TRAIN_TEXT = (
    (
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine. "
        "\"Can I play?\" she asked. It's 3 o'clock!\n"
    )
    * 20
    + EOT
    + "The end. Ünïcödé 🙂 中文\n"
)
TEXTS = [
    "",
    "Once upon a time",
    f"the end.{EOT}{EOT}Lily",
    " she asked. It's 3 o'clock!\n\n",
    "Ünïcödé 🙂 中文",
    "a" * 500 + " " + "play " * 50,
]


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("api") / "train.txt"
    path.write_text(TRAIN_TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=["bpe", "bpe-pure", "char"])
def tokenizer(request: pytest.FixtureRequest, train_file: Path) -> Tokenizer | CharTokenizer:
    if request.param == "char":
        return CharTokenizer.train(train_file, [EOT])
    vocab, merges = train_bpe(train_file, 320, [EOT])
    tok = Tokenizer(vocab, merges, [EOT], fast=request.param == "bpe")
    assert tok.uses_fast_path == (request.param == "bpe")
    return tok


@pytest.fixture(scope="module")
def gpt2_files() -> Path:
    from tests.conftest import SHARED_DATA

    folder = SHARED_DATA / "gpt2"
    if not (folder / "encoder.json").is_file() or not (folder / "vocab.bpe").is_file():
        pytest.skip(f"GPT-2's encoder.json / vocab.bpe not found under {folder}")
    return folder


@pytest.fixture(scope="module")
def gpt2(gpt2_files: Path) -> Tokenizer:
    return Tokenizer.from_gpt2_files(gpt2_files / "encoder.json", gpt2_files / "vocab.bpe")


# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_threads", [1, 3])
def test_encode_batch_equals_encode_of_each_text(tokenizer: Tokenizer | CharTokenizer, num_threads: int) -> None:
    assert tokenizer.encode_batch(TEXTS, num_threads=num_threads) == [tokenizer.encode(t) for t in TEXTS]
    assert tokenizer.encode_batch(iter(TEXTS), num_threads=num_threads) == [tokenizer.encode(t) for t in TEXTS]
    assert tokenizer.encode_batch([], num_threads=num_threads) == []


def test_encode_batch_on_adversarial_strings_with_threads(train_file: Path) -> None:
    vocab, merges = train_bpe(train_file, 320, [EOT])
    tok = Tokenizer(vocab, merges, [EOT])
    assert tok.encode_batch(ADVERSARIAL, num_threads=4) == [tok.encode(t) for t in ADVERSARIAL]
    assert tok.encode_batch(ADVERSARIAL, num_threads=4) == [tok.encode_pure(t) for t in ADVERSARIAL]


def test_encode_batch_uses_threads_only_where_encoding_releases_the_gil(
    tokenizer: Tokenizer | CharTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()
    encode = tokenizer.encode

    def recording_encode(text: str) -> list[int]:
        threads.add(threading.current_thread().name)
        return encode(text)

    monkeypatch.setattr(tokenizer, "encode", recording_encode)
    assert tokenizer.encode_batch(TEXTS * 4, num_threads=2) == [encode(t) for t in TEXTS * 4]
    on_threads = isinstance(tokenizer, Tokenizer) and tokenizer.uses_fast_path
    assert all(name.startswith("scratchlm-encode") for name in threads) == on_threads
    threads.clear()
    tokenizer.encode_batch(TEXTS)  # the default is a plain loop
    assert threads == {threading.current_thread().name}


def test_encode_batch_raises_what_encode_raises(tokenizer: Tokenizer | CharTokenizer) -> None:
    bad = "\ud800" if isinstance(tokenizer, Tokenizer) else "zebra"  # a lone surrogate / a char outside the alphabet
    with pytest.raises(DataError) as expected:
        tokenizer.encode(bad)
    for num_threads in (1, 2):
        with pytest.raises(DataError) as raised:
            tokenizer.encode_batch(["Lily", bad, "play"], num_threads=num_threads)
        assert str(raised.value) == str(expected.value)


def test_encode_batch_argument_errors(tokenizer: Tokenizer | CharTokenizer) -> None:
    with pytest.raises(ConfigError, match=r"encode_batch takes a list of texts, got one str; use encode\(text\)"):
        tokenizer.encode_batch("Lily")
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ConfigError, match="num_threads must be a positive integer"):
            tokenizer.encode_batch(["Lily"], num_threads=bad)


def test_decode_batch_round_trips(tokenizer: Tokenizer | CharTokenizer) -> None:
    batch = tokenizer.encode_batch(TEXTS)
    assert tokenizer.decode_batch(batch) == TEXTS == [tokenizer.decode(ids) for ids in batch]
    assert tokenizer.decode_batch(iter(batch)) == TEXTS
    assert tokenizer.decode_batch([]) == []
    rows = [ids for ids in batch if len(ids) == len(batch[1])]
    assert tokenizer.decode_batch(torch.tensor(rows)) == tokenizer.decode_batch(rows)  # a 2-D tensor: its rows
    with pytest.raises(DataError, match=r"decode_batch takes a batch of id sequences .* use decode\(ids\)"):
        tokenizer.decode_batch(batch[1])
    with pytest.raises(DataError, match="decode_batch takes a batch of id sequences"):
        tokenizer.decode_batch(torch.tensor(batch[1]))


def test_vocabulary_size_names(tokenizer: Tokenizer | CharTokenizer) -> None:
    assert isinstance(tokenizer, TextTokenizer)
    assert tokenizer.n_vocab == len(tokenizer) == tokenizer.get_vocab_size() == tokenizer.vocab_size


def test_token_to_id_and_id_to_token_round_trip_over_every_id(tokenizer: Tokenizer | CharTokenizer) -> None:
    strings = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    assert all(isinstance(s, str) and s for s in strings)
    assert len(set(strings)) == tokenizer.vocab_size
    assert [tokenizer.token_to_id(s) for s in strings] == list(range(tokenizer.vocab_size))
    assert tokenizer.token_to_id(EOT) == tokenizer.special_token_id(EOT) == tokenizer.eot_token
    assert tokenizer.id_to_token(tokenizer.eot_token) == EOT
    assert tokenizer.id_to_token(torch.tensor(3)) == tokenizer.id_to_token(3)  # any integer, as HF takes


def test_absent_tokens_and_ids_are_none(tokenizer: Tokenizer | CharTokenizer) -> None:
    for absent in ("not a token at all", "", "<|unknown|>", "ZZZZ"):
        assert tokenizer.token_to_id(absent) is None
    for absent in (tokenizer.vocab_size, tokenizer.vocab_size + 10, -1, 1 << 40):
        assert tokenizer.id_to_token(absent) is None
    with pytest.raises(TypeError, match="id_to_token takes an int id"):
        tokenizer.id_to_token("3")
    with pytest.raises(TypeError, match="id_to_token takes an int id"):
        tokenizer.id_to_token(True)
    with pytest.raises(TypeError, match="token_to_id takes a token string"):
        tokenizer.token_to_id(3)


def test_char_tokens_are_their_characters(train_file: Path) -> None:
    tok = CharTokenizer.train(train_file, [EOT])
    assert [tok.id_to_token(i) for i in range(len(tok.chars))] == tok.chars
    assert tok.token_to_id("L") == tok.encode("L")[0]
    assert tok.token_to_id("Li") is None  # not one character
    overlapping = CharTokenizer("abc", ["a"])  # a special token that is also a character: encode picks the special
    assert overlapping.token_to_id("a") == overlapping.encode("a")[0] == 3
    assert overlapping.id_to_token(0) == overlapping.id_to_token(3) == "a"


def test_bpe_tokens_are_gpt2_byte_alphabet_strings_as_in_vocab_json(train_file: Path, tmp_path: Path) -> None:
    vocab, merges = train_bpe(train_file, 320, [EOT])
    tok = Tokenizer(vocab, merges, [EOT])
    assert tok.id_to_token(ord(" ")) == "Ġ" and tok.id_to_token(ord("\n")) == "Ċ" and tok.id_to_token(ord("a")) == "a"
    (the,) = tok.encode(" the")
    assert tok.token_to_id("Ġthe") == the and tok.id_to_token(the) == "Ġthe"
    assert tok.token_to_id(" the") is None  # the raw text is not the token's string form
    saved = json.loads((tok.save(tmp_path / "tok") / "vocab.json").read_text(encoding="utf-8"))
    assert saved == {tok.id_to_token(i): i for i in range(tok.vocab_size)}


def test_eot_token_is_a_clear_error_without_endoftext() -> None:
    for tok in (CharTokenizer("abc", ["<eos>"]), Tokenizer({i: bytes([i]) for i in range(256)}, [], ["<eos>"])):
        assert isinstance(tok, TextTokenizer)  # the protocol check does not read eot_token
        with pytest.raises(ConfigError, match=r"'<\|endoftext\|>' is not a special token of this tokenizer"):
            _ = tok.eot_token


# --------------------------------------------------------------------------------------------------------
def test_gpt2_token_strings_match_encoder_json(gpt2: Tokenizer, gpt2_files: Path) -> None:
    encoder = json.loads((gpt2_files / "encoder.json").read_text(encoding="utf-8"))
    assert encoder["Ġthe"] == 262
    assert gpt2.token_to_id("Ġthe") == 262 and gpt2.id_to_token(262) == "Ġthe"
    assert gpt2.eot_token == encoder[EOT] == 50256
    assert gpt2.n_vocab == len(gpt2) == gpt2.get_vocab_size() == len(encoder) == 50257
    assert {gpt2.id_to_token(i): i for i in range(gpt2.vocab_size)} == encoder
    assert all(gpt2.token_to_id(token) == token_id for token, token_id in encoder.items())


def test_gpt2_encode_batch_equals_encode(gpt2: Tokenizer) -> None:
    texts = [*ADVERSARIAL, *TEXTS]
    assert gpt2.encode_batch(texts, num_threads=4) == gpt2.encode_batch(texts) == [gpt2.encode(t) for t in texts]
    assert gpt2.decode_batch(gpt2.encode_batch(texts)) == texts


def test_encode_ordinary_reads_special_tokens_as_text(tokenizer: Tokenizer | CharTokenizer) -> None:
    text = f"the end.{EOT}Lily"
    if isinstance(tokenizer, CharTokenizer):  # its alphabet has no "<" or "|": the special's text is unknown
        with pytest.raises(DataError, match="not in this char tokenizer's alphabet"):
            tokenizer.encode_ordinary(text)
        tokenizer = CharTokenizer(sorted(set(text + "Once upon")), [EOT])
    ordinary = tokenizer.encode_ordinary(text)
    assert tokenizer.special_token_id(EOT) not in ordinary and tokenizer.decode(ordinary) == text
    assert tokenizer.encode(text) != ordinary and tokenizer.encode_ordinary("Once upon") == tokenizer.encode(
        "Once upon"
    )


def test_gpt2_encode_ordinary_matches_tiktoken(gpt2: Tokenizer) -> None:
    # tiktoken's encode_ordinary("a<|endoftext|>") on GPT-2: the special token's text as seven ordinary tokens.
    assert gpt2.encode_ordinary(f"a{EOT}") == [64, 27, 91, 437, 1659, 5239, 91, 29]
    assert gpt2.encode(f"a{EOT}") == [64, 50256]


def test_get_vocab_maps_every_token_string_to_its_id(tokenizer: Tokenizer | CharTokenizer) -> None:
    vocab = tokenizer.get_vocab()
    assert vocab[EOT] == tokenizer.special_token_id(EOT)
    assert all(tokenizer.token_to_id(token) == i for token, i in vocab.items())
    assert set(vocab.values()) <= set(range(tokenizer.vocab_size))


@pytest.mark.parametrize(
    "ids", [[1.0], [True], torch.tensor([1.0]), torch.tensor([True])], ids=["float", "bool", "tensor", "mask"]
)
def test_decode_refuses_ids_that_are_not_integers(tokenizer: Tokenizer | CharTokenizer, ids: object) -> None:
    # 1.0 == 1 and True == 1 as dict keys: decoding them silently would hide a float tensor passed by mistake.
    with pytest.raises(TypeError, match="token ids must be integers"):
        tokenizer.decode(ids)
    assert tokenizer.decode(torch.tensor([1, 2])) == tokenizer.decode([1, 2])
