"""Ready-made ablation studies, shipped as data: one TOML file per study beside this module.

A study names a preset, optional `set` overrides applied to every run, the seeds, and its variants: either
a `[grid]` of config keys to values (every combination is a variant) or explicit `[[variants]]` tables
(config keys to values, plus an optional `name`), for studies whose combinations are not a product (e.g.
"no norm" has no pre/post position). `scratchlm ablate --study NAME` runs one.
"""

from __future__ import annotations

from typing import Any

from scratchlm.presets import list_packaged, load_packaged


def list_studies() -> list[str]:
    """Names of the studies shipped in the package."""
    return list_packaged("scratchlm.studies")


def load_study_tables(name: str) -> dict[str, Any]:
    """The raw tables of study `name`."""
    return load_packaged("scratchlm.studies", name, ("study", "studies"))
