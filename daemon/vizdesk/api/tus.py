"""Header grammar of tus 1.0 (core, creation, checksum, expiration) and of HTTP ``Range``:
pure parsing, no I/O. Every refusal is a 400 naming the header."""

from __future__ import annotations

import base64
import binascii
import re
from email.utils import formatdate

from ..core.validate import ValidationError

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination,checksum,expiration"
CHECKSUM_ALGORITHMS = ("sha1", "md5", "sha256")
OFFSET_TYPE = "application/offset+octet-stream"
MAX_METADATA_PAIRS = 32
_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DIGITS_RE = re.compile(r"^[0-9]{1,19}$")
_RANGE_RE = re.compile(r"^bytes=([0-9]{0,19})-([0-9]{0,19})$")


def parse_int(value: str | None, header: str) -> int:
    """A non-negative integer header (ASCII digits only); 400 naming ``header``."""
    if value is None:
        raise ValidationError(header, f"the {header} header is required", code="missing_header")
    value = value.strip()
    if not _DIGITS_RE.fullmatch(value):
        raise ValidationError(header, f"{header} must be a non-negative integer")
    return int(value)


def parse_metadata(value: str | None) -> dict[str, str | None]:
    """``Upload-Metadata``: comma-separated ``key base64(value)`` pairs (a key alone has no
    value). Keys unique and ASCII; values base64 of UTF-8 text."""
    out: dict[str, str | None] = {}
    if value is None or not value.strip():
        return out
    pairs = value.split(",")
    if len(pairs) > MAX_METADATA_PAIRS:
        raise ValidationError("Upload-Metadata", f"at most {MAX_METADATA_PAIRS} metadata pairs")
    for pair in pairs:
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not _KEY_RE.fullmatch(parts[0]):
            raise ValidationError("Upload-Metadata", "each pair is 'key base64value'")
        key = parts[0]
        if key in out:
            raise ValidationError("Upload-Metadata", f"the key {key!r} is given twice")
        if len(parts) == 1:
            out[key] = None
            continue
        try:
            out[key] = base64.b64decode(parts[1], validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise ValidationError(
                f"Upload-Metadata.{key}", "the value is not base64 of UTF-8 text"
            ) from None
    return out


def encode_metadata(values: dict[str, str | None]) -> str:
    parts = []
    for key, value in values.items():
        if value is None:
            parts.append(key)
        else:
            parts.append(f"{key} {base64.b64encode(value.encode()).decode()}")
    return ",".join(parts)


def parse_checksum(value: str | None) -> str | None:
    """``Upload-Checksum: ALGO BASE64`` → ``"ALGO:BASE64"`` for the helper (None when
    absent); 400 for an unsupported algorithm or a value that is not base64."""
    if value is None:
        return None
    algo, _, digest = value.strip().partition(" ")
    if algo not in CHECKSUM_ALGORITHMS:
        raise ValidationError(
            "Upload-Checksum",
            f"unsupported checksum algorithm {algo[:20]!r}: one of {','.join(CHECKSUM_ALGORITHMS)}",
            code="unsupported_checksum_algorithm",
        )
    try:
        base64.b64decode(digest, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("Upload-Checksum", "the checksum is not base64") from None
    return f"{algo}:{digest}"


def parse_range(value: str | None) -> str | None:
    """One byte range of a ``Range`` header as ``A-B``, ``A-`` or ``-N`` for the helper.

    None (serve the whole file, 200) when absent, for another unit, for several ranges
    and for a syntactically invalid one: RFC 9110 lets a server ignore Range. A range whose
    end is before its start is invalid syntax as well, hence ignored.
    """
    if value is None:
        return None
    m = _RANGE_RE.fullmatch(value.strip().replace(" ", ""))
    if m is None:
        return None
    first, last = m.groups()
    if not first and not last:
        return None
    if first and last and int(last) < int(first):
        return None
    return f"{first}-{last}"


def http_date(ts: float) -> str:
    """RFC 9110 date (``Upload-Expires``)."""
    return formatdate(ts, usegmt=True)
