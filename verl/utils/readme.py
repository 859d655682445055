"""Generated sections of README.md: the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``."""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of section ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(readme: str | Path, name: str, md: str) -> None:
    """Replace the text between the markers of ``name`` in ``readme`` with ``md``."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    start, end = markers(name)
    if start not in text or end not in text:
        raise ValueError(f"{readme} lacks the markers {start} / {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{md}{end}{tail}", encoding="utf-8")
