"""The daily summaries as web pages: the Markdown files of ``summaries/``, newest
first, rendered to HTML with their chart.

Rendered with markdown-it in CommonMark mode with raw HTML off: a job's name or
error line inside a summary is shown as text, never run as markup. An image is
kept only when it names a summary's own chart file, which the dashboard serves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from ugro.settings import Settings

SUMMARY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})_summary\.md$")
CHART_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}_gpu\.png$")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: Where the dashboard serves a chart file (its name follows).
CHART_URL = "/summaries/charts/"


def summary_days(settings: Settings) -> list[str]:
    """The days with a summary page, newest first."""
    folder = settings.summaries_dir
    if not folder.is_dir():
        return []
    days = [m.group(1) for path in folder.iterdir() if (m := SUMMARY_FILE.match(path.name))]
    return sorted(days, reverse=True)


def summary_markdown(settings: Settings, day: str) -> str | None:
    """A day's page as written (None: there is none, or ``day`` is no date)."""
    if not DAY.match(day):
        return None
    try:
        return (settings.summaries_dir / f"{day}_summary.md").read_text(encoding="utf-8")
    except OSError:
        return None


def chart_path(settings: Settings, name: str) -> Path | None:
    """A summary's chart by its file name (None: not a chart's name, or missing)."""
    if not CHART_FILE.match(name):
        return None
    path = settings.summaries_dir / name
    return path if path.is_file() else None


def render_summary(text: str) -> str:
    """The page's HTML."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    for token in tokens:
        for child in token.children or []:
            if child.type == "image":
                src = str(child.attrGet("src") or "")
                child.attrSet("src", CHART_URL + src if CHART_FILE.match(src) else "")
    return str(md.renderer.render(tokens, md.options, {}))


def summaries(settings: Settings) -> list[dict[str, Any]]:
    """Every summary, newest first: its day and rendered page."""
    found = []
    for day in summary_days(settings):
        text = summary_markdown(settings, day)
        if text is not None:
            found.append({"day": day, "html": render_summary(text), "markdown": text})
    return found
