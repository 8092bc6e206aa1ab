"""A run's report in three formats from one document: Markdown (`report.md`), the Scratch-1 course's MDX
submission page (`submission/<student>.mdx` with its figures in `submission/images/`), and one
self-contained HTML page (`report.html`, figures embedded as data URIs, opens offline).

Sections follow the course's template: the numbers, Loss Curve, Attention Visualization, The Audit
(from `scratchlm audit causal-mask`'s output when `audit_dir` is given) and Code Highlights. Every
sentence is written from what the run directory holds (config.toml, metrics.jsonl, summary.json,
checkpoints/), so a report can be rebuilt at any time with `scratchlm report RUN_DIR`.

Trajectory runs are Scratch-1 submissions. Text runs are the Phase II capstone's mini-LM: their MDX page
is titled "Mini-LM Capstone: <student>", and every format gets a Samples section (continuations drawn
from the best checkpoint with a fixed seed, decoded by the run's tokenizer), an audit hint on the run's
own recipe and the commands for the capstone's ablation and scaling analysis.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import math
import os
import re
import shutil
import statistics
import sys
import textwrap
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from scratchlm.analysis.accounting import param_counts
from scratchlm.analysis.attention import describe_attention
from scratchlm.analysis.attention_runs import AttentionFigures, run_attention_figures
from scratchlm.analysis.document import (
    Block,
    Bullets,
    Code,
    Document,
    Figure,
    Heading,
    Paragraph,
    Table,
    format_seconds,
    to_html,
    to_markdown,
)
from scratchlm.analysis.plots import plot_loss_curves, plot_training_curves
from scratchlm.analysis.report_commands import audit_hint, next_steps
from scratchlm.analysis.report_samples import TextSamples, samples_blocks, text_samples
from scratchlm.config import RunConfig
from scratchlm.errors import ConfigError, DataError
from scratchlm.fileio import atomic_write
from scratchlm.infer.runs import load_run
from scratchlm.train.tracking import read_metrics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FORMATS = ("md", "mdx", "html")
# The MDX page's image names, as the course template links them.
MDX_IMAGE_NAMES = {"loss_curve": "loss_curve.png", "attention_grid": "attention_maps.png"}
DEFAULT_STUDENT = "scratchlm"


@dataclass
class RunFacts:
    run_dir: Path
    config: RunConfig
    summary: dict[str, Any]
    rows: list[dict[str, Any]]

    # Why the run is not a finished one (interrupted, cut short, diverged), said at the top of the page; None
    # when it ran its whole budget.
    status: str | None = None

    @property
    def text(self) -> bool:
        return self.config.data.kind != "trajectories"


def write_report(
    run_dir: str | Path,
    *,
    format: str = "md",
    attention_sample: int = 0,
    audit_dir: str | Path | None = None,
    student: str | None = None,
    date: str | None = None,
) -> Path:
    """Make the figures and the report of `run_dir` in `format` (md, mdx or html); return the page written."""
    if format not in FORMATS:
        raise ConfigError(f"unknown report format {format!r}; use one of {', '.join(FORMATS)}.")
    student, date = check_student(student), check_date(date)
    facts = read_run(run_dir)
    audit = None
    if audit_dir is not None:
        from scratchlm.analysis.audit import read_audit

        audit = read_audit(audit_dir)
    # The checkpoint is read (and refused if bad) before any figure is written, so a failed report changes nothing.
    loaded = load_run(facts.run_dir)  # once, for the attention maps and the samples
    attention: AttentionFigures | str
    try:
        attention = run_attention_figures(facts.run_dir, sample=attention_sample, loaded=loaded)
    except DataError as exc:
        if not facts.text:  # a Scratch-1 page needs its attention maps
            raise
        # A text run copied without its data directory: the checkpoint has loaded, the page says what is missing.
        attention = f"No attention maps: {str(exc).rstrip('.')}."
    floor = facts.summary.get("data", {}).get("loss_floor")
    plots = facts.run_dir / "plots"
    figures = {
        "loss_curve": plot_loss_curves([facts.run_dir], plots / "loss_curve.png", floor=floor, svg=False),
        "curves": plot_training_curves(
            [facts.run_dir], plots / "curves_step", floor=floor, title=facts.run_dir.name, svg=False
        )[0],
    }
    if not isinstance(attention, str):
        figures.update(attention_grid=attention.grid, attention_means=attention.means)
    samples = text_samples(facts.run_dir, loaded=loaded) if facts.text else None
    mdx = format == "mdx"
    doc = report_document(
        facts,
        figures,
        attention,
        audit,
        Path(audit_dir) if audit_dir else None,
        course_page=mdx,
        samples=samples,
        student=student,
    )
    if format == "md":
        return _write(facts.run_dir / "report.md", to_markdown(doc, facts.run_dir))
    if format == "html":
        return _write(facts.run_dir / "report.html", to_html(doc))
    page = "Mini-LM Capstone" if facts.text else "Scratch-1 Submission"
    doc.front_matter = {
        "title": f"{page}: {student}",
        "student": student,
        "date": date,
    }
    folder = facts.run_dir / "submission"
    doc.blocks = _copy_figures(doc.blocks, figures, folder / "images")
    return _write(folder / f"{_slug(student)}.mdx", to_markdown(doc, folder, mdx=True))


def read_run(run_dir: str | Path) -> RunFacts:
    """config.toml, summary.json and metrics.jsonl of a run, with clear errors when they are missing or bad.

    A run without summary.json (stopped by Ctrl-C or a kill, or by NaN/Inf) is reported from its metrics and
    checkpoints, with a status sentence saying so; one that never wrote a checkpoint has no model to show."""
    run_dir = Path(run_dir)
    config_path, summary_path = run_dir / "config.toml", run_dir / "summary.json"
    if not run_dir.is_dir():
        raise DataError(f"{run_dir} does not exist; give the directory of a trained run (runs/NAME).")
    if not config_path.is_file():
        raise DataError(
            f"{run_dir} is not a finished run (no config.toml); give the directory `scratchlm train --out` wrote."
        )
    try:
        config = RunConfig.from_tables(tomllib.loads(config_path.read_text(encoding="utf-8")))
        summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else None
    except (ValueError, RecursionError) as exc:  # TOML/JSON/UTF-8 decoding errors are ValueErrors
        raise DataError(f"{run_dir}: config.toml or summary.json is damaged ({exc}); train the run again.") from None
    if summary is not None and not isinstance(summary, dict):
        raise DataError(f"{summary_path} is not a JSON object; train the run again.")
    rows = read_metrics(run_dir / "metrics.jsonl")
    if summary is None:
        summary, status = _unfinished_summary(run_dir, config, rows)
    else:
        status = _cut_short(run_dir, summary)
    return RunFacts(run_dir, config, summary, rows, status)


def _cut_short(run_dir: Path, summary: dict[str, Any]) -> str | None:
    """The status of a run that wrote summary.json but did not run its budget (--stop-after, a sweep's stop)."""
    stopped = summary.get("stopped")
    if stopped:
        return f"This run was stopped as diverged ({stopped}) at step {summary.get('steps')}."
    steps, total = summary.get("steps"), summary.get("total_steps")
    if isinstance(steps, int) and isinstance(total, int) and steps < total:
        return (
            f"This run stopped at step {steps} of {total} (`--stop-after`); `scratchlm train --resume {run_dir}` "
            "continues it, and these numbers are those of the steps run so far."
        )
    return None


def _unfinished_summary(run_dir: Path, config: RunConfig, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """What summary.json would hold, read back from metrics.jsonl (and outcome.json), for a run that ended
    without one; and the sentence that says how it ended."""
    from scratchlm.analysis.study_runs import read_outcome

    outcome = read_outcome(run_dir)
    record = outcome.summary if outcome is not None else {}
    last = rows[-1] if rows else {}
    step = last.get("step", 0)  # the step of the numbers below (a NaN/Inf step after it logged nothing)
    if outcome is not None:
        how = f"diverged ({outcome.reason or 'non-finite loss'})"
        then = (
            "Lower `optim.lr` or raise `optim.warmup_steps` in a new run (`--out`); the figures below come from its "
            "last good checkpoint."
        )
    else:
        how = f"stopped at step {step} (interrupted, or still training)"
        then = f"`scratchlm train --resume {run_dir}` continues it; these numbers are those of the steps run so far."
    if not any((run_dir / "checkpoints" / name).is_file() for name in ("best.pt", "last.pt")):
        raise DataError(
            f"{run_dir} {how} before its first checkpoint, so there is no model to report on; "
            + ("train it again with a lower optim.lr (--out NEW)." if outcome is not None
               else f"`scratchlm train --resume {run_dir}` starts it again.")
        )  # fmt: skip
    evals = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    summary: dict[str, Any] = {
        "steps": step,
        "total_steps": record.get("total_steps"),
        "tokens": last.get("tokens", 0),
        "elapsed_s": last.get("elapsed_s", 0.0),
        "best_val_loss": min(evals) if evals else None,
        "data": _data_facts(config),
    }
    return summary, f"**This run did not finish**: it {how}. {then}"


def _data_facts(config: RunConfig) -> dict[str, Any]:
    """The data section summary.json records (split sizes, loss floor), rebuilt from the run's data; empty when
    the data cannot be read (the page then leaves out what depends on it)."""
    from scratchlm.train.datasets import build_training_data
    from scratchlm.train.distributed import DistInfo

    try:
        return dict(build_training_data(config, torch.device("cpu"), DistInfo()).info)
    except DataError:
        return {}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def check_student(student: str | None) -> str:
    """The student's name for the MDX front matter (DEFAULT_STUDENT when not given), or a ConfigError."""
    if student is None:
        return DEFAULT_STUDENT
    name = student.strip()
    if not name:
        raise ConfigError(
            f'--student is empty; give your name (e.g. --student "Ada Lovelace") or leave --student out for '
            f'"{DEFAULT_STUDENT}".'
        )
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in name):
        raise ConfigError(f"--student {student!r} holds a line break or control character; give your name on one line.")
    return name


def check_date(date: str | None) -> str:
    """The MDX front matter's date: today when not given, else a real calendar date written YYYY-MM-DD."""
    if date is None:
        return datetime.date.today().isoformat()
    text = date.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return datetime.date.fromisoformat(text).isoformat()
        except ValueError:  # e.g. 2026-02-30
            pass
    raise ConfigError(f"--date {date!r} is not a date; write it as YYYY-MM-DD (e.g. 2026-01-27) or leave it out.")


def _slug(text: str, limit: int = 64) -> str:
    """A file name for `text`: lowercase ASCII words joined by "-" (accents dropped); a name without any ASCII
    letter or digit (another script, only symbols) becomes "student-" and a short hash of it, so it is stable."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")[:limit].rstrip("-")
    return slug or f"student-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}"


def _copy_figures(blocks: list[Block], figures: dict[str, Path], images: Path) -> list[Block]:
    """The blocks with every figure copied next to the page (under the course template's names)."""
    names = {figures[key].resolve(): name for key, name in MDX_IMAGE_NAMES.items() if key in figures}
    images.mkdir(parents=True, exist_ok=True)
    copied: list[Block] = []
    for block in blocks:
        if isinstance(block, Figure):
            target = images / names.get(block.path.resolve(), block.path.name)
            shutil.copyfile(block.path, target)
            block = replace(block, path=target)
        copied.append(block)
    return copied


# ------------------------------------------------------------------------------------------- content


def _audit_provenance(facts: RunFacts, audit_dir: Path) -> list[Block]:
    """A note when the attached audit trained another recipe than this run's, so its numbers are not read as
    this run's (an audit trains its own pair of runs)."""
    from scratchlm.presets import load_toml_file

    saved = audit_dir / "masked" / "config.toml"
    if not saved.is_file():
        return []
    audited = load_toml_file(str(saved))
    ours = facts.config.to_tables()
    differs = sorted(
        f"{section}.{key}"
        for section in ("model", "optim", "train", "data")
        for key, value in audited.get(section, {}).items()
        if key not in ("causal", "seed") and not _same_setting(key, ours.get(section, {}).get(key), value)
    )
    if not differs:
        return []
    shown = ", ".join(f"`{name}`" for name in differs[:6]) + (" ..." if len(differs) > 6 else "")
    return [
        Paragraph(
            f"The audit below trained its own pair of runs (`{audit_dir}`), with another recipe than this run's "
            f'({shown} differ), so its "with the causal mask" numbers are that model\'s, not the ones above. To '
            f"audit this run's recipe: `scratchlm audit causal-mask --config {facts.run_dir}/config.toml --out "
            f"{facts.run_dir}-audit`."
        )
    ]


def _same_setting(key: str, ours: Any, theirs: Any) -> bool:
    """Equal values; for data.path, the same file however each run spelled its path."""
    if ours == theirs:
        return True
    if key == "path" and isinstance(ours, str) and isinstance(theirs, str):
        try:
            return os.path.samefile(ours, theirs)
        except OSError:
            return False
    return False


def report_document(
    facts: RunFacts,
    figures: dict[str, Path],
    attention: AttentionFigures | str,
    audit: dict[str, Any] | None,
    audit_dir: Path | None,
    *,
    course_page: bool = False,
    samples: TextSamples | str | None = None,
    student: str = DEFAULT_STUDENT,
) -> Document:
    """The report's blocks: summary and numbers, then the course template's sections. `samples` (text runs):
    what `text_samples` returned, or the sentence saying why there are none; None leaves the section out.
    `student` names a capstone page, whose heading repeats its front matter's title (Scratch-1 pages keep
    the course template's heading)."""
    name = facts.run_dir.name
    trajectories = not facts.text
    if course_page:
        title = "Scratch-1: The Transformer Backbone" if trajectories else f"Mini-LM Capstone: {student}"
    else:
        title = f"Run `{name}`"
    blocks: list[Block] = [*_summary_blocks(facts)]
    blocks += [Heading(2, "Loss Curve"), Figure(figures["loss_curve"], "Training Loss"), Paragraph(_convergence(facts))]
    blocks.append(
        Figure(figures["curves"], "Training curves", "Loss, perplexity, learning rate and gradient norm against steps.")
    )
    data = facts.summary.get("data", {})
    floor = data.get("loss_floor")
    if floor is not None:
        # The oracle's figure holds for a model of the actions alone; the unified layout shows it the state.
        actions_only = (data.get("layout") or {}).get("kind", "actions") == "actions"
        blocks.append(
            Paragraph(
                "The course's v2 actions carry uniform noise over 5 neighbouring bins, so no model can go below "
                f"ln 5 = {floor:.3f} nats/token: exact accuracy is capped near 20%, while within ±2 bins measures "
                "whether the model found the underlying octant and distance bin."
                + (
                    " The floor is a lower bound, not the attainable loss: the arm's joint noise, which no action "
                    "token shows, makes the clean bin uncertain too, and even an oracle that sees the arm's "
                    "previous state and its target pays about 1.656 (estimated by benchmarks/trajectory_floor.py)."
                    if actions_only
                    else ""
                )
            )
        )
    if samples is not None:
        blocks += samples_blocks(samples)
    blocks += [Heading(2, "Attention Visualization"), *_attention_blocks(facts, attention)]
    blocks.append(Heading(2, "The Audit: Removing the Causal Mask"))
    if audit is not None and audit_dir is not None:
        from scratchlm.analysis.audit import audit_blocks

        blocks += _audit_provenance(facts, audit_dir)
        blocks += audit_blocks(audit, audit_dir)
    else:
        blocks.append(Paragraph(audit_hint(facts.run_dir, facts.config)))
    if not trajectories:
        blocks += [Heading(2, "Next Steps"), Paragraph(next_steps(facts.run_dir, facts.config))]
    blocks += [Heading(2, "Code Highlights"), *_code_highlights()]
    return Document(title, blocks)


def _attention_blocks(facts: RunFacts, attention: AttentionFigures | str) -> list[Block]:
    if isinstance(attention, str):
        return [Paragraph(attention)]
    what = attention.what
    return [
        Figure(
            attention.grid,
            "Attention Maps",
            f"Every layer (rows) and head (columns) on {what}, with the "
            "head average in the last column; labels are the input tokens. Weight above the diagonal would be "
            "attention to the future."
            if facts.config.model.causal
            else f"Every layer and head on {what}.",
        ),
        Figure(attention.means, "Head-averaged attention per layer"),
        Paragraph("What the maps show, measured on this sequence:"),
        Bullets(describe_attention(attention.maps_LHTT)),
    ]


def _summary_blocks(facts: RunFacts) -> list[Block]:
    config, summary, rows = facts.config, facts.summary, facts.rows
    m = config.model
    counts = param_counts(m)
    evals = [r for r in rows if r.get("val_loss") is not None]
    final = evals[-1] if evals else {}
    speeds = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    data = summary.get("data", {})
    floor = data.get("loss_floor")
    split = (
        f" ({data['train_trajectories']} train / {data['val_trajectories']} validation trajectories, "
        f"{data.get('version') or 'unknown-version'} actions, {config.data.layout} layout)."
        if "train_trajectories" in data
        else "."
    )
    table: list[list[str]] = []
    if final:
        table.append(
            ["final validation loss", f"{final['val_loss']:.4f} (perplexity {perplexity_text(final['val_loss'])})"]
        )
    best = summary.get("best_val_loss")  # None (JSON null) when no evaluation has run yet
    table.append(["best validation loss", f"{best:.4f}" if best is not None else "none yet (no evaluation ran)"])
    if floor is not None and final:
        table.append(
            ["noise floor (ln 5, v2 actions)", f"{floor:.4f} (a lower bound; {final['val_loss'] - floor:.4f} above it)"]
        )
    if "val_action_acc" in final:
        table.append(["next-action accuracy, exact", f"{final['val_action_acc']:.2%}"])
        table.append(["next-action accuracy, within ±2 bins", f"{final['val_action_within2']:.2%}"])
    if speeds:
        table.append(["training throughput (median of log intervals)", f"{statistics.median(speeds):,.0f} tokens/s"])
    status = [Paragraph(facts.status)] if facts.status else []
    return [
        *status,
        Paragraph(
            f"Model: {m.num_layers} layers, d_model {m.d_model}, {m.num_heads} heads, d_ff {m.d_ff}, {m.positional} "
            f"positions, {m.norm} ({m.norm_position}), {m.ffn}{'' if m.causal else ', **no causal mask**'}; "
            f"{counts.total:,} parameters ({counts.non_embedding:,} non-embedding)."
        ),
        Paragraph(f"Data: {config.data.kind} from `{config.data.path}`{split}"),
        Paragraph(
            f"Training: {summary['steps']} steps, {summary['tokens']:,} tokens, {format_seconds(summary['elapsed_s'])}."
        ),
        Table(["metric", "value"], table),
    ]


def _convergence(facts: RunFacts) -> str:
    rows, summary = facts.rows, facts.summary
    train = [r for r in rows if r.get("train_loss") is not None]
    evals = [r for r in rows if r.get("val_loss") is not None]
    if not train:
        return "The run logged no training rows."
    last = train[-1]
    text = (
        f"The model trained for {summary['steps']} iterations ({_epochs(last.get('epoch', 0))} epochs, "
        f"{summary['tokens']:,} tokens, {format_seconds(summary['elapsed_s'])}); the final training loss is "
        f"{last['train_loss']:.3f} (from {train[0]['train_loss']:.3f} in the first log interval)"
    )
    if evals:
        best = min(evals, key=lambda r: r["val_loss"])
        text += (
            f", the final validation loss {evals[-1]['val_loss']:.3f}, best {best['val_loss']:.3f} at step "
            f"{best['step']}"
        )
        if len(evals) >= 3:
            recent = evals[-3:]
            text += (
                f". Over the last {len(recent)} evaluations (steps {recent[0]['step']}-{recent[-1]['step']}) the "
                f"validation loss moved by {recent[-1]['val_loss'] - recent[0]['val_loss']:+.4f}"
            )
    text += "."
    if last["train_loss"] > train[0]["train_loss"]:
        # A loss that ends above its first log interval has not converged but diverged, whatever the curve's end does.
        text += (
            " The training loss ended above where it started: the run diverged (lower `optim.lr` or raise "
            "`optim.warmup_steps`)."
        )
    return text


def perplexity_text(loss: float) -> str:
    """exp(loss) for a page: three decimals when readable, else three significant digits (a diverged loss of
    hundreds of nats), and a bound where exp overflows. The logged val_ppl is capped, so it is not used."""
    try:
        value = math.exp(loss)
    except OverflowError:
        return f"over {sys.float_info.max:.1e}"
    return f"{value:.3f}" if value < 1e6 else f"{value:.3g}"


def _epochs(epoch: float) -> str:
    """Epochs with a digit that is not zero: a short text run has trained 0.03 epochs, not 0.0."""
    return f"{epoch:.1f}" if epoch >= 1 or epoch == 0 else f"{epoch:.2g}"


def _code_highlights() -> list[Block]:
    from scratchlm.nn.functional import causal_mask, scaled_dot_product_attention
    from scratchlm.nn.layers import RMSNorm
    from scratchlm.nn.positions import RotaryPositionalEmbedding

    return [
        Paragraph(
            "The causal mask is a boolean matrix, True where a query may attend; it is applied to the scores "
            "before the softmax (a masked score gets the dtype's lowest value, so a fully masked row cannot turn "
            "into NaNs, and its output is then zeroed). Queries are aligned bottom-right, so the same mask serves "
            "training and cached decoding."
        ),
        _source(causal_mask),
        _source(scaled_dot_product_attention, lines=("scores_QK =", "return out_QD * mask_QK")),
        Paragraph(
            "RoPE rotates each interleaved pair of query/key features by position x frequency; since rotations "
            "compose, the score of a query at m and a key at n depends on n - m only (derived in `docs/rope.md`)."
        ),
        _source(RotaryPositionalEmbedding.forward),
        Paragraph("RMSNorm in float32 at least, cast back to the input dtype:"),
        _source(RMSNorm.forward),
    ]


def _source(obj: Any, lines: tuple[str, str] | None = None) -> Code:
    """The source of a function (or the stretch from one line prefix to another) with its file."""
    text = textwrap.dedent(inspect.getsource(obj))
    if lines is not None:
        body = text.splitlines()
        start = next(i for i, line in enumerate(body) if line.strip().startswith(lines[0]))
        end = next(i for i, line in enumerate(body) if i >= start and line.strip().startswith(lines[1]))
        text = textwrap.dedent("\n".join(body[start : end + 1]))
    module = Path(inspect.getsourcefile(obj) or "").as_posix()
    where = module[module.rfind("scratchlm/") :] if "scratchlm/" in module else module
    return Code(text, "python", f"{where}: {obj.__qualname__}")
