"""A walk through the tokenizer commands as a Unix user takes them: ids piped from `encode` into `decode`,
`tokenizer train --out` run again over an earlier tokenizer, and one-byte special tokens on the fast path."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scratchlm.cli import main
from scratchlm.tokenizers import CharTokenizer, Tokenizer, load_tokenizer, saving, train_bpe
from scratchlm.tokenizers import fast as fast_backend

EOT = "<|endoftext|>"
TEXT = "hello world, hello there! the cat sat on the mat.\nIt's 3 o'clock | a|b \x00 zero\n" * 20


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("walk_cli") / "corpus.txt"
    path.write_text(TEXT + EOT + TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(corpus: Path) -> Path:
    vocab, merges = train_bpe(corpus, 300, [EOT])
    return Tokenizer(vocab, merges, [EOT]).save(corpus.parent / "tok")


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes, *, tty: bool = False) -> None:
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    monkeypatch.setattr(stream, "isatty", lambda: tty)
    monkeypatch.setattr("sys.stdin", stream)


def _one_error_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1 and err.startswith("scratchlm: error:"), err
    assert "Traceback" not in err and "internal error" not in err
    return err


# ---- 1. decode reads what encode prints, from stdin or a file ---------------------------------------------
def _encoded(tokenizer_dir: Path, text: str, capsys: pytest.CaptureFixture) -> str:
    assert main(["tokenizer", "encode", "--tokenizer", str(tokenizer_dir), "--text", text]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("source", [[], ["--input", "-"]], ids=["implicit", "dash"])
def test_decode_reads_the_ids_encode_prints_from_stdin(tokenizer_dir: Path, capsys, monkeypatch, source) -> None:
    text = f"hello there{EOT}the cat | é 🙂"
    printed = _encoded(tokenizer_dir, text, capsys)
    _stdin(monkeypatch, printed.encode("ascii"))
    assert main(["tokenizer", "decode", "--tokenizer", str(tokenizer_dir), *source]) == 0
    assert capsys.readouterr().out == text + "\n"


def test_decode_no_newline_gives_back_the_encoded_file_byte_for_byte(tokenizer_dir: Path, tmp_path: Path) -> None:
    # Without -n every round trip grows the file by one newline; with it, encode | decode is the identity.
    original = tmp_path / "story.txt"
    original.write_bytes("the cat sat.\n\nhe said \u201chi\u201d \U0001f642\n".encode())
    cli = f"{sys.executable} -m scratchlm.cli tokenizer"
    enc = f"{cli} encode --tokenizer {tokenizer_dir} --input {original}"
    # UTF-8 out whatever the locale says (a latin-1 or cp1252 console), as encode reads UTF-8 whatever it says.
    for flag, tail, locale in (("-n", b"", ""), ("--no-newline", b"", ""), ("", b"\n", ""), ("-n", b"", "latin-1")):
        pipe = f"{enc} | PYTHONIOENCODING={locale or 'utf-8'} {cli} decode --tokenizer {tokenizer_dir} {flag}"
        done = subprocess.run(["bash", "-c", pipe], capture_output=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout == original.read_bytes() + tail, flag


def test_decode_stdin_in_a_real_shell_pipe(tokenizer_dir: Path) -> None:
    cli = f"{sys.executable} -m scratchlm.cli tokenizer"
    pipe = (
        f"{cli} encode --tokenizer {tokenizer_dir} --text 'the cat sat' | {cli} decode --tokenizer {tokenizer_dir}"
        f" && echo '263, 279' | {cli} decode --tokenizer {tokenizer_dir} --input -"
    )
    done = subprocess.run(["bash", "-c", pipe], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    expected = load_tokenizer(tokenizer_dir).decode([263, 279])
    assert done.stdout == f"the cat sat\n{expected}\n"


def test_decode_reads_an_ids_file_in_chunks_and_any_separators(tokenizer_dir: Path, tmp_path: Path, capsys) -> None:
    tokenizer = load_tokenizer(tokenizer_dir)
    ids = tokenizer.encode(TEXT * 40)
    ids_file = tmp_path / "ids.txt"  # spaces, commas and newlines; more than one 64 KiB chunk
    ids_file.write_text(
        "\n".join(", ".join(map(str, ids[i : i + 17])) for i in range(0, len(ids), 17)) + "\n", encoding="ascii"
    )
    assert ids_file.stat().st_size > 1 << 16
    assert main(["tokenizer", "decode", "--tokenizer", str(tokenizer_dir), "--input", str(ids_file)]) == 0
    assert capsys.readouterr().out == TEXT * 40 + "\n"


def test_decode_still_reads_token_files_with_or_without_bin(tokenizer_dir: Path, corpus: Path, tmp_path: Path, capsys):
    for name in ("c.bin", "c.tokens"):
        out = tmp_path / name
        argv = ["tokenizer", "encode", "--tokenizer", str(tokenizer_dir), "--input", str(corpus), "--out", str(out)]
        assert main(argv) == 0
        capsys.readouterr()
        assert main(["tokenizer", "decode", "--tokenizer", str(tokenizer_dir), "--input", str(out)]) == 0
        assert capsys.readouterr().out == corpus.read_text(encoding="utf-8") + "\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"1 x 3\n", "the ids on stdin must be integers, got 'x' (word 2); give token ids separated by spaces"),
        (b"1 1.5", "got '1.5' (word 2)"),
        (b"[1, 2]", "got '[1' (word 1)"),
        (b"+1", "got '+1'"),
        (b"1_0", "got '1_0'"),
        (b"263 99999\n", "cannot decode token id 99999 (word 2 of the ids on stdin): this tokenizer has ids 0.."),
        (b"-1", "cannot decode token id -1 (word 1 of"),
        (b"7" * 5000, "cannot decode token id 777"),
        (bytes(range(256)) * 300, "the ids on stdin are binary data, not ids as text"),
    ],
    ids=["word", "float", "list", "plus", "underscore", "beyond", "negative", "huge", "binary"],
)
def test_bad_ids_on_stdin_are_one_sentence(tokenizer_dir: Path, capsys, monkeypatch, data: bytes, message: str):
    _stdin(monkeypatch, data)
    err = _one_error_line(capsys, ["tokenizer", "decode", "--tokenizer", str(tokenizer_dir)])
    assert message in err


def test_bad_ids_in_a_file_name_it(tokenizer_dir: Path, tmp_path: Path, capsys) -> None:
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("1 2\n3 400\n", encoding="ascii")
    err = _one_error_line(capsys, ["tokenizer", "decode", "--tokenizer", str(tokenizer_dir), "--input", str(ids_file)])
    assert f"cannot decode token id 400 (word 4 of the ids in {ids_file})" in err


def test_decode_of_a_text_file_says_it_is_text(tokenizer_dir: Path, tmp_path: Path, capsys) -> None:
    # Once read as a token file: "... is 3133 bytes, not a multiple of 2 (uint16) ... prepare it again".
    text = tmp_path / "story.txt"
    text.write_text("12 hello there, the cat sat on the mat.\n" * 5 + "x", encoding="utf-8")
    err = _one_error_line(capsys, ["tokenizer", "decode", "--tokenizer", str(tokenizer_dir), "--input", str(text)])
    assert f"--input {text} is text ('hello' is not a token id)" in err and "tokenizer encode" in err


def test_decode_at_a_terminal_without_ids_asks_for_them(tokenizer_dir: Path, capsys, monkeypatch) -> None:
    _stdin(monkeypatch, b"", tty=True)
    err = _one_error_line(capsys, ["tokenizer", "decode", "--tokenizer", str(tokenizer_dir)])
    assert "no token ids given; pass --ids" in err and "| scratchlm tokenizer decode" in err


def test_decode_of_empty_stdin_is_empty_text(tokenizer_dir: Path, capsys, monkeypatch) -> None:
    _stdin(monkeypatch, _encoded(tokenizer_dir, "", capsys).encode())
    assert main(["tokenizer", "decode", "--tokenizer", str(tokenizer_dir)]) == 0
    assert capsys.readouterr().out == "\n"


def test_decode_ids_messages_keep_their_words(tokenizer_dir: Path, capsys) -> None:
    argv = ["tokenizer", "decode", "--tokenizer", str(tokenizer_dir), "--ids"]
    assert "--ids must be integers, got 'x' (word 3)" in _one_error_line(capsys, [*argv, "1,2", "x"])
    assert "cannot decode token id 99999 (word 1 of --ids)" in _one_error_line(capsys, [*argv, "99999"])
    assert main([*argv, "263,", "279"]) == 0


# ---- 2. train --out over an earlier tokenizer --------------------------------------------------------------
def _train(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["tokenizer", "train", "--input", str(corpus), "--out", str(out), "--no-progress", *extra]


def test_char_over_bpe_leaves_no_bpe_files_and_keeps_the_users(corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "tok"
    assert main(_train(corpus, out, "--vocab-size", "280")) == 0
    (out / "README.md").write_text("my notes\n", encoding="utf-8")
    (out / "encoder.json").write_text("{}\n", encoding="utf-8")  # GPT-2's file name: not one of ours
    capsys.readouterr()
    assert main(_train(corpus, out, "--kind", "char")) == 0
    assert "replacing the bpe tokenizer there" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "encoder.json", "tokenizer.json"]
    assert load_tokenizer(out).kind == "char"
    assert main(_train(corpus, out, "--vocab-size", "280")) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "encoder.json",
        "merges.txt",
        "tokenizer.json",
        "vocab.json",
    ]
    tokenizer = load_tokenizer(out)
    assert tokenizer.kind == "bpe" and tokenizer.decode(tokenizer.encode(TEXT)) == TEXT


def test_save_removes_only_files_the_earlier_tokenizer_json_names(tmp_path: Path) -> None:
    out = tmp_path / "tok"
    out.mkdir()
    # A hand-edited tokenizer.json naming a file scratchlm never writes: not taken for the tokenizer's own.
    (out / "tokenizer.json").write_text(json.dumps({"kind": "bpe", "format": 1, "vocab": "train.bin"}), "utf-8")
    (out / "train.bin").write_bytes(b"\x01\x00")
    (out / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")  # not named by tokenizer.json
    CharTokenizer("abc").save(out)
    assert sorted(p.name for p in out.iterdir()) == ["merges.txt", "tokenizer.json", "train.bin"]


def test_a_failed_save_leaves_the_earlier_tokenizer_whole(corpus: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "tok"
    assert main(_train(corpus, out, "--vocab-size", "280")) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = saving.atomic_write

    @contextlib.contextmanager
    def disk_full_at_tokenizer_json(path, *args, **kwargs):
        # The last file: vocab.json and merges.txt are written in full by then, and must not be used.
        with real(path, *args, **kwargs) as fh:
            if "tokenizer.json" in Path(path).name:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            yield fh

    monkeypatch.setattr(saving, "atomic_write", disk_full_at_tokenizer_json)
    for argv in (_train(corpus, out, "--vocab-size", "270"), _train(corpus, out, "--kind", "char")):
        assert main(argv) == 5
        err = capsys.readouterr().err
        assert "disk full (ENOSPC)" in err and len(err.strip().splitlines()) == 1
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporaries either
    assert load_tokenizer(out).vocab_size == 280
    fresh = tmp_path / "fresh"
    assert main(_train(corpus, fresh, "--kind", "char")) == 5
    assert not fresh.exists()  # not even an empty directory
    capsys.readouterr()


def test_a_failed_training_leaves_the_earlier_tokenizer(corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "tok"
    assert main(_train(corpus, out, "--vocab-size", "280")) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    only_specials = tmp_path / "eot.txt"
    only_specials.write_text(EOT * 3, encoding="utf-8")
    assert main(_train(only_specials, out, "--kind", "char", "--special-tokens", EOT)) == 2
    assert "nothing but special tokens" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_save_clears_old_temporaries_of_its_own_files_only(tmp_path: Path) -> None:
    out = tmp_path / "tok"
    out.mkdir()
    old = time.time() - 2 * saving.STALE_TEMP_AGE_S
    names = [".merges.txt.ab12cd34.tmp", "..vocab.json.0123abcd.tmp.zz99yy88.tmp", ".notes.txt.ab12cd34.tmp"]
    for name in [*names, ".tokenizer.json.fresh123.tmp"]:
        (out / name).write_bytes(b"partial")
        if name in names:
            os.utime(out / name, (old, old))
    Tokenizer({i: bytes([i]) for i in range(256)}, []).save(out)
    left = sorted(p.name for p in out.iterdir())
    # Another file's temporary and a recent one (perhaps another save's, still writing) stay.
    assert left == [
        ".notes.txt.ab12cd34.tmp",
        ".tokenizer.json.fresh123.tmp",
        "merges.txt",
        "tokenizer.json",
        "vocab.json",
    ]


def test_train_refuses_a_pipe_in_place_of_tokenizer_json_before_training(
    corpus: Path, tmp_path: Path, capsys, monkeypatch
):
    out = tmp_path / "tok"
    out.mkdir()
    os.mkfifo(out / "tokenizer.json")

    def no_training(*args, **kwargs):
        raise AssertionError("trained although --out cannot be written")

    monkeypatch.setattr("scratchlm.tokenizers.train_bpe", no_training)
    err = _one_error_line(capsys, _train(corpus, out, "--vocab-size", "280"))
    assert "tokenizer.json is a device, pipe or socket" in err


# ---- 3. one-byte special tokens on the fast path -----------------------------------------------------------
def _mixed_texts(specials: list[str]) -> list[str]:
    rng = random.Random(3)
    pieces = [
        "hello",
        " the",
        " cat",
        "|",
        "||",
        "a|b",
        "\x00",
        "\x00\x00",
        " ",
        "\n",
        "é",
        "🙂",
        "'s",
        EOT,
        "<|",
        *specials,
    ]
    texts = [TEXT, "|" + TEXT + "\x00", "a||b\x00\x00c | \x00 |"]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))) for _ in range(300)]
    return texts


@pytest.mark.parametrize("specials", [["\x00"], ["|"], ["|", EOT], [EOT, "\x00", "|"], ["é"]])
def test_one_byte_special_tokens_take_the_fast_path(corpus: Path, specials: list[str], tmp_path: Path, monkeypatch):
    # The special's id is its byte's own, and the fast path once dropped it from tiktoken's ranks: "the
    # vocabulary lacks some single bytes", so every encode ran in pure Python.
    vocab, merges = train_bpe(corpus, 300, specials)
    tokenizer = load_tokenizer(Tokenizer(vocab, merges, specials).save(tmp_path / "tok"))
    assert tokenizer.uses_fast_path, tokenizer.fast_declined_because
    calls = []
    real = fast_backend.encode_exact
    monkeypatch.setattr(fast_backend, "encode_exact", lambda *a: calls.append(1) or real(*a))
    for text in _mixed_texts(specials):
        ids = tokenizer.encode(text)
        assert ids == tokenizer.encode_pure(text), repr(text)
        assert tokenizer.decode(ids) == text
    assert calls  # the ids above came from tiktoken
    if len(specials[0]) == 1 and specials[0].isascii():
        assert tokenizer.encode(specials[0]) == [tokenizer.special_token_id(specials[0])] == [ord(specials[0])]
    stream = list(tokenizer.encode_iterable(iter(TEXT * 50)))
    assert stream == tokenizer.encode_pure(TEXT * 50)


def test_a_special_token_equal_to_a_merged_token_takes_the_fast_path(corpus: Path) -> None:
    vocab, merges = train_bpe(corpus, 300, [])
    merged = next(token for token in vocab.values() if len(token) > 2 and token.isalpha()).decode()
    tokenizer = Tokenizer(vocab, merges, [merged, "|"])
    assert tokenizer.uses_fast_path, tokenizer.fast_declined_because
    for text in [*_mixed_texts([merged]), merged * 3 + "x" + merged]:
        assert tokenizer.encode(text) == tokenizer.encode_pure(text), repr(text)


def test_gpt2_with_a_one_byte_special_token_takes_the_fast_path(shared_data: Path) -> None:
    # GPT-2's merges do join "|" bytes ("||", " |"); cut out as a special, the text never reaches them.
    files = shared_data / "gpt2"
    tokenizer = Tokenizer.from_gpt2_files(files / "encoder.json", files / "vocab.bpe", [EOT, "|"])
    assert tokenizer.uses_fast_path, tokenizer.fast_declined_because
    assert tokenizer.special_token_id("|") == 91
    for text in _mixed_texts([]):
        assert tokenizer.encode(text) == tokenizer.encode_pure(text), repr(text)
