"""Plots, attention figures, reports (Markdown, MDX, self-contained HTML rendered in headless Chromium)
and the experiment log, on tiny trained runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from scratchlm.analysis.document import Code, Document, Figure, Paragraph, Table, to_html, to_markdown
from scratchlm.analysis.study_runs import run_or_reuse
from scratchlm.cli import main
from scratchlm.presets import resolve_run_config
from tests.experiment_helpers import debug_overrides, tiny_trajectories

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """traj.pkl (tiny trajectories), and in runs/: rope and sinusoidal (finished), cut (stopped midway)."""
    root = tmp_path_factory.mktemp("workspace")
    data = tiny_trajectories(root)
    for name, extra in (("rope", []), ("sinusoidal", ["model.positional=sinusoidal", "train.seed=2"])):
        run_or_reuse(resolve_run_config("debug", None, [*debug_overrides(data, 12), *extra]), root / "runs" / name)
    from scratchlm.train.trainer import train

    train(resolve_run_config("debug", None, debug_overrides(data, 12)), root / "runs" / "cut", stop_after=4)
    return root


@pytest.fixture(scope="module")
def runs(workspace: Path) -> Path:
    return workspace / "runs"


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scratchlm.data.text import prepare_text_corpus

    root = tmp_path_factory.mktemp("text")
    (root / "corpus.txt").write_text("".join(f"line {i}: the quick brown fox.\n" for i in range(300)))
    prepare_text_corpus(root / "corpus.txt", root / "corpus", "char", val_fraction=0.1, progress=False)
    overrides = [
        f"data.path={json.dumps(str(root / 'corpus'))}", 'data.kind="tokens"', "model.context_length=24",
        "train.progress=false", "train.max_steps=6", "train.eval_interval=3", "train.eval_batches=2",
    ]  # fmt: skip
    run_or_reuse(resolve_run_config("debug", None, overrides), root / "run")
    return root / "run"


# ---------------------------------------------------------------------------------------------- plots


def test_plot_writes_png_and_svg_for_each_run_and_the_overlay(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(runs / "rope"), str(runs / "sinusoidal"), "--x", "time", "--log"]) == 0
    written = capsys.readouterr().out.split()
    for run in ("rope", "sinusoidal"):
        assert str(runs / run / "plots" / "curves_time_log.png") in written
        assert str(runs / run / "plots" / "curves_time_log.svg") in written
        overlay = runs / run / "plots" / "compare_time_log_rope_sinusoidal.svg"
        assert overlay.is_file()
        svg = overlay.read_text()
        assert "rope val" in svg and "sinusoidal val" in svg  # the legend names both runs
        assert "learning rate" in svg and "gradient norm" in svg and "perplexity" in svg


def test_plot_refuses_a_directory_without_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(tmp_path)]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ attention


def test_attention_for_a_trajectory_sample_labels_the_action_tokens(runs: Path) -> None:
    from scratchlm.analysis.attention_runs import run_attention_figures, validation_sequence
    from scratchlm.infer.runs import load_run

    figures = run_attention_figures(runs / "rope", sample=2)
    assert figures.grid.name == "attention_val2.png" and figures.means.name == "attention_val2_mean.png"
    assert figures.grid.is_file() and figures.means.is_file()
    ids, labels = validation_sequence(load_run(runs / "rope").config, 2)
    assert labels == [str(i) for i in ids] and figures.labels == labels
    layers, heads, seq, _ = figures.maps_LHTT.shape
    assert (layers, heads, seq) == (2, 4, 19)
    assert float(figures.maps_LHTT.triu(1).abs().max()) == 0.0  # causal: nothing above the diagonal


def test_attention_for_a_text_prompt_labels_the_characters(text_run: Path) -> None:
    from scratchlm.analysis.attention_runs import run_attention_figures

    figures = run_attention_figures(text_run, prompt="the fox")
    assert figures.labels == ["t", "h", "e", "·", "f", "o", "x"]
    assert figures.grid.name == "attention_prompt.png"


def test_unified_sequences_label_state_dimensions_and_actions() -> None:
    import numpy as np

    from scratchlm.analysis.attention_runs import token_labels
    from scratchlm.data.actions import UnifiedLayout, UniformBinner

    layout = UnifiedLayout(UniformBinner(np.zeros(3), np.ones(3), num_bins=4))  # ids: 3 dims x 4 bins, then actions
    config = resolve_run_config("debug", None, ['data.layout="unified"'])
    ids = [1, 6, 11, 12 + 200]
    assert token_labels(ids, config, {"layout": layout.to_dict()}) == ["s0:1", "s1:2", "s2:3", "a200"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prompt", "hello"], "--prompt needs a text run"),
        (["--sample", "500"], "past the end of the validation set (24 sequences)"),
    ],
)
def test_attention_mistakes_are_one_line(
    runs: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["attention", str(runs / "rope"), *argv]) == 2
    assert message in capsys.readouterr().err


# -------------------------------------------------------------------------------------------- reports


def test_markdown_and_mdx_escape_and_link_figures(tmp_path: Path) -> None:
    image = tmp_path / "plots" / "x.png"
    image.parent.mkdir()
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    doc = Document("T", [Paragraph("a {b} <c> `{kept}`"), Table(["h"], [["1"]]), Figure(image, "alt"), Code("x = 1")])
    doc.front_matter = {"title": 'Say "hi"'}
    md = to_markdown(doc, tmp_path)
    assert "a {b} <c>" in md and "![alt](./plots/x.png)" in md and "---" not in md.split("\n")[0]
    mdx = to_markdown(doc, tmp_path, mdx=True)
    assert mdx.startswith('---\ntitle: "Say \\"hi\\""\n---\n')
    assert "a \\{b\\} &lt;c> `{kept}`" in mdx and "```python\nx = 1\n```" in mdx
    html = to_html(doc)
    assert 'src="data:image/png;base64,' in html and "&lt;c&gt;" in html and "<code>{kept}</code>" in html
    # The browser's title shows no Markdown; the page's own heading renders it.
    titled = to_html(Document("Run `demo` **now**", []))
    assert "<title>Run demo now</title>" in titled and "<h1>Run <code>demo</code> <strong>now</strong></h1>" in titled


def test_reports_in_three_formats(runs: Path, tmp_path: Path) -> None:
    run = tmp_path / "rope"
    shutil.copytree(runs / "rope", run)
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "## Loss Curve" in md and "](./plots/loss_curve.png)" in md and "## Code Highlights" in md
    assert main(["report", str(run), "--format", "mdx", "--student", "Ada Lovelace", "--date", "2026-01-27"]) == 0
    page = run / "submission" / "ada-lovelace.mdx"
    text = page.read_text()
    assert text.startswith('---\ntitle: "Scratch-1 Submission: Ada Lovelace"\nstudent: "Ada Lovelace"\n')
    assert 'date: "2026-01-27"' in text and "# Scratch-1: The Transformer Backbone" in text
    for section in ("## Loss Curve", "## Attention Visualization", "## The Audit: Removing the Causal Mask"):
        assert section in text
    # A trajectory run is a Scratch-1 submission: no text samples, the course's audit recipe.
    assert "## Samples" not in text and "## Next Steps" not in text and "--preset scratch1 --quick" in text
    assert (
        "![Training Loss](./images/loss_curve.png)" in text and "![Attention Maps](./images/attention_maps.png)" in text
    )
    for link in re.findall(r"\]\((\./images/[^)]+)\)", text):
        assert (page.parent / link).is_file(), link
    assert main(["report", str(run), "--format", "html"]) == 0
    html = (run / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') >= 4 and 'src="http' not in html and "href=" not in html


def test_a_report_carries_the_audit(workspace: Path, runs: Path, tmp_path: Path) -> None:
    audit, data = tmp_path / "audit", workspace / "traj.pkl"
    sets = [word for override in debug_overrides(data, 8) for word in ("--set", override)]
    assert main(["audit", "causal-mask", "--preset", "debug", "--out", str(audit), "--eval-rows", "4", *sets]) == 0
    run = tmp_path / "rope"
    shutil.copytree(runs / "rope", run)
    assert main(["report", str(run), "--format", "mdx", "--audit", str(audit)]) == 0
    text = (run / "submission" / "scratchlm.mdx").read_text()
    assert '### Why the Model "Cheats"' in text and "causal (prefix only)" in text
    assert (run / "submission" / "images" / "audit_curves.png").is_file()
    # The audit trained its own runs on another recipe than this run's, and the page says so.
    assert "The audit below trained its own pair of runs" in text and "differ), so its" in text
    assert main(["report", str(run), "--audit", str(tmp_path / "none")]) == 2


# ---------------------------------------------------------------------------- text runs: the capstone page


def _text_copy(text_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "capstone"
    shutil.copytree(text_run, run, ignore=shutil.ignore_patterns("plots", "submission", "report.*"))
    return run


def _section(text: str, heading: str) -> str:
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _commands(text: str, name: str) -> list[str]:
    return [span for span in re.findall(r"`([^`]+)`", text) if span.startswith(f"scratchlm {name} ")]


def test_a_text_run_gets_the_capstone_page(text_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shlex

    from scratchlm.analysis.scaling import parse_sizes, size_overrides
    from scratchlm.cli import build_parser

    run = _text_copy(text_run, tmp_path)
    assert main(["report", str(run), "--format", "mdx", "--student", "Ada Lovelace", "--date", "2026-01-27"]) == 0
    text = (run / "submission" / "ada-lovelace.mdx").read_text()
    assert text.startswith('---\ntitle: "Mini-LM Capstone: Ada Lovelace"\nstudent: "Ada Lovelace"\n')
    assert "Scratch-1" not in text and "\n# Mini-LM Capstone: Ada Lovelace\n" in text  # heading = front matter
    samples = _section(text, "Samples")
    assert "from `" in samples and "checkpoints/best.pt`" in samples and "seed 0" in samples
    assert samples.count("```text\n") == 2  # two continuations, each in its own fenced block
    # The audit hint is this run's recipe, not the Scratch-1 preset.
    audit = _section(text, "The Audit: Removing the Causal Mask")
    assert f"`scratchlm audit causal-mask --config {run}/config.toml --out {run}-audit`" in audit
    assert "--preset" not in audit and f"`--audit {run}-audit`" in audit
    steps = _section(text, "Next Steps")
    commands = _commands(steps, "ablate") + _commands(steps, "scaling") + _commands(audit, "audit")
    assert len(commands) == 4 and "scratchlm ablate --list" in commands
    parser = build_parser()
    for command in commands:  # every command the page names is one this CLI accepts
        args = parser.parse_args(shlex.split(command)[1:])
        assert getattr(args, "list", False) or args.config == f"{run}/config.toml"
    sizes = parse_sizes(parser.parse_args(shlex.split(_commands(steps, "scaling")[0])[1:]).sizes)
    for size in sizes:  # widths in whole heads of this run's head size
        size_overrides(size, None, f"{run}/config.toml", [])
    assert capsys.readouterr().err == ""
    # Markdown and HTML reports of a text run carry the samples too.
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert _section(md, "Samples") == samples and "## Next Steps" in md
    assert main(["report", str(run), "--format", "html"]) == 0
    html = (run / "report.html").read_text()
    assert "<h2>Samples</h2>" in html and html.count("<pre><code>") >= 2 + 3  # samples and the code highlights


def test_text_samples_are_reproducible(text_run: Path) -> None:
    from scratchlm.analysis.report_samples import TextSamples, text_samples

    first, again, other = text_samples(text_run), text_samples(text_run), text_samples(text_run, seed=1)
    assert isinstance(first, TextSamples) and isinstance(again, TextSamples) and isinstance(other, TextSamples)
    assert first.texts == again.texts and first.texts != other.texts
    assert len(first.texts) == 2 and all(first.texts) and first.texts[0] != first.texts[1]
    assert first.new_tokens == 23 and first.prompt == "a newline"  # context 24, char tokenizer without specials
    assert first.checkpoint.name == "best.pt"


def test_a_report_without_the_tokenizer_says_so_in_one_sentence(text_run: Path, tmp_path: Path) -> None:
    from scratchlm.presets import load_toml_file, to_toml

    run = _text_copy(text_run, tmp_path)
    tables = load_toml_file(str(run / "config.toml"))
    corpus = tmp_path / "corpus"
    shutil.copytree(tables["data"]["path"], corpus)
    shutil.rmtree(corpus / "tokenizer")
    tables["data"]["path"] = str(corpus)
    (run / "config.toml").write_text(to_toml(tables))
    assert main(["report", str(run), "--format", "mdx"]) == 0
    text = (run / "submission" / "scratchlm.mdx").read_text()
    samples = _section(text, "Samples").strip()
    assert samples.startswith("No samples: ") and "tokenizer" in samples and "\n" not in samples
    assert samples.count(". ") == 0 and samples.endswith(".")
    assert "```text" not in text and "## Next Steps" in text
    # The attention maps need the tokenizer too (their labels); a text page says so rather than failing.
    assert _section(text, "Attention Visualization").strip().startswith("No attention maps: ")


def test_generated_text_cannot_break_a_markdown_or_mdx_page(tmp_path: Path) -> None:
    from scratchlm.analysis.report_samples import code_block_text

    generated = "a {b} <c> `d`\n```\n  ````js\nend\x1b[0m\r\nline\u2028two\x00"
    doc = Document("T", [Code(code_block_text(generated), "text"), Paragraph("after")])
    for mdx in (False, True):
        page = to_markdown(doc, tmp_path, mdx=mdx)
        fences = [line for line in page.splitlines() if re.match(r" {0,3}`{3,}", line)]
        assert fences == ["```text", "```"], fences  # only the block's own fence opens and closes
        body = page.split("```text\n", 1)[1].split("\n```\n", 1)[0]
        assert body.startswith("a {b} <c> `d`\n")  # literal in a fence: MDX parses no {expression} or <tag> there
        assert "\\x1b[0m" in body and "\\x00" in body and "\\u2028" in body and "\r" not in body
    html = to_html(doc)
    assert "a {b} &lt;c&gt; `d`" in html and "\x1b" not in html


EMPTY_STUDENT = (
    '--student is empty; give your name (e.g. --student "Ada Lovelace") or leave --student out for "scratchlm".'
)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--student", "", EMPTY_STUDENT),
        ("--student", "   ", EMPTY_STUDENT),
        ("--student", "\t\n", EMPTY_STUDENT),
        ("--student", "Ada\n---", "holds a line break or control character"),
        *(("--date", date, "is not a date; write it as YYYY-MM-DD") for date in ("2026-02-30", "27/01/2026", "")),
        ("--date", "2026-01-27\nx: y", "is not a date; write it as YYYY-MM-DD"),
    ],
)
def test_a_bad_student_name_or_date_is_refused_before_anything_is_written(
    runs: Path, tmp_path: Path, flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "rope"
    shutil.copytree(runs / "rope", run)
    assert main(["report", str(run), "--format", "mdx", flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scratchlm: error: ") and message in err and "\n" not in err
    assert not (run / "submission").exists() and not (run / "plots" / "loss_curve.png").exists()


def test_the_attention_caption_names_the_sample_shown(runs: Path, tmp_path: Path) -> None:
    run = tmp_path / "rope"
    shutil.copytree(runs / "rope", run)
    assert main(["report", str(run), "--sample", "2"]) == 0
    text = (run / "report.md").read_text()
    assert "on validation trajectory 2, with the head average" in text and "trajectory 0" not in text


def test_every_student_name_gives_a_file_name() -> None:
    from scratchlm.analysis.report import _slug

    assert _slug("Ada Lovelace") == "ada-lovelace" and _slug("José Núñez-Ürgen") == "jose-nunez-urgen"
    for name in ("李雷", "!!!", "🙂"):
        slug = _slug(name)
        assert re.fullmatch(r"student-[0-9a-f]{8}", slug) and slug == _slug(name), slug
    assert _slug("李雷") != _slug("韩梅梅")
    assert len(_slug("word " * 100)) <= 64 and not _slug("word " * 100).endswith("-")


def _chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}",
    ]  # fmt: skip
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120)


def test_the_html_report_renders_offline_in_headless_chromium(runs: Path, tmp_path: Path) -> None:
    binary = _chromium()
    if binary is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    run = tmp_path / "rope"
    shutil.copytree(runs / "rope", run)
    assert main(["report", str(run), "--format", "html"]) == 0
    page = run / "report.html"
    # A copy alone in an empty folder: whatever the page shows must come from the file itself.
    alone = tmp_path / "alone" / "page.html"
    alone.parent.mkdir()
    shutil.copyfile(page, alone)
    dom = _run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", alone.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', dom.stdout)
    assert len(images) >= 4
    summary = json.loads((run / "summary.json").read_text())
    assert f"{summary['final_val_loss']:.4f}" in dom.stdout and "Loss Curve" in dom.stdout
    shot = tmp_path / "shot.png"
    result = _run_chromium(
        binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1000,1600", alone.as_uri()
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    assert _colorful_pixels(shot) > 2000  # the plots' colored curves and heatmaps, not just black text


def _colorful_pixels(png: Path) -> int:
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png))[..., :3]
    spread = pixels.max(axis=-1) - pixels.min(axis=-1)  # gray text and white paper have none
    return int((spread > 0.25).sum())


# ------------------------------------------------------------------------------------- experiment log


def test_runs_lists_every_run_with_its_diff_status_and_numbers(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", str(runs), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) >= {"rope", "sinusoidal", "cut"}
    assert rows["rope"]["preset"] == "debug" and rows["rope"]["status"] == "finished"
    assert (
        "model.positional=sinusoidal" in rows["sinusoidal"]["changes"]
        and "train.seed=2" in rows["sinusoidal"]["changes"]
    )
    assert not any(c.startswith("data.path") for c in rows["rope"]["changes"])
    assert rows["cut"]["status"] == "incomplete" and rows["cut"]["steps"] == 4
    assert rows["rope"]["best_val_loss"] > 0 and rows["rope"]["steps"] == 12
    log = runs.parent / "log.md"
    assert main(["runs", str(runs), "--out", str(log)]) == 0
    assert "| `rope` | `debug`" in capsys.readouterr().out and "Experiment log" in log.read_text()


def test_runs_on_a_folder_without_runs_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", str(tmp_path)]) == 2
    assert "no runs under" in capsys.readouterr().err


def test_durations_in_tables_keep_digits_under_ten_seconds() -> None:
    from scratchlm.analysis.document import format_seconds

    assert [format_seconds(s) for s in (0.4912, 3.0, 9.94, 37.2, None)] == ["0.49 s", "3 s", "9.9 s", "37 s", "-"]


def test_an_audit_of_other_data_is_flagged_and_the_same_file_spelled_otherwise_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scratchlm.analysis.report import RunFacts, _audit_provenance
    from scratchlm.presets import to_toml

    data, other = tiny_trajectories(tmp_path), tmp_path / "other.pkl"
    shutil.copy(data, other)
    ours = resolve_run_config("debug", None, debug_overrides(data, 4))
    facts = RunFacts(tmp_path / "run", ours, {}, [])
    (tmp_path / "audit" / "masked").mkdir(parents=True)
    saved = tmp_path / "audit" / "masked" / "config.toml"
    monkeypatch.chdir(tmp_path)
    for path, flagged in ((other, True), (Path("traj.pkl"), False), (data, False)):
        audited = resolve_run_config("debug", None, [*debug_overrides(data, 4), f"data.path={json.dumps(str(path))}"])
        saved.write_text(to_toml(audited.to_tables()), encoding="utf-8")
        blocks = _audit_provenance(facts, tmp_path / "audit")
        assert bool(blocks) is flagged, path
        if flagged:
            assert "`data.path`" in blocks[0].text


def test_attention_maps_of_another_checkpoint_keep_the_default_figure(runs: Path) -> None:
    from scratchlm.analysis.attention_runs import run_attention_figures

    run = runs / "rope"
    default = run_attention_figures(run, sample=1)
    before = default.grid.read_bytes()
    other = run_attention_figures(run, sample=1, checkpoint="last")
    assert other.grid.name == "attention_val1_last.png" and other.means.name == "attention_val1_last_mean.png"
    assert default.grid.read_bytes() == before and "last.pt" in other.what
