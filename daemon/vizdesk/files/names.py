"""Which file names a user may give (``Upload-Metadata`` ``filename``), and slot names.

A file name becomes one path component in a job directory: a single component, at most
255 bytes of UTF-8, no ``/``, NUL or other control character, not ``.`` or ``..`` and not
starting with ``-`` (it is passed as a command-line argument to job programs) or
whitespace. Refusals are 400s naming the field.
"""

from __future__ import annotations

import re
import unicodedata

from ..core.validate import NAME_RE, ValidationError

MAX_NAME_BYTES = 255
SLOT_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
TEMPLATE_NAME_RE = NAME_RE  # the same names as jobs/templates.py accepts


def check_filename(name: str, field: str = "Upload-Metadata.filename") -> str:
    """``name`` if it is a safe single file name; else a 400 naming ``field``."""
    if not name:
        raise ValidationError(field, "the file name is empty")
    if len(name.encode("utf-8", errors="surrogatepass")) > MAX_NAME_BYTES:
        raise ValidationError(field, f"the file name is longer than {MAX_NAME_BYTES} bytes")
    if name in (".", ".."):
        raise ValidationError(field, "the file name may not be '.' or '..'")
    if "/" in name or "\\" in name:
        raise ValidationError(field, "the file name may not contain '/' or '\\'")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in name):
        raise ValidationError(field, "the file name may not contain control characters")
    if name[0] == "-" or name != name.strip():
        raise ValidationError(field, "the file name may not start with '-' or with/end in spaces")
    return name


def check_slot(slot: str, field: str = "Upload-Metadata.slot") -> str:
    if not SLOT_RE.fullmatch(slot):
        raise ValidationError(field, "a slot name is [a-z][a-z0-9_]{0,31}")
    return slot


def check_template_name(name: str, field: str = "Upload-Metadata.template") -> str:
    if not TEMPLATE_NAME_RE.fullmatch(name):
        raise ValidationError(field, "not a template name")
    return name
