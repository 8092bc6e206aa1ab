"""A report as a list of plain blocks, written once and rendered to Markdown, MDX or self-contained HTML.

Text in blocks may use two inline marks, `code` and **bold**; every renderer understands them. Figure
paths are files on disk: Markdown and MDX link them relative to the page, HTML embeds them as data URIs.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scratchlm.errors import DataError


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    path: Path  # the image file
    alt: str
    caption: str = ""


@dataclass(frozen=True)
class Code:
    text: str
    language: str = "python"
    source: str = ""  # where it comes from, shown above the code


Block = Heading | Paragraph | Bullets | Table | Figure | Code


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)
    front_matter: dict[str, str] = field(default_factory=dict)  # MDX only


# ------------------------------------------------------------------------------------------- Markdown


def format_seconds(seconds: float | None) -> str:
    """A duration in a table: '0.49 s' under ten seconds (a tiny run is not '0 s'), '37 s' above, '-' if unknown."""
    if seconds is None:
        return "-"
    return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"


def write_results(out_dir: Path, stem: str, record: dict[str, Any], doc: Document) -> None:
    """An experiment's two outputs, each written atomically: `<stem>.json` (the numbers) and `<stem>.md`."""
    from scratchlm.fileio import atomic_write

    with atomic_write(out_dir / f"{stem}.json", "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2)
    with atomic_write(out_dir / f"{stem}.md", "w", encoding="utf-8") as fh:
        fh.write(to_markdown(doc, out_dir))


def to_markdown(doc: Document, page_dir: Path, *, mdx: bool = False) -> str:
    """Markdown (or MDX: front matter, and braces and angle brackets escaped outside code) for a page in page_dir."""
    lines: list[str] = []
    if mdx and doc.front_matter:
        lines += ["---", *(f'{k}: "{_yaml_escape(v)}"' for k, v in doc.front_matter.items()), "---", ""]
    lines += [f"# {_md_text(doc.title, mdx)}", ""]
    for block in doc.blocks:
        lines += [*_md_block(block, page_dir, mdx), ""]
    return "\n".join(lines).rstrip() + "\n"


def _md_block(block: Block, page_dir: Path, mdx: bool) -> list[str]:
    if isinstance(block, Heading):
        return ["#" * block.level + " " + _md_text(block.text, mdx)]
    if isinstance(block, Paragraph):
        return [_md_text(block.text, mdx)]
    if isinstance(block, Bullets):
        return [f"- {_md_text(item, mdx)}" for item in block.items]
    if isinstance(block, Table):
        return [
            "| " + " | ".join(_md_text(h, mdx) for h in block.header) + " |",
            "|" + "---|" * len(block.header),
            *("| " + " | ".join(_md_text(c, mdx) for c in row) + " |" for row in block.rows),
        ]
    if isinstance(block, Figure):
        link = _relative(block.path, page_dir)
        lines = [f"![{block.alt}]({link})"]
        return lines + ([f"*{_md_text(block.caption, mdx)}*"] if block.caption else [])
    if isinstance(block, Code):
        head = [f"`{block.source}`:", ""] if block.source else []
        return [*head, f"```{block.language}", block.text.rstrip("\n"), "```"]
    raise TypeError(f"unknown block {block!r}")


def _md_text(text: str, mdx: bool) -> str:
    if not mdx:
        return text
    # MDX parses { } as JavaScript and < as JSX outside code spans: escape them there only.
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(
        p if p.startswith("`") else p.replace("{", "\\{").replace("}", "\\}").replace("<", "&lt;") for p in parts
    )


def _yaml_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _relative(path: Path, page_dir: Path) -> str:
    try:
        rel = path.resolve().relative_to(page_dir.resolve())
    except ValueError:
        rel = Path(os.path.relpath(path.resolve(), page_dir.resolve()))
    text = rel.as_posix()
    return text if text.startswith(".") else f"./{text}"


# ----------------------------------------------------------------------------------------------- HTML

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 980px; margin: 2em auto;
       padding: 0 1em; line-height: 1.5; color: #1b1b1b; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
figure { margin: 1em 0; }
figcaption { font-size: 0.9em; color: #555; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; }
code { background: #f6f8fa; padding: 0 0.2em; }
"""


def to_html(doc: Document) -> str:
    """A single self-contained page: inline CSS, figures embedded as data URIs, no external requests."""
    body = "\n".join(_html_block(block) for block in doc.blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(plain_text(doc.title))}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{_html_text(doc.title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        level = min(max(block.level, 2), 6)
        return f"<h{level}>{_html_text(block.text)}</h{level}>"
    if isinstance(block, Paragraph):
        return f"<p>{_html_text(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_html_text(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{_html_text(h)}</th>" for h in block.header)
        rows = "".join("<tr>" + "".join(f"<td>{_html_text(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(block, Figure):
        caption = f"<figcaption>{_html_text(block.caption)}</figcaption>" if block.caption else ""
        return f'<figure><img src="{data_uri(block.path)}" alt="{html.escape(block.alt)}">{caption}</figure>'
    if isinstance(block, Code):
        source = f"<p><code>{html.escape(block.source)}</code>:</p>" if block.source else ""
        return f"{source}<pre><code>{html.escape(block.text)}</code></pre>"
    raise TypeError(f"unknown block {block!r}")


def plain_text(text: str) -> str:
    """Inline Markdown (`code`, **bold**) as the words alone: a browser tab's title shows no markup."""
    return re.sub(r"\*\*(.+?)\*\*", r"\1", re.sub(r"`([^`]*)`", r"\1", text))


def _html_text(text: str) -> str:
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


MIME_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def data_uri(path: Path) -> str:
    """The file as a base64 data URI, so the page needs nothing beside it."""
    mime = MIME_TYPES.get(path.suffix.lower())
    if mime is None:
        raise DataError(f"cannot embed {path}: unknown image type {path.suffix!r}; use PNG, SVG or JPEG.")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
