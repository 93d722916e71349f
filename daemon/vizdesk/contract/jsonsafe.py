"""JSON from untrusted hands with bounded nesting: request bodies, values jobs write.

``json.loads`` recurses once per ``[``/``{``; a document nested a few thousand deep
(``"[" * 60000``) raises ``RecursionError`` (not a ``ValueError``), and one nested a few
hundred deep parses but breaks whatever walks it later. :func:`loads_bounded` measures
the nesting first, without recursion and at C speed (strings are cut out with one regex,
the brackets counted with ``accumulate``), and refuses anything deeper than
``max_depth`` with :class:`JsonTooDeep` — a ``ValueError``, so every caller that already
treats malformed JSON as ``ValueError`` treats too-deep JSON the same way.

Here, at the bottom of the layers, so the daemon (api, core, auth, images) and the
registration contract can all use it.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

#: Deeper than anything vizdesk writes or accepts (a session record is 2 deep).
MAX_JSON_DEPTH = 64

# A JSON string up to its closing quote, or (unterminated) to the end of the text:
# possessive and always matching from an opening quote, so the scan is linear.
_STRING_RE = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.S)
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class JsonTooDeep(ValueError):
    """The document nests arrays/objects deeper than allowed."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(f"JSON nested deeper than {max_depth} levels")
        self.max_depth = max_depth


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (brackets inside strings do
    not count; for malformed text an upper bound, which is fine: it is refused anyway)."""
    if text.count("[") + text.count("{") == 0:
        return 0
    brackets = _NOT_BRACKET_RE.sub("", _STRING_RE.sub("", text))
    return max(0, max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0))


def decode_text(raw: str | bytes | bytearray) -> str:
    """``raw`` as text, the way ``json.loads`` decodes bytes (UTF-8/16/32 by BOM/pattern);
    a ``UnicodeDecodeError`` (a ``ValueError``) when they are not text."""
    if isinstance(raw, str):
        return raw
    data = bytes(raw)
    return data.decode(json.detect_encoding(data), "surrogatepass")


def check_depth(raw: str | bytes | bytearray, max_depth: int = MAX_JSON_DEPTH) -> str:
    """``raw`` as text if it nests at most ``max_depth`` deep, else :class:`JsonTooDeep`."""
    text = decode_text(raw)
    # no deeper than the number of opening brackets: most documents need no walk at all
    if text.count("[") + text.count("{") > max_depth and json_depth(text) > max_depth:
        raise JsonTooDeep(max_depth)
    return text


def loads_bounded(raw: str | bytes | bytearray, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads(raw)``, refusing documents nested deeper than ``max_depth``.

    Raises only ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError``,
    :class:`JsonTooDeep`), never ``RecursionError``.
    """
    text = check_depth(raw, max_depth)
    try:
        return json.loads(text)
    except RecursionError:  # cannot happen after the check; belt and braces
        raise JsonTooDeep(max_depth) from None
