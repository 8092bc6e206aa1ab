"""Ready-made ablation studies, shipped as data: one TOML file per study beside this module.

A study names a preset, optional `set` overrides applied to every run, the seeds, and its variants: either
a `[grid]` of config keys to values (every combination is a variant) or explicit `[[variants]]` tables
(config keys to values, plus an optional `name`), for studies whose combinations are not a product (e.g.
"no norm" has no pre/post position). `scratchlm ablate --study NAME` runs one.
"""

from __future__ import annotations

import sys
from importlib import resources
from typing import Any

from scratchlm.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib


def list_studies() -> list[str]:
    """Names of the studies shipped in the package."""
    files = resources.files("scratchlm.studies").iterdir()
    return sorted(p.name.removesuffix(".toml") for p in files if p.name.endswith(".toml"))


def load_study_tables(name: str) -> dict[str, Any]:
    """The raw tables of study `name`."""
    path = resources.files("scratchlm.studies") / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown study {name!r}; available studies: {', '.join(list_studies())}.")
    return tomllib.loads(path.read_text(encoding="utf-8"))
