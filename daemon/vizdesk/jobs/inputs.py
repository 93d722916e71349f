"""A batch job's input files: uploads checked against the template's file slots before
submission, then moved into the job's own directory, as the user, when it is submitted.

The daemon never opens these files itself: the content of config slots (``format:
json|yaml``) is read through the user-file helper (:class:`~vizdesk.files.runner.UserFiles`,
running as the user), and so is every move. An upload feeds exactly one job: it is
claimed atomically (:meth:`~vizdesk.files.uploads.UploadStore.claim`), moved, then
forgotten; if the job cannot be submitted before its files moved, the claim is released.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..core.validate import ValidationError
from ..files.runner import UserFiles
from ..files.uploads import Upload, UploadStore
from .filecheck import FileRef, FileReport, check_files
from .templates import Template

if TYPE_CHECKING:
    from ..config import Config


@dataclass
class CheckedInputs:
    """Uploads that passed the template's checks, by slot (nothing claimed yet)."""

    report: FileReport
    uploads: dict[str, list[Upload]] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [u.id for ups in self.uploads.values() for u in ups]


class JobInputs:
    """Role: a job's input files. ``check`` a request's uploads against its template
    (the per-slot report; raises nothing for bad files), ``adopt`` checked uploads into a
    job directory (claim → move as the user → forget)."""

    def __init__(self, cfg: Config, files: UserFiles, uploads: UploadStore) -> None:
        self.cfg = cfg
        self.files = files
        self.uploads = uploads

    async def check(
        self, user: str, template: Template | None, wanted: Mapping[str, Sequence[str]]
    ) -> CheckedInputs:
        """The report for ``wanted`` (slot → upload ids) against ``template``'s slots.

        An id that is not the caller's upload is a 404 naming ``files.<slot>`` (the same
        for an unknown id and another user's); everything else is in the report."""
        if template is None:
            if wanted:
                raise ValidationError("files", "input files need a template with file slots")
            return CheckedInputs(FileReport())
        by_slot: dict[str, list[Upload]] = {}
        refs: dict[str, list[FileRef]] = {}
        uploads: dict[str, Upload] = {}
        for slot, ids in wanted.items():
            for uid in ids:
                up = await self.uploads.get_owned(user, uid, field=f"files.{slot}")
                uploads[up.id] = up
                by_slot.setdefault(slot, []).append(up)
                refs.setdefault(slot, []).append(
                    FileRef(id=up.id, name=up.filename, size=up.length, complete=up.complete)
                )

        async def read(ref: FileRef, limit: int) -> bytes:
            up = uploads[ref.id]
            _, data = await self.files.head(user, up.root, up.rel, limit)
            return data

        report = await check_files(template, refs, read, self.cfg)
        return CheckedInputs(report, by_slot)

    async def adopt(self, user: str, checked: CheckedInputs, workdir: str) -> dict[str, list[str]]:
        """Claim the checked uploads and move each into ``workdir`` under its file name,
        as the user; slot → file names. A failure before every file moved releases the
        claims of the files that did not move (and re-raises)."""
        if not checked.ids:
            return {}
        claimed = await self.uploads.claim(user, checked.ids)
        by_id = {u.id: u for u in claimed}
        moved: set[str] = set()
        try:
            out: dict[str, list[str]] = {}
            for slot, ups in checked.uploads.items():
                for up in ups:
                    u = by_id[up.id]
                    await self.files.move(user, u.root, u.rel, workdir, u.filename)
                    moved.add(u.id)
                    out.setdefault(slot, []).append(u.filename)
            return out
        except BaseException:
            await self.uploads.release(user, [i for i in by_id if i not in moved])
            raise
        finally:
            for uid in moved:
                await self.uploads.forget(by_id[uid])
