"""What a failed user-file operation means to a caller: one :class:`FilesError` subclass
per helper exit status, each with its HTTP status and stable code."""

from __future__ import annotations

from ..core.errors import VizdeskError


class FilesError(VizdeskError):
    """A user-file operation failed; ``status``/``code`` say how (see subclasses)."""


class FileMissing(FilesError):
    """Not there, a symlink, or not a regular file: 404 (never which of them)."""

    def __init__(self, message: str = "no such file", field: str | None = None) -> None:
        super().__init__(404, "not_found", message, field=field)


class FileExists(FilesError):
    def __init__(self, message: str = "a file of that name exists") -> None:
        super().__init__(409, "file_exists", message)


class OffsetConflict(FilesError):
    """The write's offset is not the file's size (tus: 409); ``size`` is the file's."""

    def __init__(self, size: int | None) -> None:
        super().__init__(
            409,
            "offset_conflict",
            "Upload-Offset is not the upload's offset",
            field="Upload-Offset",
        )
        self.size = size


class ChecksumMismatch(FilesError):
    """The body did not match Upload-Checksum (tus checksum extension: 460); discarded."""

    def __init__(self) -> None:
        super().__init__(
            460,
            "checksum_mismatch",
            "the body does not match Upload-Checksum: discarded",
            field="Upload-Checksum",
        )


class FileTooLarge(FilesError):
    def __init__(self, message: str = "file too large", field: str | None = None) -> None:
        super().__init__(413, "file_too_large", message, field=field)


class FilePermission(FilesError):
    def __init__(self, message: str = "permission denied") -> None:
        super().__init__(403, "permission_denied", message)


class RangeNotSatisfiable(FilesError):
    """416 with ``Content-Range: bytes */SIZE``."""

    def __init__(self, size: int) -> None:
        super().__init__(
            416,
            "range_not_satisfiable",
            f"the range is outside the file ({size} bytes)",
            field="Range",
            headers={"Content-Range": f"bytes */{size}"},
        )
        self.size = size


class NoSpace(FilesError):
    def __init__(self) -> None:
        super().__init__(507, "insufficient_storage", "no space left (or the user's quota)")


class HelperFailed(FilesError):
    """The helper could not run, timed out or failed in an unexpected way (503)."""

    def __init__(self, message: str) -> None:
        super().__init__(503, "file_helper_failed", message)
