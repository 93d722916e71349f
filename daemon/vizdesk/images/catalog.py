"""Apptainer image catalog: find ``.sif`` images, read their metadata, classify, cache in Redis.

Images come from the directories in ``images.dirs`` (``*.sif``, not recursive) and from the
named paths in ``sessions.images``. Each file is read once with ``apptainer inspect --all``
(labels, apps, runscript, help) in an asyncio subprocess; the result is cached in the Redis
hash ``keys.image_catalog`` (one field per absolute path) together with the file's mtime and
size. A later listing re-stats the files and inspects again only a file whose mtime or size
changed, a new file, or an entry older than ``images.cache_ttl_seconds``; vanished files are
dropped. The hash itself expires after the TTL when nobody lists the catalog.

Kinds: the label ``org.vizdesk.kind`` (``viz``, ``compute`` or ``custom``) wins; without it
an image whose labels, apps or runscript name a VNC server or XFCE is ``viz``, any other
``compute``. Users refer to an image by its catalog id (first 12 hex digits of the SHA-256
of its absolute path) or its name (label ``org.vizdesk.name``, else the ``sessions.images``
key, else the file name without ``.sif``) — never by a path: :meth:`ImageCatalog.resolve`
refuses any reference with a ``/``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from ..config import Config
from ..contract.jsonsafe import MAX_JSON_DEPTH, json_depth, loads_bounded
from ..contract.keys import Keys

log = structlog.get_logger("vizdesk.images")

KINDS = ("viz", "compute", "custom")
LABEL_KIND = "org.vizdesk.kind"
LABEL_VNC = "org.vizdesk.vnc"
LABEL_NAME = "org.vizdesk.name"
LABEL_DESCRIPTION = "org.vizdesk.description"
CACHE_VERSION = 1  # bump when the cached entry's shape or the parsing changes
MAX_CONCURRENT_INSPECTS = 4
REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+:@-]{0,127}$")

# words that make an unlabelled image a desktop image
_VIZ_MARKERS = re.compile(
    r"\b(xvnc|vncserver|turbovnc|tigervnc|virtualgl|vglrun|startxfce4|xfce4?)\b", re.I
)


class InspectError(RuntimeError):
    """``apptainer inspect`` failed or printed something that is not its JSON."""


@dataclass(frozen=True)
class Image:
    """One catalog entry."""

    id: str
    name: str
    path: str
    kind: str  # viz | compute | custom
    vnc: str  # turbovnc | tigervnc | "" (unknown or not a desktop)
    description: str
    apps: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    size: int = 0
    mtime: float = 0.0

    def to_public(self) -> dict[str, Any]:
        """What any user may see (no path, no raw labels)."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "vnc": self.vnc,
            "description": self.description,
            "apps": list(self.apps),
        }

    def to_admin(self) -> dict[str, Any]:
        """Everything, for admins (path, labels, size, mtime)."""
        return asdict(self)


def image_id(path: str | os.PathLike[str]) -> str:
    """Stable catalog id: first 12 hex digits of the SHA-256 of the absolute path."""
    return hashlib.sha256(os.path.abspath(os.fspath(path)).encode()).hexdigest()[:12]


def valid_ref(ref: str) -> bool:
    """A catalog id or name: no path separators, no spaces, no leading dot, short."""
    return bool(REF_RE.match(ref)) and ".." not in ref


# --------------------------------------------------------------------------- parsing


