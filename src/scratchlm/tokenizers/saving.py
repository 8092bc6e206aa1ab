"""Saving a tokenizer directory so that it always describes one tokenizer, even over an older one.

`tokenizer.json` names the tokenizer's kind and its other files. Saving into a directory that holds an
earlier tokenizer (the same command run again with another `--kind` or vocabulary, as one does with Hugging
Face's `save_pretrained` or nanoGPT's `prepare.py`) replaces that tokenizer: every new file is first written
in full beside its target (`atomic_write`, fsynced), and only once all of them are on disk are they renamed
into place, `tokenizer.json` last; the earlier tokenizer's files that the new one does not use (a BPE's
`vocab.json` and `merges.txt` under a char tokenizer) are then removed. A failure while writing (disk
full, permission denied) leaves the earlier tokenizer as it was. Only files the earlier `tokenizer.json`
names, and that scratchlm itself writes, are ever removed: anything else in the directory stays.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Mapping
from pathlib import Path

from scratchlm.errors import WriteError
from scratchlm.fileio import atomic_write, describe_os_error, refuse_special_file

logger = logging.getLogger(__name__)

META_NAME = "tokenizer.json"
# The files a tokenizer.json may name that scratchlm writes, under the keys that name them: the only ones
# a later save may take for the earlier tokenizer's own.
_OWN_FILE_KEYS = {"vocab": "vocab.json", "merges": "merges.txt"}
STALE_TEMP_AGE_S = 600.0  # no tokenizer file takes this long to write


def write_tokenizer_files(directory: str | os.PathLike, texts: Mapping[str, str]) -> Path:
    """Write `texts` ({file name: UTF-8 text}, `tokenizer.json` among them) as the tokenizer in `directory`.

    Raises WriteError (or DataError for a target that is a directory, device or pipe) with the earlier
    tokenizer, if any, left intact.
    """
    directory = Path(directory)
    if META_NAME not in texts:
        raise ValueError(f"a tokenizer directory needs {META_NAME}; got only {sorted(texts)}.")
    names = [name for name in texts if name != META_NAME] + [META_NAME]  # tokenizer.json commits the rest
    targets = {name: Path(os.path.realpath(directory / name)) for name in names}
    for name in names:
        # atomic_write would refuse these too, but only after the staging, whose rename is done here.
        refuse_special_file(targets[name], "output")
    earlier = _earlier_files(directory)
    created = not directory.exists()
    staged: dict[str, Path] = {}
    try:
        for name in names:
            target = targets[name]
            # The name of a temporary from atomic_write, so `remove_stale_temp_files` knows it too.
            staged[name] = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
            with atomic_write(staged[name], "w", encoding="utf-8") as fh:
                fh.write(texts[name])
        for name in names:
            try:
                os.replace(staged[name], targets[name])
            except OSError as exc:
                raise WriteError(describe_os_error(exc, targets[name]), exc.errno, os.fspath(targets[name])) from exc
            del staged[name]
    except BaseException:
        for path in staged.values():
            with contextlib.suppress(OSError):
                path.unlink()
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only when nothing else has been put there
        raise
    for name in sorted(earlier - set(texts)):
        try:
            (directory / name).unlink(missing_ok=True)
        except OSError as exc:
            # The new tokenizer is complete and loads as it should; the stray file only misleads other tools.
            logger.warning("%s", describe_os_error(exc, directory / name, action="remove", note="it is unused"))
    _remove_stale_temporaries(directory, set(texts) | earlier)
    return directory


def _earlier_files(directory: Path) -> set[str]:
    """The files of the tokenizer saved in `directory`: tokenizer.json and those of scratchlm's own files
    that it names (none when it cannot be read: then nothing but tokenizer.json is known to be its)."""
    own = {META_NAME}
    path = directory / META_NAME
    try:
        refuse_special_file(path, "tokenizer file")
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # DataError is a ValueError
        return own
    if isinstance(meta, dict):
        own.update(name for key, name in _OWN_FILE_KEYS.items() if meta.get(key) == name)
    return own


def _remove_stale_temporaries(directory: Path, names: set[str]) -> None:
    """Remove what a save killed midway (SIGKILL, power loss) left of these files: hidden temporaries that
    no reader ever opens, but that would pile up with every interrupted save. Recent ones are left alone:
    they may be another save's, still being written."""
    pattern = re.compile(
        r"^\.{1,2}(?:" + "|".join(re.escape(name) for name in sorted(names)) + r")(?:\.[a-z0-9_]{8}\.tmp){1,2}$"
    )
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            if not pattern.match(entry.name):
                continue
            with contextlib.suppress(OSError):
                info = entry.lstat()
                if stat.S_ISREG(info.st_mode) and now - info.st_mtime > STALE_TEMP_AGE_S:
                    entry.unlink()
