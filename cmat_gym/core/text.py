"""Text spaces and the sanitising every observation goes through."""

from __future__ import annotations

import string
import sys
from typing import TextIO

from gymnasium import spaces

# Gymnasium's Text default charset is alphanumeric only; agents read and write code and real data
# (names with accents, en dashes, degree signs), so the charset is printable ASCII plus newline and
# tab, the printable Latin-1 and Latin Extended-A/B letters, Greek and Cyrillic, general
# punctuation, currency signs and a few common symbols: about 1,100 characters, small enough that
# hundreds of env instances can each hold their own space. Anything else is replaced (not dropped)
# so that the position of an odd character stays visible.
_RANGES = ((0x00A1, 0x024F), (0x0370, 0x03FF), (0x0400, 0x04FF), (0x2010, 0x205E), (0x20A0, 0x20BF),
           (0x2100, 0x214F), (0x2190, 0x21FF), (0x2200, 0x22FF))
CHARSET: str = "".join(sorted(set(string.printable) - set("\r\x0b\x0c"))) + "".join(
    chr(c) for lo, hi in _RANGES for c in range(lo, hi + 1) if chr(c).isprintable() and c != 0x00AD)
_ALLOWED = frozenset(CHARSET)
# The ASCII part of the charset as bytes: ``bytes.translate(None, delete=...)`` deletes them in C, so an
# ASCII text is clean when nothing is left (0.2 us for a small result table, against 1.1 us for a
# frozenset scan; sanitising runs on every observation).
_ALLOWED_ASCII = bytes(sorted(ord(c) for c in _ALLOWED if c.isascii()))
REPLACEMENT = "?"
TRUNCATION_MARKER = "\n...[truncated {n} characters]"

DEFAULT_MAX_OBS_CHARS = 8192
DEFAULT_MAX_ACTION_CHARS = 8192


def text_space(max_length: int) -> spaces.Text:
    """A fresh Text space over :data:`CHARSET` (fresh: PettingZoo's seed tests need one per agent)."""
    return spaces.Text(max_length=max_length, min_length=0, charset=CHARSET)


def sanitize(text: str, max_length: int) -> str:
    """Map ``text`` into :data:`CHARSET` and cut it to ``max_length`` with a visible marker."""
    if not isinstance(text, str):
        text = str(text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.isascii():
        if text.encode("ascii").translate(None, _ALLOWED_ASCII):  # some control character is left
            text = "".join(c if c in _ALLOWED else REPLACEMENT for c in text)
    elif not _ALLOWED.issuperset(text):
        text = "".join(c if c in _ALLOWED else REPLACEMENT for c in text)
    if len(text) > max_length:
        # Size the marker for the worst case first, then state the exact number of cut characters.
        keep = max(0, max_length - len(TRUNCATION_MARKER.format(n=len(text))))
        text = (text[:keep] + TRUNCATION_MARKER.format(n=len(text) - keep))[:max_length]
    return text


def displayable(text: str) -> str:
    """``text`` mapped into :data:`CHARSET` with no length limit: what ``render()`` shows. Agent text may
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
