"""Generated sections of a docs page (``docs/results.md``): the text between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``, and the figures the section shows, copied next to the page."""

from __future__ import annotations

import shutil
from pathlib import Path

RESULTS_PAGE = "docs/results.md"  # the page the experiment scripts regenerate (relative to the repository root)
FIGURES_DIR = "results"  # figures of a page live in <page's folder>/results/


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of section ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(page: str | Path, name: str, md: str) -> None:
    """Replace the text between the markers of ``name`` in ``page`` with ``md``."""
    page = Path(page)
    text = page.read_text(encoding="utf-8")
    start, end = markers(name)
    if start not in text or end not in text:
        raise ValueError(f"{page} lacks the markers {start} / {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    page.write_text(f"{head}{start}\n{md}{end}{tail}", encoding="utf-8")


def publish_figures(page: str | Path, figures: list[tuple[Path, str, str]]) -> str:
    """Copy each ``(png, name, alt text)`` to ``<page's folder>/results/<name>``; returns the Markdown image
    line that shows them, with links relative to ``page``. Missing PNGs are left out."""
    folder = Path(page).parent / FIGURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    shown = []
    for png, name, alt in figures:
        if Path(png).is_file():
            shutil.copy2(png, folder / name)
            shown.append(f"![{alt}]({FIGURES_DIR}/{name})")
    return " ".join(shown)