def parse_inspect(raw: str | bytes) -> dict[str, Any]:
    """The ``data.attributes`` of ``apptainer inspect --all`` (or ``--json``) output.

    Tolerates leading noise (INFO/WARNING lines some versions print on stdout).
    """
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    start = text.find("{")
    if start < 0:
        raise InspectError("no JSON in apptainer inspect output")
    if json_depth(text[start:]) > MAX_JSON_DEPTH:
        raise InspectError(f"apptainer inspect JSON nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        doc, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise InspectError(f"apptainer inspect printed invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InspectError("apptainer inspect JSON is not an object")
    data = doc.get("data", doc)
    attrs = data.get("attributes", data) if isinstance(data, dict) else None
    if not isinstance(attrs, dict):
        raise InspectError("apptainer inspect JSON has no data.attributes")
    return attrs


def _str_labels(raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def classify(
    labels: Mapping[str, str], apps: list[str], runscript: str = "", helpfile: str = ""
) -> tuple[str, str]:
    """(kind, vnc flavour) from labels, app names and scripts."""
    kind = labels.get(LABEL_KIND, "").strip().lower()
    vnc = labels.get(LABEL_VNC, "").strip().lower()
    text = " ".join([*labels.keys(), *labels.values(), *apps, runscript, helpfile])
    if not kind:
        kind = "viz" if _VIZ_MARKERS.search(text) else "compute"
    elif kind not in KINDS:
        kind = "custom"
    if not vnc and kind == "viz":
        low = text.lower()
        if "turbovnc" in low:
            vnc = "turbovnc"
        elif "tigervnc" in low:
            vnc = "tigervnc"
    return kind, vnc


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:200]
    return ""


def image_from_inspect(
    path: str, attrs: Mapping[str, Any], *, size: int, mtime: float, seed_name: str = ""
) -> Image:
    """Build an :class:`Image` from the parsed inspect attributes of the file at ``path``."""
    labels = _str_labels(attrs.get("labels"))
    apps_raw = attrs.get("apps")
    apps = sorted(str(a) for a in apps_raw) if isinstance(apps_raw, Mapping) else []
    if isinstance(apps_raw, list):  # `--list-apps` style
        apps = sorted(str(a) for a in apps_raw)
    runscript = str(attrs.get("runscript") or "")
    helpfile = str(attrs.get("helpfile") or "")
    kind, vnc = classify(labels, apps, runscript, helpfile)
    name = labels.get(LABEL_NAME, "").strip() or seed_name or Path(path).name.removesuffix(".sif")
    description = (
        labels.get(LABEL_DESCRIPTION, "").strip()
        or labels.get("org.opencontainers.image.description", "").strip()
        or labels.get("org.opencontainers.image.title", "").strip()
        or _first_line(helpfile)
    )
    return Image(
        id=image_id(path),
        name=name,
        path=path,
        kind=kind,
        vnc=vnc,
        description=description,
        apps=apps,
        labels=labels,
        size=size,
        mtime=mtime,
    )


# --------------------------------------------------------------------------- catalog


@dataclass
class _Candidate:
    path: str
    seed_name: str
    size: int
    mtime_ns: int


def _scan(dirs: list[str], seeds: Mapping[str, str]) -> list[_Candidate]:
    """Stat every candidate file (runs in a thread: file system calls block)."""
    found: dict[str, _Candidate] = {}

    def add(path: str, seed: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        if not os.path.isfile(path) or path in found:
            return
        found[path] = _Candidate(path, seed, st.st_size, st.st_mtime_ns)

    for name, p in seeds.items():
        add(os.path.abspath(p), name)
    for d in dirs:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as exc:
            log.warning("images.dir_unreadable", dir=d, error=exc.strerror)
            continue
        for e in entries:
            if e.name.endswith(".sif") and not e.name.startswith("."):
                add(os.path.abspath(e.path), "")
    return list(found.values())


class ImageCatalog:
    """Role: the image catalog. ``await list()`` every usable image (cached in Redis,
    re-inspected when a file changes) and ``await resolve(ref)`` one by id or name;
    :func:`vizdesk.images.resolve.resolve_image` is how the domain uses it."""

    def __init__(self, cfg: Config, redis: Any, keys: Keys) -> None:
        self.cfg = cfg
        self.redis = redis
        self.keys = keys
        self.ttl = max(1, int(cfg.images.cache_ttl_seconds))
        self._lock = asyncio.Lock()
        self._sem = asyncio.Semaphore(MAX_CONCURRENT_INSPECTS)

    # -- public

    async def list(self, refresh: bool = False) -> builtins.list[Image]:
        """Every usable image: viz, compute, custom, each in configuration order (seeds, then
        ``images.dirs`` in order, files by name). ``refresh`` re-inspects every file."""
        async with self._lock:
            return await self._list(refresh)

    async def resolve(self, ref: str) -> Image | None:
        """The image whose id or name is ``ref``; None when unknown or ``ref`` is not a
        valid reference (anything with ``/`` — a path — is never accepted)."""
        if not isinstance(ref, str) or "/" in ref or not valid_ref(ref):
            return None
        images = await self.list()
        for img in images:
            if img.id == ref:
                return img
        for img in images:  # by name: the first in configuration order wins
            if img.name == ref:
                return img
        return None

    # -- internals

    async def _list(self, refresh: bool) -> builtins.list[Image]:
        candidates = await asyncio.to_thread(
            _scan, list(self.cfg.images.dirs), self.cfg.sessions.images
        )
        cached = await self._cached()
        now = time.time()
        stale = [c for c in candidates if refresh or not self._fresh(cached.get(c.path), c, now)]
        updates: dict[str, str] = {}
        if stale:
            results = await asyncio.gather(*(self._inspect_entry(c) for c in stale))
            for c, entry in zip(stale, results, strict=True):
                cached[c.path] = entry
                updates[c.path] = json.dumps(entry)
        present = {c.path for c in candidates}
        gone = [p for p in cached if p not in present]
        await self._store(updates, gone)
        images: builtins.list[Image] = []
        order = {c.path: i for i, c in enumerate(candidates)}
        for c in candidates:
            got = cached.get(c.path)
            if not got or got.get("error"):
                continue
            try:
                images.append(Image(**got["image"]))
            except (TypeError, KeyError):
                continue
        images.sort(key=lambda i: (KINDS.index(i.kind), order[i.path]))
        return images

    @staticmethod
    def _fresh(entry: dict[str, Any] | None, c: _Candidate, now: float) -> bool:
        """The cached entry still describes the file: same mtime and size, not expired."""
        return bool(
            entry
            and entry.get("v") == CACHE_VERSION
            and entry.get("mtime_ns") == c.mtime_ns
            and entry.get("size") == c.size
            and entry.get("seed_name", "") == c.seed_name
            and float(entry.get("expires_at", 0)) > now
        )

    async def _cached(self) -> dict[str, dict[str, Any]]:
        try:
            raw = await self.redis.hgetall(self.keys.image_catalog)
        except Exception as exc:  # Redis down: work without the cache
            log.warning("images.cache_read_failed", error=str(exc))
            return {}
        out: dict[str, dict[str, Any]] = {}
        for k, v in (raw or {}).items():
            key = k.decode() if isinstance(k, bytes) else str(k)
            try:
                entry = loads_bounded(v)
            except (ValueError, TypeError):
                continue
            if isinstance(entry, dict):
                out[key] = entry
        return out

    async def _store(self, updates: Mapping[str, str], gone: builtins.list[str]) -> None:
        if not updates and not gone:
            return
        key = self.keys.image_catalog
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                if gone:
                    pipe.hdel(key, *gone)
                if updates:
                    pipe.hset(key, mapping=dict(updates))
                pipe.expire(key, self.ttl)
                await pipe.execute()
        except Exception as exc:
            log.warning("images.cache_write_failed", error=str(exc))

    async def _inspect_entry(self, c: _Candidate) -> dict[str, Any]:
        now = time.time()
        entry: dict[str, Any] = {
            "v": CACHE_VERSION,
            "mtime_ns": c.mtime_ns,
            "size": c.size,
            "seed_name": c.seed_name,
            "inspected_at": now,
            "expires_at": now + self.ttl,
        }
        try:
            attrs = await self.inspect(c.path)
            img = image_from_inspect(
                c.path, attrs, size=c.size, mtime=c.mtime_ns / 1e9, seed_name=c.seed_name
            )
            entry["image"] = asdict(img)
        except InspectError as exc:
            log.warning("images.inspect_failed", path=c.path, error=str(exc))
            entry["error"] = str(exc)[:500]
        return entry

    async def inspect(self, path: str) -> dict[str, Any]:
        """``apptainer inspect --all PATH`` → its ``data.attributes``."""
        async with self._sem:
            try:
                out = await self._run(self.cfg.images.apptainer, "inspect", "--all", path)
            except InspectError as exc:
                if "unknown flag" not in str(exc):
                    raise
                # older Apptainer/Singularity without --all: labels + app list
                out = await self._run(
                    self.cfg.images.apptainer, "inspect", "--json", "--labels", path
                )
                attrs = parse_inspect(out)
                apps_out = await self._run(
                    self.cfg.images.apptainer, "inspect", "--list-apps", path
                )
                attrs["apps"] = [a for a in apps_out.decode().split() if a]
                return attrs
        return parse_inspect(out)

    async def _run(self, *argv: str) -> bytes:
        timeout = self.cfg.images.inspect_timeout_seconds
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise InspectError(f"cannot run {argv[0]}: {exc.strerror}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise InspectError(f"{argv[0]} inspect timed out after {timeout:g}s") from None
        if proc.returncode != 0:
            msg = err.decode("utf-8", "replace").strip().splitlines()
            raise InspectError(
                f"{argv[0]} inspect exited {proc.returncode}: {msg[-1] if msg else ''}"
            )
        return out
