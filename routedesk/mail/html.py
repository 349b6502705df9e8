"""HTML to readable plain text, for HTML-only mail and HTML alternatives."""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

_TAG_RE = re.compile(r"<[^>]*>")
_BLANK_RUN_RE = re.compile(r"\n{3,}")
_SPACE_RUN_RE = re.compile(r"\s+")


def html_to_text(html: str) -> str:
    """Reduce HTML to readable plain text."""
    extractor = _HTMLText()
    try:
        extractor.feed(html)
        extractor.close()
        text = extractor.text()
    except Exception:  # html.parser raises AssertionError on some broken declarations
        text = unescape(_TAG_RE.sub(" ", html))
    return tidy_text(text)


def tidy_text(text: str) -> str:
    lines = [line.strip() for line in text.replace("\xa0", " ").split("\n")]
    return _BLANK_RUN_RE.sub("\n\n", "\n".join(lines)).strip()


_SKIP_TAGS = frozenset({"script", "style", "head", "title", "template"})
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "fieldset",
        "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
        "li", "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul",
    }
)  # fmt: skip
_PARAGRAPH_TAGS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table"})
_CELL_TAGS = frozenset({"td", "th"})


class _HTMLText(HTMLParser):
    """Collects visible text; block elements become line breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._chunks: list[str] = []
        self._skip: list[str] = []
        self._pre = 0
        self._newlines = 0  # newlines already at the end of the output

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            # An unclosed <head> must not swallow the whole document.
            self._skip.clear()
        elif tag in _SKIP_TAGS:
            self._skip.append(tag)
        elif tag == "pre":
            self._pre += 1
        self._boundary(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _SKIP_TAGS:
            self._boundary(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._skip:
            while self._skip and self._skip.pop() != tag:
                pass
        elif tag == "pre" and self._pre:
            self._pre -= 1
        if tag != "br" and tag not in _CELL_TAGS:
            self._boundary(tag)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if not self._pre:
            # HTML collapses whitespace runs, including source line breaks.
            data = _SPACE_RUN_RE.sub(" ", data)
        self._chunks.append(data)
        if data.strip():
            self._newlines = len(data) - len(data.rstrip("\n"))

    def _boundary(self, tag: str) -> None:
        if tag == "br":
            # <br> always breaks, so <br><br> leaves a blank line.
            self._chunks.append("\n")
            self._newlines += 1
        elif tag in _PARAGRAPH_TAGS:
            self._ensure_newlines(2)
        elif tag in _BLOCK_TAGS:
            self._ensure_newlines(1)
        elif tag in _CELL_TAGS:
            self._chunks.append(" ")

    def _ensure_newlines(self, count: int) -> None:
        # Adjacent blocks (</div><div>) share one break instead of stacking them.
        if count > self._newlines:
            self._chunks.append("\n" * (count - self._newlines))
            self._newlines = count

    def text(self) -> str:
        return "".join(self._chunks)
