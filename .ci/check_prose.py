"""Checks the newcomer's pages: README.md under 10 KB, and no paragraph in it or in docs/ over 120 words.

A paragraph is a run of prose lines; code blocks, tables, and headings do not count, and each list item
counts on its own. Prints each offender and exits 1 if there is one.
"""

import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_WORDS, MAX_README = 120, 10_000


def paragraphs(text):
    """(first line number, words) of each paragraph or list item outside code blocks and tables."""
    found, current, start, fenced = [], [], 0, False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        item = re.match(r"\s*([-*]|\d+\.)\s", line)
        if fenced or not line.strip() or line.startswith(("#", "|", "```", "<!--")) or item:
            if current:
                found.append((start, len(" ".join(current).split())))
            current, start = [], number
            if item and not fenced:
                current = [line]
            continue
        current.append(line)
        start = start or number
    if current:
        found.append((start, len(" ".join(current).split())))
    return found


def main():
    problems = []
    readme = os.path.join(ROOT, "README.md")
    if os.path.getsize(readme) > MAX_README:
        problems.append(f"README.md: {os.path.getsize(readme)} bytes, over {MAX_README}")
    for path in [readme, *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]:
        with open(path) as fh:
            for line, words in paragraphs(fh.read()):
                if words > MAX_WORDS:
                    problems.append(
                        f"{os.path.relpath(path, ROOT)}:{line}: a paragraph of {words} words, over {MAX_WORDS}"
                    )
    print("\n".join(problems) or "prose: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
