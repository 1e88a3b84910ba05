"""The report as a document: a list of blocks (heading, paragraph, table, image, code), each of which
renders itself as Markdown and as HTML, so that report.md and report.html carry the same content and
every number goes through :func:`format_value` exactly once."""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MISSING = "–"
# Values below this magnitude would print as 0.0000 with four decimals.
SCIENTIFIC_BELOW = 1e-4
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
h3 { margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .7em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { display: inline-block; margin: .5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { text-align: center; font-size: .9em; color: #555; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; }
"""


def format_value(value: object) -> str:
    """The one text form of a value in report tables (Markdown and HTML alike).

    Floats get four decimals (scientific notation when tiny but non-zero), ints thousands separators,
    None and NaN a dash.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and abs(value) < SCIENTIFIC_BELOW:
            return f"{value:.3e}"
        return f"{value:,.4f}"
    return str(value)


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None and numpy values as Python ones, for strict JSON."""
    if isinstance(value, np.ndarray | np.generic):
        return json_safe(value.tolist())
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class Heading:
    level: int
    text: str

    def markdown(self) -> str:
        return f"{'#' * self.level} {self.text}"

    def html(self) -> str:
        return f"<h{self.level}>{html.escape(self.text)}</h{self.level}>"


@dataclass(frozen=True)
class Paragraph:
    text: str

    def markdown(self) -> str:
        return self.text

    def html(self) -> str:
        return f"<p>{html.escape(self.text)}</p>"


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]
    numeric: tuple[bool, ...]  # right-aligned columns

    def markdown(self) -> str:
        lines = ["| " + " | ".join(_md_cell(h) for h in self.header) + " |"]
        lines.append("| " + " | ".join("---:" if num else "---" for num in self.numeric) + " |")
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "\n".join(
            "<tr>"
            + "".join(
                f'<td class="num">{html.escape(c)}</td>' if num else f"<td>{html.escape(c)}</td>"
                for c, num in zip(row, self.numeric, strict=True)
            )
            + "</tr>"
            for row in self.rows
        )
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


@dataclass(frozen=True)
class Image:
    title: str
    path: str  # relative to the report directory
    png: bytes

    def markdown(self) -> str:
        alt = self.title.replace("[", "(").replace("]", ")")
        return f"![{alt}]({self.path})"

    def html(self) -> str:
        data = base64.b64encode(self.png).decode("ascii")
        title = html.escape(self.title)
        return (
            f'<figure><img alt="{title}" src="data:image/png;base64,{data}">'
            f"<figcaption>{title}</figcaption></figure>"
        )


@dataclass(frozen=True)
class Code:
    language: str
    text: str

    def markdown(self) -> str:
        # The fence must be longer than any backtick run inside the text.
        longest = max((len(run) for run in re.findall(r"`+", self.text)), default=0)
        fence = "`" * max(3, longest + 1)
        return f"{fence}{self.language}\n{self.text.rstrip()}\n{fence}"

    def html(self) -> str:
        return f"<pre><code>{html.escape(self.text.rstrip())}</code></pre>"


Block = Heading | Paragraph | Table | Image | Code


@dataclass(frozen=True)
class Plot:
    """A figure of the report: written to ``plots/<name>.png``, linked from the Markdown, embedded in
    the HTML."""

    name: str  # file stem under plots/
    title: str
    png: bytes

    @property
    def path(self) -> str:
        return f"plots/{self.name}.png"

    def image(self) -> Image:
        return Image(self.title, self.path, self.png)


def to_markdown(blocks: Sequence[Block]) -> str:
    return "\n\n".join(b.markdown() for b in blocks) + "\n"


def to_html(blocks: Sequence[Block]) -> str:
    title = next((b.text for b in blocks if isinstance(b, Heading)), "report")
    body = "\n".join(b.html() for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
