"""audit.md says how many validation rows its numbers are over, next to the runs' own logged loss, and words
its differences as "0.157 below", never as a signed number followed by "below"."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from scratchlm.analysis.audit import audit_blocks, causal_mask_audit
from scratchlm.analysis.document import Document, to_markdown
from scratchlm.analysis.study_runs import read_outcome
from tests.experiment_helpers import debug_overrides, tiny_trajectories

SIGNED_WORDING = re.compile(r"[+-]\d+\.\d+ (below|above|relative)")


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("audit")
    overrides = [*debug_overrides(tiny_trajectories(root), 10), "train.eval_interval=10"]
    return root / "audit", causal_mask_audit("debug", root / "audit", overrides, eval_rows=8)


def page(record: dict[str, Any], out_dir: Path) -> str:
    return to_markdown(Document("audit", audit_blocks(record, out_dir)), out_dir)


def test_the_page_says_how_many_rows_each_validation_loss_is_over(audit: tuple[Path, dict[str, Any]]) -> None:
    out_dir, record = audit
    assert record["val_rows"] == 24 and record["val_unit"] == "trajectories"  # tiny_trajectories: 24 validation
    text = (out_dir / "audit.md").read_text()
    assert "validation loss, teacher-forced (8 of 24 trajectories)" in text
    assert "validation loss, causal (prefix only) (8 of 24 trajectories)" in text
    logged = read_outcome(out_dir / "masked").final_val_loss
    assert record["runs"]["masked"]["logged_val_loss"] == logged
    assert f"| validation loss logged by the run (summary.json, 24 trajectories) | {logged:.4f} |" in text
    assert "over the first 8 of the 24 validation trajectories (`--eval-rows 8`;" in text
    assert f"is over the 24, so it differs: {logged:.4f} for the masked model" in text
    assert "on the 8 audited trajectories" in text
    assert json.loads((out_dir / "audit.json").read_text())["val_rows"] == 24


def test_an_audit_of_every_row_says_it_matches_the_runs(audit: tuple[Path, dict[str, Any]]) -> None:
    out_dir, record = audit
    whole = copy.deepcopy(record)
    for run in whole["runs"].values():
        run["teacher_forced"]["rows"] = run["causal"]["rows"] = 24
    text = page(whole, out_dir)
    assert (
        "teacher-forced (24 trajectories)" in text
        and "on the same 24 validation trajectories as each run's own" in text
    )
    assert "audited" not in text


def test_differences_are_worded_not_signed(audit: tuple[Path, dict[str, Any]]) -> None:
    out_dir, record = audit
    assert not SIGNED_WORDING.search((out_dir / "audit.md").read_text())
    edited = copy.deepcopy(record)  # the branches the tiny run does not reach: above the floor, below uniform
    masked, unmasked = edited["runs"]["masked"], edited["runs"]["unmasked"]
    masked["teacher_forced"]["loss"], masked["causal"]["loss"] = 2.745, 2.745
    unmasked["teacher_forced"]["loss"], unmasked["causal"]["loss"] = 2.588, 3.1
    edited["loss_floor"], edited["uniform_loss"] = 1.609, 5.0
    text = page(edited, out_dir)
    assert "0.979 above the ln 5 = 1.609 floor and 0.157 below the masked model's 2.745" in text
    assert "against 2.745 for the masked one, 0.355 above it." in text
    assert not SIGNED_WORDING.search(text)


def test_an_audit_json_from_before_the_counts_still_renders(audit: tuple[Path, dict[str, Any]]) -> None:
    out_dir, record = audit
    old = copy.deepcopy(record)
    for key in ("val_rows", "val_unit"):
        del old[key]
    for run in old["runs"].values():
        del run["logged_val_loss"]
    text = page(old, out_dir)
    assert "validation loss, teacher-forced |" in text and "logged by the run" not in text


def test_the_audit_text_follows_its_numbers_when_the_unmasked_model_has_not_cheated_yet() -> None:
    from scratchlm.analysis.audit import _against_floor, _attention_text, _generation_text

    # A short run: the unmasked model is no worse causally and its attention is near uniform.
    assert "does badly" not in _generation_text(4.242, 4.438)
    assert "0.196 below the masked model (4.438): it has not learned to copy yet" in _generation_text(4.242, 4.438)
    assert "does badly: 2.900 nats/token, where the masked model" in _generation_text(2.9, 2.3)
    flat = {"mean": 0.02, "head": 0, "layer": 0, "max_head": 0.03, "uniform_share": 0.02}
    assert _attention_text(flat).startswith("The attention does not show it yet")
    assert _attention_text({**flat, "max_head": 0.6}).startswith("The attention shows it")
    # The floor sentence is about the validation loss it names, not the training loss before it.
    assert _against_floor(1.588, 1.609, 2.2).startswith(": that validation loss is below the ln 5 = 1.609 floor")
    assert _against_floor(2.5, None, 2.2) == ": that validation loss is 0.300 above the masked model's 2.200."


def test_the_copy_is_claimed_early_only_without_a_floor(audit: tuple[Path, dict[str, Any]]) -> None:
    out_dir, record = audit
    edited = copy.deepcopy(record)
    edited["loss_floor"] = None
    masked_val = edited["runs"]["masked"]["teacher_forced"]["loss"]
    unmasked = edited["runs"]["unmasked"]
    unmasked["steps"] = 60
    # Below the masked validation loss only at step 50 of 60: what honest learning also does, so no evidence.
    unmasked["train_curve"] = [[10, masked_val + 1.0], [50, masked_val - 0.01], [60, masked_val - 0.02]]
    late = page(edited, out_dir)
    assert "only at step 50 of 60, as late as honest learning would" in late
    assert "was already below the masked validation loss" not in late
    unmasked["train_curve"] = [[10, masked_val - 0.5], [60, masked_val - 1.0]]  # at step 10 of 60: early
    assert "was already below the masked validation loss at step 10 of 60" in page(edited, out_dir)


def test_below_the_floor_late_in_the_run_is_the_copy_but_not_sooner(audit: tuple[Path, dict[str, Any]]) -> None:
    out_dir, record = audit
    edited = copy.deepcopy(record)
    edited["loss_floor"] = floor = 1.609
    unmasked = edited["runs"]["unmasked"]
    unmasked["steps"] = 150
    unmasked["train_curve"] = [[50, floor + 0.5], [150, floor - 0.1]]
    late = page(edited, out_dir)
    assert "went below the floor, where no model of the arm's motion can go, only at step 150 of 150" in late
    assert "already below the floor" not in late
    unmasked["train_curve"] = [[50, floor - 0.1], [150, floor - 0.5]]
    assert "was already below the floor at step 50 of 150" in page(edited, out_dir)
