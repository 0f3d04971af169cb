"""Rewrite the "## Contents" list of every docs/ page from its "## " headings (GitHub's anchors).

    .venv/bin/python tools/docs_toc.py        # tests/test_docs.py checks that no page is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(text: str) -> list[str]:
    """The page's "## " headings outside fenced blocks, Contents excepted."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("## ") and line != "## Contents":
            found.append(line[3:])
    return found


def contents(text: str) -> str:
    return "\n".join(f"- [{h.replace('`', '')}](#{anchor(h)})" for h in headings(text))


def with_contents(text: str) -> str:
    """`text` with its Contents list (between "## Contents" and the next heading) rewritten."""
    return re.sub(r"(## Contents\n\n)((?:- .*\n)*)", lambda m: m.group(1) + contents(text) + "\n", text, count=1)


def main() -> int:
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        if with_contents(text) != text:
            page.write_text(with_contents(text))
            print(f"rewrote the contents of {page.relative_to(DOCS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
