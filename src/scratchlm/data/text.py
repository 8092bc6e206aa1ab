"""Text corpus -> token files: `prepare_text_corpus` writes a data directory, `load_token_dir` opens one.

A data directory holds `train.bin` and `val.bin` (ids, see `token_files`), `tokenizer/` (any saved
tokenizer, reloaded with `load_tokenizer`) and `meta.json`:
    {"format": 1, "vocab_size", "dtype", "tokenizer": {"kind", "dir", "special_tokens", "source"},
     "splits": {"train": {"file", "tokens", "bytes"}, "val": {...}}, "sources": [{"path", "bytes", "sha256"}],
     "file_separator", "val_split": {...}, "timings_s": {...}}
Each input file is a document: with an `<|endoftext|>` special token (`file_separator`) one goes between
two files in a split.
Everything is written into a staging directory first and moved into place at the end (meta.json last),
so a failed run leaves the output directory as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from scratchlm import __version__
from scratchlm.data.token_files import load_token_file, token_dtype
from scratchlm.errors import ConfigError, DataError
from scratchlm.fileio import atomic_write, refuse_special_file
from scratchlm.tokenizers.base import END_OF_TEXT, TextTokenizer, load_tokenizer
from scratchlm.tokenizers.chunks import TextSource, as_sources, iter_ranges, next_safe_cut, read_range, total_size
from scratchlm.tokenizers.counting import plan_workers, progress_bar, worker_pool
from scratchlm.tokenizers.pretokenize import check_special_tokens

logger = logging.getLogger(__name__)

META_FORMAT = 1
TOKENIZER_CHOICES = ("bpe", "char", "gpt2")


@dataclass
class TokenCorpus:
    """An opened data directory: the two splits as read-only memmaps, plus what describes them."""

    directory: Path
    train: np.memmap
    val: np.memmap
    meta: dict
    vocab_size: int

    @property
    def tokenizer_dir(self) -> Path:
        return self.directory / self.meta["tokenizer"]["dir"]

    def tokenizer(self) -> TextTokenizer:
        return load_tokenizer(self.tokenizer_dir)


def load_token_dir(directory: str | os.PathLike, *, full_check: bool = False) -> TokenCorpus:
    """Open a directory written by `prepare_text_corpus` (checking both token files against meta.json)."""
    directory = Path(directory)
    meta = read_corpus_meta(directory)
    splits = {
        name: load_token_file(directory / meta["splits"][name]["file"], meta, full_check=full_check)
        for name in ("train", "val")
    }
    return TokenCorpus(directory, splits["train"], splits["val"], meta, int(meta["vocab_size"]))


def read_corpus_meta(directory: str | os.PathLike) -> dict:
    """A corpus directory's meta.json, checked: its format, and split files and tokenizer directory that are
    plain names inside it. DataError (naming the fix) for anything else."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    refuse_special_file(meta_path, "corpus description")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{meta_path} does not exist; prepare the directory with `scratchlm data text`.") from None
    except NotADirectoryError:
        raise DataError(
            f"{directory} is a file, not a token directory; point data.path at the directory `scratchlm data text` "
            'wrote (or set data.kind = "trajectories" for a trajectory pickle).'
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurdly nested
        raise DataError(f"{meta_path} is not valid JSON ({exc}); prepare the directory again.") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise DataError(f"{meta_path} is not a format-{META_FORMAT} text corpus description; prepare it again.")
    for name in ("train", "val"):
        entry = meta["splits"].get(name) if isinstance(meta.get("splits"), dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise DataError(f"{meta_path} lacks the {name!r} split; prepare the directory again.")
        _check_plain_name(entry["file"], f"the {name} split's file", meta_path)
    tokenizer = meta.get("tokenizer")
    if not isinstance(tokenizer, dict) or not isinstance(tokenizer.get("dir"), str):
        raise DataError(f"{meta_path} lacks the tokenizer entry {{'dir': ...}}; prepare the directory again.")
    _check_plain_name(tokenizer["dir"], "the tokenizer directory", meta_path)
    return meta


def _check_plain_name(name: str, what: str, meta_path: Path) -> None:
    # meta.json may come from a stranger: it must not point the loader at files outside its directory.
    if not name or os.path.basename(name) != name or name in (".", ".."):
        raise DataError(f"{meta_path}: {what} must be a name inside the directory, got {name!r}; prepare it again.")


def prepare_text_corpus(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    tokenizer: str = "bpe",
    *,
    val_inputs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    val_fraction: float | None = 0.1,
    vocab_size: int | None = None,
    special_tokens: Sequence[str] | None = None,
    gpt2_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
) -> dict:
    """Tokenize text files into `out_dir` (layout in the module docstring); returns the meta dict.

    `tokenizer` is "bpe" (trained here on the training split, `vocab_size` default 10000, special tokens
    default `<|endoftext|>`), "char" (the alphabet of all inputs), "gpt2" (GPT-2's `encoder.json` and
    `vocab.bpe` from `gpt2_dir`), or the path of a saved tokenizer directory. Validation text comes from
    `val_inputs`, or else from the last `val_fraction` of the inputs, cut at a line or special-token boundary.
    An `out_dir` that already holds another corpus (other inputs, split or tokenizer) is refused before any
    work unless `overwrite`; the same preparation run again rewrites it with the same files.
    """
    timings: dict[str, float] = {}
    tokenizer_source, specials = _tokenizer_plan(tokenizer, vocab_size, special_tokens, gpt2_dir)
    # The tokenizer's special tokens (its defaults too) are where the validation split prefers to start.
    train_sources, val_sources, val_split = _split_sources(inputs, val_inputs, val_fraction, specials)
    out_dir = Path(out_dir)
    source_paths = [os.path.abspath(path) for path in _unique_paths([*train_sources, *val_sources])]
    recorded_source = _rerun_source(out_dir, _recipe(source_paths, val_split, tokenizer_source, specials))
    _check_out_dir(out_dir, _recipe(source_paths, val_split, recorded_source, specials), overwrite)
    t_start = time.perf_counter()
    tok = _make_tokenizer(tokenizer_source, specials, train_sources, val_sources, num_workers, progress)
    timings["tokenizer"] = time.perf_counter() - t_start
    dtype = token_dtype(tok.vocab_size)
    # Each input file is a document: like nanoGPT's and litgpt's corpora, an end-of-text token between two
    # files keeps the model from learning one file's end as the next one's context.
    separator = tok.special_token_id(END_OF_TEXT) if END_OF_TEXT in tok.special_tokens else None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        tok.save(staging / "tokenizer")
        splits = {}
        for name, sources in (("train", train_sources), ("val", val_sources)):
            t_start = time.perf_counter()
            tokens = encode_sources(
                tok, sources, staging / f"{name}.bin", dtype, num_workers, progress, separator=separator
            )
            timings[f"encode_{name}"] = time.perf_counter() - t_start
            if tokens == 0:
                raise DataError(f"the {name} split encodes to no tokens; give it some text.")
            nbytes = sum(s.stop() - s.start for s in sources)
            splits[name] = {"file": f"{name}.bin", "tokens": tokens, "bytes": nbytes}
        meta = {
            "format": META_FORMAT,
            "vocab_size": tok.vocab_size,
            "dtype": dtype.name,
            "tokenizer": {
                "kind": tok.kind,
                "dir": "tokenizer",
                "special_tokens": list(tok.special_tokens),
                "source": recorded_source,
            },
            "splits": splits,
            "file_separator": None if separator is None else END_OF_TEXT,
            "sources": [_describe(path) for path in _unique_paths([*train_sources, *val_sources])],
            "val_split": val_split,
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "created_by": f"scratchlm {__version__}",
        }
        with atomic_write(staging / "meta.json", "w", encoding="utf-8") as fh:
            fh.write(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        _publish(staging, out_dir, ["train.bin", "val.bin", "tokenizer"], "meta.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta


# ---- encoding -------------------------------------------------------------------------------------------
_WORKER_TOKENIZER: TextTokenizer | None = None
# A task's range is encoded in pieces of about this size: `encode` returns a Python list (~40 bytes per
# id), so a whole 32 MB range at once would hold hundreds of MB; pieces keep that to a few MB.
_ENCODE_PIECE_BYTES = 1 << 20


def _init_worker(tokenizer: TextTokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _encode_range(task: tuple[str, int, int, str]) -> tuple[np.ndarray, int]:
    path, start, end, dtype = task
    tokenizer = _WORKER_TOKENIZER
    assert tokenizer is not None
    pieces = [
        np.asarray(tokenizer.encode(read_range(path, a, b)), dtype=dtype)
        for a, b in iter_ranges(TextSource(path, start, end), tokenizer.special_tokens, _ENCODE_PIECE_BYTES)
    ]
    return (np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)), end - start


def encode_sources(
    tokenizer: TextTokenizer,
    sources: Sequence[TextSource],
    out_path: str | os.PathLike,
    dtype: np.dtype,
    num_workers: int | None = None,
    progress: bool | None = None,
    *,
    separator: int | None = None,
) -> int:
    """Encode the sources in order into one token file (written atomically); returns the token count.

    Sources are cut at safe boundaries and encoded in parallel worker processes for large inputs; the ids
    equal those of encoding each source's text in one call. `separator` (a special token's id) goes between
    a source that ends its file and the next source, unless either side already has it there.
    """
    total = sum(s.stop() - s.start for s in sources)
    workers, target = plan_workers(total, num_workers)
    tasks: list[tuple[str, int, int, str]] = []
    # Index of the task after which a separator is written, with the separator's bytes.
    separate_after: dict[int, bytes] = {}
    previous: TextSource | None = None
    for source in sources:
        if source.stop() <= source.start:
            continue  # an empty source is no document; the separator rule skips it
        if (
            separator is not None
            and previous is not None
            and tasks
            and _needs_separator(previous, source, tokenizer, separator)
        ):
            separate_after[len(tasks) - 1] = np.asarray([separator], dtype=dtype).tobytes()
        tasks.extend((source.path, a, b, dtype.str) for a, b in iter_ranges(source, tokenizer.special_tokens, target))
        previous = source
    count = 0
    bar = progress_bar(total, progress, f"encoding {os.path.basename(out_path)}")
    try:
        with contextlib.ExitStack() as stack:
            fh = stack.enter_context(atomic_write(out_path, "wb"))
            if workers == 1 or len(tasks) == 1:
                _init_worker(tokenizer)
                results = map(_encode_range, tasks)
            else:
                pool = stack.enter_context(worker_pool(workers, _init_worker, (tokenizer,)))
                results = pool.imap(_encode_range, tasks)
            for index, (ids, nbytes) in enumerate(results):
                fh.write(ids.tobytes())
                count += len(ids)
                if index in separate_after:
                    fh.write(separate_after[index])
                    count += 1
                bar.update(nbytes)
    finally:
        bar.close()
    return count


_SEPARATOR_WHITESPACE = 256  # how much whitespace may stand between a file's end (or start) and its separator


def _needs_separator(left: TextSource, right: TextSource, tokenizer: TextTokenizer, separator: int) -> bool:
    """Whether a separator goes between `left` and `right`: `left` ends its file, `right` starts one, and
    neither already has the separator's text at that end (whitespace around it aside)."""
    if left.stop() != os.path.getsize(left.path) or right.start != 0:
        return False  # the two halves of one file split in the middle, or part of a file
    marker = tokenizer.decode([separator]).encode("utf-8")
    look = len(marker) + _SEPARATOR_WHITESPACE  # "<|endoftext|>\n" at a file's end is a separator too
    with open(left.path, "rb") as fh:
        fh.seek(max(0, left.stop() - look))
        ends_with = fh.read(look).rstrip().endswith(marker)
    with open(right.path, "rb") as fh:
        starts_with = fh.read(look).lstrip().startswith(marker)
    return not (ends_with or starts_with)


# ---- inputs, tokenizer, outputs ----------------------------------------------------------------------------
def _split_sources(
    inputs, val_inputs, val_fraction: float | None, special_tokens: Sequence[str] | None
) -> tuple[list[TextSource], list[TextSource], dict]:
    train = as_sources(inputs)
    total_size(train)
    if val_inputs is not None:
        val = as_sources(val_inputs)
        total_size(val)
        for held_out in val:
            for source in train:
                if os.path.samefile(held_out.path, source.path):
                    raise ConfigError(
                        f"{held_out.path} is both a training input and the validation input, so validation "
                        "would measure text the model trains on; give a file of held-out text to --val-input, or "
                        "leave it out to split the last --val-fraction off the inputs."
                    )
        return train, val, {"kind": "files", "paths": [s.path for s in val]}
    if val_fraction is None or not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}; or give val inputs.")
    sizes = [s.stop() for s in train]
    target = round(sum(sizes) * (1.0 - val_fraction))
    offset = 0
    for index, (source, size) in enumerate(zip(train, sizes, strict=True)):
        if offset + size > target:
            cut = _val_cut(source.path, target - offset, size, special_tokens or [])
            if cut is None:
                break
            head, tail = TextSource(source.path, 0, cut), TextSource(source.path, cut, size)
            split = {"kind": "fraction", "fraction": val_fraction, "file": source.path, "byte_offset": cut}
            return [*train[:index], head], [tail, *train[index + 1 :]], split
        offset += size
    raise DataError(
        f"cannot split the last {val_fraction:.0%} of the input off as validation text (it is too short or has "
        "no line break there); give --val-input or a different --val-fraction."
    )


_VAL_CUT_LOOK = 1 << 20  # how far past its target the validation split looks for a document or line start


def _val_cut(path: str, position: int, size: int, special_tokens: Sequence[str]) -> int | None:
    """Where validation text starts, at or after `position`: the next special token (a document boundary),
    else the next line start, looking at most a quarter of what is left (and a MiB) ahead; else the next
    cut the chunker would take (between words); else a character boundary. The two splits are encoded
    apart, so the cut need not keep pre-tokens whole -- only special tokens."""
    start = max(position, 1)
    specials = [t.encode("utf-8") for t in special_tokens]
    with open(path, "rb") as fh:
        fh.seek(start)
        ahead = fh.read(min(_VAL_CUT_LOOK, max(1, (size - start) // 4)))
        found = [i for i in (ahead.find(s) for s in specials) if i >= 0]
        line = ahead.find(b"\n")
        cut = start + min(found) if found else (start + line + 1 if line >= 0 else None)
        if cut is not None and (cut >= size or _inside_special(fh, cut, specials)):
            cut = None
        if cut is None:
            cut = next_safe_cut(fh, start, size, specials)
        if cut is None:  # no clean boundary: the next UTF-8 character start will do for a validation split
            fh.seek(max(position, 1))
            tail = fh.read(4)
            step = next((i for i, b in enumerate(tail) if b & 0xC0 != 0x80), None)
            cut = None if step is None else max(position, 1) + step
    return cut if cut is not None and 0 < cut < size else None


def _inside_special(fh: BinaryIO, cut: int, specials: Sequence[bytes]) -> bool:
    """Whether an occurrence of a special token straddles byte `cut` of the open file."""
    longest = max((len(s) for s in specials), default=0)
    if longest < 2:
        return False
    fh.seek(max(0, cut - longest + 1))
    around = fh.read(2 * longest - 1)
    offset = cut - max(0, cut - longest + 1)
    return any(
        0 < offset - begin < len(s) for s in specials for begin in range(len(around)) if around.startswith(s, begin)
    )


def _tokenizer_plan(
    choice: str, vocab_size: int | None, special_tokens: Sequence[str] | None, gpt2_dir: str | os.PathLike | None
) -> tuple[dict, list[str]]:
    """What `choice` asks for, checked before any work: (meta.json's `tokenizer.source`, its special tokens)."""
    if vocab_size is not None and choice != "bpe":
        raise ConfigError(f"--vocab-size only applies to --tokenizer bpe; {choice!r} has a fixed vocabulary.")
    if choice in TOKENIZER_CHOICES and Path(choice).is_dir():
        logger.warning(
            "--tokenizer %s means the built-in %s tokenizer, not the directory ./%s; to load that saved "
            "tokenizer, pass --tokenizer ./%s.",
            choice,
            choice,
            choice,
            choice,
        )
    if choice == "bpe":
        specials = [END_OF_TEXT] if special_tokens is None else check_special_tokens(special_tokens)
        return {"trained": "bpe", "vocab_size_requested": 10000 if vocab_size is None else vocab_size}, specials
    if choice == "char":
        return {"trained": "char"}, check_special_tokens(special_tokens)
    if choice == "gpt2":
        if special_tokens is not None:
            raise ConfigError("--special-tokens does not apply to --tokenizer gpt2 (its only one is <|endoftext|>).")
        directory = gpt2_dir or os.environ.get("SCRATCHLM_GPT2_DIR")
        if directory is None:
            raise ConfigError(
                "--tokenizer gpt2 needs GPT-2's encoder.json and vocab.bpe: pass --gpt2-dir DIR "
                "(or set SCRATCHLM_GPT2_DIR)."
            )
        return {"gpt2_files": os.fspath(Path(directory).resolve())}, [END_OF_TEXT]
    path = Path(choice)
    if not path.is_dir():
        raise ConfigError(
            f"--tokenizer must be one of {', '.join(TOKENIZER_CHOICES)} or a saved tokenizer directory; "
            f"{choice!r} is neither."
        )
    from scratchlm.tokenizers.tokenizer import read_tokenizer_meta

    saved = read_tokenizer_meta(path).get("special_tokens", [])
    if special_tokens is not None and check_special_tokens(special_tokens) != saved:
        raise ConfigError(f"the saved tokenizer has special tokens {saved}; drop --special-tokens or retrain it.")
    return {"loaded": os.fspath(path.resolve())}, saved


def _rerun_source(out_dir: Path, planned: dict) -> dict:
    """The tokenizer source to record: the planned one, except for a corpus re-encoded with its own saved
    tokenizer (`--tokenizer OUT/tokenizer --out OUT`) and otherwise the same recipe, which is a re-run and
    keeps the source meta.json gives (how that tokenizer was made), rather than naming the very directory
    it is about to replace."""
    loaded = planned["tokenizer"].get("loaded")
    if loaded is None or Path(loaded) != (out_dir / "tokenizer").resolve():
        return planned["tokenizer"]
    existing = _existing_recipe(out_dir)
    if existing is not None and existing == {**planned, "tokenizer": existing["tokenizer"]}:
        return existing["tokenizer"]
    return planned["tokenizer"]


def _make_tokenizer(
    source: dict,
    specials: list[str],
    train_sources: list[TextSource],
    val_sources: list[TextSource],
    num_workers: int | None,
    progress: bool | None,
) -> TextTokenizer:
    """Train or load the tokenizer `_tokenizer_plan` described."""
    from scratchlm.tokenizers.bpe import train_bpe
    from scratchlm.tokenizers.char import CharTokenizer
    from scratchlm.tokenizers.tokenizer import Tokenizer

    if source.get("trained") == "bpe":
        size = source["vocab_size_requested"]
        vocab, merges = train_bpe(train_sources, size, specials, num_workers=num_workers, progress=progress)
        return Tokenizer(vocab, merges, specials)
    if source.get("trained") == "char":
        return CharTokenizer.train([*train_sources, *val_sources], specials)
    if "gpt2_files" in source:
        directory = Path(source["gpt2_files"])
        return Tokenizer.from_gpt2_files(directory / "encoder.json", directory / "vocab.bpe")
    return load_tokenizer(source["loaded"])


# ---- an existing output directory ---------------------------------------------------------------------------
_OUTPUT_NAMES = ("meta.json", "train.bin", "val.bin", "tokenizer")


def _recipe(sources: list[str], val_split: dict, tokenizer_source: dict, special_tokens: list[str]) -> dict:
    """What makes two corpora the same: inputs, validation split, tokenizer (the byte offset and timings
    follow from these)."""
    if val_split.get("kind") == "fraction":
        val = ("fraction", val_split.get("fraction"))
    else:
        val = ("files", len(val_split.get("paths") or ()))
    return {"sources": sources, "val": val, "tokenizer": tokenizer_source, "special_tokens": special_tokens}


def _recipe_of(meta: object) -> dict | None:
    """The recipe of an existing meta.json, or None when it is not a corpus description."""
    try:
        return _recipe(
            [entry["path"] for entry in meta["sources"]],
            meta["val_split"],
            meta["tokenizer"]["source"],
            meta["tokenizer"]["special_tokens"],
        )
    except (KeyError, TypeError, AttributeError):
        return None


def _existing_recipe(out_dir: Path) -> dict | None:
    """The recipe of the corpus in `out_dir`, or None when there is none we can read."""
    if not (out_dir / "meta.json").is_file():  # not a FIFO or device, which could block the read
        return None
    with contextlib.suppress(OSError, ValueError, RecursionError):  # unreadable: not a corpus we know
        return _recipe_of(json.loads((out_dir / "meta.json").read_text(encoding="utf-8")))
    return None


def _check_out_dir(out_dir: Path, planned: dict, overwrite: bool) -> None:
    """Refuse, before any work, to replace what `out_dir` holds unless it is this same corpus (a re-run,
    which rewrites the same files) or `overwrite` is set: token files of another corpus may be what a
    run trains on, and a directory of other files is not ours to rewrite."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give the path of a directory for the corpus.")
    present = [name for name in _OUTPUT_NAMES if (out_dir / name).exists()] if out_dir.is_dir() else []
    if overwrite or not present:
        return
    existing = _existing_recipe(out_dir)
    if existing is None:
        raise DataError(
            f"{out_dir} already holds {', '.join(present)} but no corpus meta.json; choose another --out, or "
            "pass --overwrite to replace them."
        )
    if existing != planned:
        names = ", ".join(os.path.basename(str(path)) for path in existing["sources"])
        differ = [_RECIPE_WORDS[key] for key in _RECIPE_WORDS if existing.get(key) != planned.get(key)]
        raise DataError(
            f"{out_dir} already holds another corpus ({_tokenizer_words(existing['tokenizer'])} on {names}; "
            f"this command differs in its {' and '.join(differ)}); choose another --out, or pass --overwrite to "
            "replace it."
        )


# How a message names each part of `_recipe` that differs.
_RECIPE_WORDS = {
    "sources": "input files (or their order)",
    "val": "validation split",
    "tokenizer": "tokenizer",
    "special_tokens": "special tokens",
}


def _tokenizer_words(source: object) -> str:
    """meta.json's `tokenizer.source` in words, for messages."""
    source = source if isinstance(source, dict) else {}
    if source.get("trained") == "bpe":
        return f"a {source.get('vocab_size_requested')}-token BPE"
    if source.get("trained") == "char":
        return "a char tokenizer"
    if "gpt2_files" in source:
        return "GPT-2's tokenizer"
    return f"the tokenizer from {source.get('loaded', 'elsewhere')}"


def _unique_paths(sources: Sequence[TextSource]) -> list[str]:
    return list(dict.fromkeys(s.path for s in sources))


def _describe(path: str) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"path": os.path.abspath(path), "bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def _publish(staging: Path, out_dir: Path, names: Sequence[str], last: str) -> None:
    """Move finished outputs from `staging` into `out_dir`; the stale `last` file goes first, the new last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / last).unlink(missing_ok=True)
    for name in names:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    os.replace(staging / last, out_dir / last)
