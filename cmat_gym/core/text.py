"""Text spaces and the sanitising every observation goes through."""

from __future__ import annotations

import string
import sys
from typing import TextIO

from gymnasium import spaces

# Gymnasium's Text default charset is alphanumeric only; agents read and write code and real data
# (names with accents, en dashes, degree signs, Chinese place names, emoji in reviews), so a text here
# is any *printable* Unicode string plus newline and tab: what ``str.isprintable`` accepts (every
# script, symbols and emoji; not control characters, format characters such as the soft hyphen, or
# lone surrogates, which cannot even be encoded). Anything else is replaced (not dropped) so that the
# position of an odd character stays visible.
#
# The space's own charset (:data:`CHARSET`: printable ASCII plus newline and tab, the printable
# Latin-1 and Latin Extended-A/B letters, Greek and Cyrillic, general punctuation, currency signs and
# a few common symbols, about 1,100 characters) is only what ``sample()`` draws from; ``contains``
# accepts the whole printable set (:class:`PrintableText`). Listing every printable character
# instead (~150,000) would cost Gymnasium's per-space index dict megabytes per space, and every env
# and PettingZoo agent holds its own spaces.
_RANGES = ((0x00A1, 0x024F), (0x0370, 0x03FF), (0x0400, 0x04FF), (0x2010, 0x205E), (0x20A0, 0x20BF),
           (0x2100, 0x214F), (0x2190, 0x21FF), (0x2200, 0x22FF))
CHARSET: str = "".join(sorted(set(string.printable) - set("\r\x0b\x0c"))) + "".join(
    chr(c) for lo, hi in _RANGES for c in range(lo, hi + 1) if chr(c).isprintable() and c != 0x00AD)
# The ASCII characters allowed, as bytes: ``bytes.translate(None, delete=...)`` deletes them in C, so an
# ASCII text is clean when nothing is left (0.2 us for a small result table, against 1.1 us for a
# frozenset scan; sanitising runs on every observation).
_ALLOWED_ASCII = bytes(sorted(ord(c) for c in CHARSET if c.isascii()))
REPLACEMENT = "?"
TRUNCATION_MARKER = "\n...[truncated {n} characters]"


def is_clean(text: str) -> bool:
    """True when every character of ``text`` is printable, a newline or a tab (what :func:`sanitize`
    keeps, and what :class:`PrintableText` contains)."""
    if text.isascii():
        return not text.encode("ascii").translate(None, _ALLOWED_ASCII)
    return text.isprintable() or text.replace("\n", "").replace("\t", "").isprintable()


def _clean_char(c: str) -> str:
    return c if c.isprintable() or c == "\n" or c == "\t" else REPLACEMENT


class PrintableText(spaces.Text):
    """A Gymnasium ``Text`` space of printable Unicode strings (plus newline and tab).

    ``contains`` accepts any such string of an allowed length, in every script; ``sample()`` draws from
    :data:`CHARSET` only (a subset). The env's observations are always inside it (:func:`sanitize`) and
    its ``step`` reads every action it contains verbatim.
    """

    def contains(self, x: object) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length and is_clean(x)


DEFAULT_MAX_OBS_CHARS = 8192
DEFAULT_MAX_ACTION_CHARS = 8192


def text_space(max_length: int) -> PrintableText:
    """A fresh :class:`PrintableText` space (fresh: PettingZoo's seed tests need one per agent)."""
    return PrintableText(max_length=max_length, min_length=0, charset=CHARSET)


def sanitize(text: str, max_length: int) -> str:
    """Map ``text`` into the printable set (:func:`is_clean`) and cut it to ``max_length`` with a visible
    marker."""
    if not isinstance(text, str):
        text = str(text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not is_clean(text):
        text = "".join(map(_clean_char, text))
    if len(text) > max_length:
        # Size the marker for the worst case first, then state the exact number of cut characters.
        keep = max(0, max_length - len(TRUNCATION_MARKER.format(n=len(text))))
        text = (text[:keep] + TRUNCATION_MARKER.format(n=len(text) - keep))[:max_length]
    return text


def displayable(text: str) -> str:
    """``text`` mapped into the printable set with no length limit: what ``render()`` shows. Agent text may
    hold anything (a lone surrogate such as ``"\\ud800"`` cannot be encoded at all, so printing it would
    raise on every later render of the same transcript)."""
    return sanitize(text, len(text) if isinstance(text, str) else len(str(text)))


def write_display(text: str, stream: TextIO | None = None) -> None:
    """Write ``displayable(text)`` and a newline to ``stream`` (default: the current ``sys.stdout``),
    replacing what the stream's encoding cannot hold (an ASCII terminal) instead of raising."""
    stream = stream if stream is not None else sys.stdout
    text = displayable(text) + "\n"
    encoding = getattr(stream, "encoding", None)
    if encoding:
        text = text.encode(encoding, errors="replace").decode(encoding, errors="replace")
    stream.write(text)
