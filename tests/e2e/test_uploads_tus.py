"""tus uploads against the real daemon, with tuspy (a client nobody here wrote).

A 1 GiB file uploaded in 64 MiB checksummed chunks, stopped half way, resumed by a NEW
uploader from the stored URL; a PATCH cut mid-body on a raw socket, resumed from the
offset HEAD reports; the staged file's SHA-256 read back as alice equals the source's.
bob sees none of it (404); quota and size limits refuse with 413 before a byte is written.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import pwd
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tusclient import client as tus_client

from tests.conftest import Daemon, Testbed, start_daemon, stop_daemon
from vizdesk.files.runner import UserFiles

pytestmark = pytest.mark.e2e
MiB = 1 << 20
GiB = 1 << 30
TUS = {"Tus-Resumable": "1.0.0"}


def meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """1 GiB of incompressible data (a random MiB with a counter per block), its SHA-256."""
    path = tmp_path_factory.mktemp("tus") / "big.bin"
    block = bytearray(os.urandom(MiB))
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for i in range(GiB // MiB):
            block[:8] = i.to_bytes(8, "big")
            digest.update(block)
            f.write(block)
    return path, digest.hexdigest()


@pytest.fixture(scope="module")
def files() -> UserFiles:
    return UserFiles(["runuser", "-u", "{user}", "--"], None, 60.0)


def staging_dir(user: str, cfg: Any) -> str:
    home = pwd.getpwnam(user).pw_dir
    return str(cfg.uploads.dir).replace("{home}", home).replace("{user}", user)


async def sha256_as(files: UserFiles, user: str, root: str, rel: str) -> str:
    digest = hashlib.sha256()
    async with files.read(user, root, rel) as dl:
        async for chunk in dl.chunks():
            digest.update(chunk)
    return digest.hexdigest()


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


async def test_options_advertise_tus(http: aiohttp.ClientSession, daemon: Daemon) -> None:
    async with http.options(f"{daemon.url}/api/v1/uploads") as r:
        assert r.status == 204
        assert r.headers["Tus-Version"] == "1.0.0"
        assert set(r.headers["Tus-Extension"].split(",")) >= {
            "creation",
            "termination",
            "checksum",
            "expiration",
        }
        assert "sha1" in r.headers["Tus-Checksum-Algorithm"].split(",")
        assert int(r.headers["Tus-Max-Size"]) == daemon.cfg.uploads.max_file_bytes


async def test_tuspy_1gib_stopped_half_way_and_resumed(
    daemon: Daemon, big_file: tuple[Path, str], files: UserFiles, http: aiohttp.ClientSession
) -> None:
    path, want = big_file
    endpoint = f"{daemon.url}/api/v1/uploads"
    first = tus_client.TusClient(endpoint, headers=daemon.headers("alice")).uploader(
        str(path),
        chunk_size=64 * MiB,
        upload_checksum=True,
        metadata={"filename": "mesh.bin", "slot": "mesh"},
        retries=0,
    )
    started = time.monotonic()
    await asyncio.to_thread(first.upload, GiB // 2)  # then the "client" is gone
    assert first.offset == GiB // 2
    url = first.url
    assert url is not None
    async with http.head(url, headers={**daemon.headers("alice"), **TUS}) as r:
        assert r.status == 200
        assert int(r.headers["Upload-Offset"]) == GiB // 2
        assert int(r.headers["Upload-Length"]) == GiB
        assert r.headers["Cache-Control"] == "no-store"
        assert "Upload-Expires" in r.headers

    # A new uploader, knowing only the URL, asks the server's offset and goes on from it.
    second = tus_client.TusClient(endpoint, headers=daemon.headers("alice")).uploader(
        str(path), chunk_size=64 * MiB, upload_checksum=True, url=url, retries=0
    )
    assert second.offset == GiB // 2
    await asyncio.to_thread(second.upload)
    elapsed = time.monotonic() - started
    uid = upload_id(url)
    async with http.get(f"{daemon.url}/api/v1/uploads/{uid}", headers=daemon.headers("alice")) as r:
        view = await r.json()
    assert (view["state"], view["offset"], view["length"]) == ("complete", GiB, GiB)
    assert (view["filename"], view["slot"]) == ("mesh.bin", "mesh")
    root = staging_dir("alice", daemon.cfg)
    staged = os.lstat(os.path.join(root, uid))
    assert staged.st_uid == pwd.getpwnam("alice").pw_uid and staged.st_mode & 0o077 == 0
    assert await sha256_as(files, "alice", root, uid) == want
    print(f"tuspy 1 GiB in {elapsed:.1f}s ({GiB / MiB / elapsed:.0f} MiB/s)")

    # bob: the same 404 as for an unknown upload, for every method
    bob = {**daemon.headers("bob"), **TUS}
    async with http.head(url, headers=bob) as r:
        assert r.status == 404
    async with http.get(url, headers=bob) as r:
        assert r.status == 404
    async with http.patch(
        url,
        data=b"x",
        headers={
            **bob,
            "Upload-Offset": str(GiB),
            "Content-Type": "application/offset+octet-stream",
        },
    ) as r:
        assert r.status == 404
    async with http.delete(url, headers=bob) as r:
        assert r.status == 404
    async with http.get(f"{daemon.url}/api/v1/uploads", headers=bob) as r:
        assert uid not in {u["id"] for u in (await r.json())["uploads"]}

    async with http.delete(url, headers={**daemon.headers("alice"), **TUS}) as r:
        assert r.status == 204 and r.headers["Tus-Resumable"] == "1.0.0"
    assert not os.path.exists(os.path.join(root, uid))
    async with http.head(url, headers={**daemon.headers("alice"), **TUS}) as r:
        assert r.status == 404


async def create(http: aiohttp.ClientSession, daemon: Daemon, length: int, **m: str) -> str:
    headers = {
        **daemon.headers("alice"),
        **TUS,
        "Upload-Length": str(length),
        "Upload-Metadata": meta(**(m or {"filename": "f.bin"})),
    }
    async with http.post(f"{daemon.url}/api/v1/uploads", headers=headers) as r:
        assert r.status == 201, await r.text()
        assert r.headers["Tus-Resumable"] == "1.0.0"
        return f"{daemon.url}{r.headers['Location']}"


async def head_offset(http: aiohttp.ClientSession, daemon: Daemon, url: str) -> int:
    async with http.head(url, headers={**daemon.headers("alice"), **TUS}) as r:
        assert r.status == 200
        return int(r.headers["Upload-Offset"])


async def test_a_patch_cut_mid_body_resumes_from_what_arrived(
    daemon: Daemon, big_file: tuple[Path, str], files: UserFiles, http: aiohttp.ClientSession
) -> None:
    path, _ = big_file
    length = 256 * MiB
    url = await create(http, daemon, length)
    data = path.read_bytes()[:length]
    target = url.removeprefix(daemon.url)
    host, port = daemon.url.removeprefix("http://").split(":")
    head = (
        f"PATCH {target} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {daemon.token('alice')}\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()

    def cut() -> None:
        with socket.create_connection((host, int(port))) as s:
            s.sendall(head)
            s.sendall(data[: 100 * MiB])  # then the connection dies
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    await asyncio.to_thread(cut)
    deadline = time.monotonic() + 20
    offset = -1
    while time.monotonic() < deadline:  # the interrupted request settles (lock released)
        offset = await head_offset(http, daemon, url)
        async with http.patch(
            url,
            data=b"",
            headers={
                **daemon.headers("alice"),
                **TUS,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            },
        ) as r:
            if r.status == 204:
                break
        await asyncio.sleep(0.2)
    assert 0 < offset <= 100 * MiB  # what arrived is kept, nothing more is claimed
    async with http.patch(
        url,
        data=data[offset:],
        headers={
            **daemon.headers("alice"),
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
        },
    ) as r:
        assert r.status == 204, await r.text()
        assert int(r.headers["Upload-Offset"]) == length
    uid = upload_id(url)
    root = staging_dir("alice", daemon.cfg)
    assert await sha256_as(files, "alice", root, uid) == hashlib.sha256(data).hexdigest()
    async with http.delete(url, headers={**daemon.headers("alice"), **TUS}) as r:
        assert r.status == 204


async def test_protocol_refusals(daemon: Daemon, http: aiohttp.ClientSession) -> None:
    url = await create(http, daemon, 10, filename="a.txt")
    alice = {**daemon.headers("alice"), **TUS}
    patch = {**alice, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    async with http.patch(url, data=b"0123456789", headers={**patch, "Tus-Resumable": "0.2"}) as r:
        assert r.status == 412 and r.headers["Tus-Version"] == "1.0.0"
    async with http.patch(url, data=b"01", headers={**patch, "Content-Type": "text/plain"}) as r:
        assert r.status == 415
    async with http.patch(url, data=b"01", headers={**patch, "Upload-Offset": "3"}) as r:
        assert r.status == 409
        assert (await r.json())["error"]["field"] == "Upload-Offset"
    bad_sum = "sha1 " + base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    async with http.patch(url, data=b"01234", headers={**patch, "Upload-Checksum": bad_sum}) as r:
        assert r.status == 460
    assert await head_offset(http, daemon, url) == 0  # the mismatching body is gone
    async with http.patch(
        url, data=b"01234", headers={**patch, "Upload-Checksum": "crc32 AAAA"}
    ) as r:
        assert r.status == 400
    good = "sha256 " + base64.b64encode(hashlib.sha256(b"01234").digest()).decode()
    async with http.patch(url, data=b"01234", headers={**patch, "Upload-Checksum": good}) as r:
        assert r.status == 204 and r.headers["Upload-Offset"] == "5"
    async with http.patch(url, data=b"0123456789", headers={**patch, "Upload-Offset": "5"}) as r:
        assert r.status == 413  # longer than the rest of the upload
    for header, value, field in (
        ("Upload-Metadata", meta(filename="../etc/passwd"), "Upload-Metadata.filename"),
        ("Upload-Metadata", meta(slot="x"), "Upload-Metadata.filename"),
        ("Upload-Metadata", "filename !!notbase64", "Upload-Metadata.filename"),
        ("Upload-Length", "-1", "Upload-Length"),
    ):
        headers = {
            **alice,
            "Upload-Length": "1",
            "Upload-Metadata": meta(filename="ok"),
            header: value,
        }
        async with http.post(f"{daemon.url}/api/v1/uploads", headers=headers) as r:
            assert r.status == 400, (header, value)
            assert (await r.json())["error"]["field"] == field
    async with http.delete(url, headers=alice) as r:
        assert r.status == 204


@pytest.fixture(scope="module")
def small_daemon(testbed: Testbed) -> Iterator[Daemon]:
    tag = secrets.token_hex(3)
    d = start_daemon(
        testbed,
        "uploads-small",
        {
            "uploads": {
                "dir": f"{{home}}/vizdesk-jobs/.uploads-test-{tag}",
                "max_file_bytes": MiB,
                "quota_bytes": 3 * MiB,
                "max_uploads_per_user": 4,
            }
        },
    )
    yield d
    stop_daemon(d)
    for user in ("alice", "bob"):
        shutil.rmtree(staging_dir(user, d.cfg), ignore_errors=True)


async def test_quota_and_size_refused_before_any_byte(
    small_daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    d = small_daemon
    root = staging_dir("alice", d.cfg)

    def staged() -> set[str]:
        return set(os.listdir(root)) if os.path.isdir(root) else set()

    async def post(length: int) -> aiohttp.ClientResponse:
        headers = {
            **d.headers("alice"),
            **TUS,
            "Upload-Length": str(length),
            "Upload-Metadata": meta(filename="in.dat"),
        }
        async with http.post(f"{d.url}/api/v1/uploads", headers=headers) as r:
            await r.read()
            return r

    r = await post(MiB + 1)
    assert r.status == 413 and staged() == set()
    async with http.post(
        f"{d.url}/api/v1/uploads",
        headers={
            **d.headers("alice"),
            **TUS,
            "Upload-Length": str(2 * MiB),
            "Upload-Metadata": meta(filename="x"),
        },
    ) as resp:
        body = await resp.json()
    assert resp.status == 413
    assert body["error"]["code"] == "file_too_large" and body["error"]["field"] == "Upload-Length"
    for _ in range(3):
        assert (await post(MiB)).status == 201
    before = staged()
    assert len(before) == 3
    async with http.post(
        f"{d.url}/api/v1/uploads",
        headers={
            **d.headers("alice"),
            **TUS,
            "Upload-Length": str(MiB),
            "Upload-Metadata": meta(filename="x"),
        },
    ) as resp:
        body = await resp.json()
    assert resp.status == 413 and body["error"]["code"] == "quota_exceeded"
    assert staged() == before  # refused before anything was written
    assert (await post(0)).status == 201  # within the bytes; the 4th upload
    async with http.post(
        f"{d.url}/api/v1/uploads",
        headers={
            **d.headers("alice"),
            **TUS,
            "Upload-Length": "0",
            "Upload-Metadata": meta(filename="x"),
        },
    ) as resp:
        body = await resp.json()
    assert resp.status == 413 and body["error"]["code"] == "too_many_uploads"
    # bob has his own quota
    async with http.post(
        f"{d.url}/api/v1/uploads",
        headers={
            **d.headers("bob"),
            **TUS,
            "Upload-Length": str(MiB),
            "Upload-Metadata": meta(filename="x"),
        },
    ) as resp:
        assert resp.status == 201


async def test_upload_events_reach_their_owner_only(
    daemon: Daemon, http: aiohttp.ClientSession
) -> None:
    async def first_upload_event(user: str, groups: list[str], query: str) -> str | None:
        async with http.get(
            f"{daemon.url}/api/v1/events{query}", headers=daemon.headers(user, groups)
        ) as r:
            assert r.status == 200
            try:
                async with asyncio.timeout(4):
                    async for line in r.content:
                        if line.startswith(b"event: upload"):
                            return (await r.content.readline()).decode()
            except TimeoutError:
                return None
        return None

    alice_task = asyncio.create_task(first_upload_event("alice", [], ""))
    admin_task = asyncio.create_task(first_upload_event("bob", ["vizdesk-admins"], "?all=true"))
    await asyncio.sleep(0.5)
    url = await create(http, daemon, 3, filename="ev.txt")
    got_alice, got_admin = await alice_task, await admin_task
    assert got_alice is not None and upload_id(url) in got_alice
    assert got_admin is None
    async with http.delete(url, headers={**daemon.headers("alice"), **TUS}) as r:
        assert r.status == 204


async def test_expired_uploads_are_swept_file_and_record(
    testbed: Testbed, http: aiohttp.ClientSession
) -> None:
    tag = secrets.token_hex(3)
    d = start_daemon(testbed, "uploads-expiring", {"uploads": {
        "dir": f"{{home}}/vizdesk-jobs/.uploads-exp-{tag}",
        "expire_hours": 3 / 3600, "cleanup_interval_seconds": 0.5,
    }})  # fmt: skip
    try:
        root = staging_dir("alice", d.cfg)
        url = await create(http, d, 10, filename="soon-gone.bin")
        async with http.patch(url, data=b"12345", headers={
            **d.headers("alice"), **TUS, "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        }) as r:  # fmt: skip
            assert r.status == 204
        uid = upload_id(url)
        assert os.path.exists(os.path.join(root, uid))
        async with http.head(url, headers={**d.headers("alice"), **TUS}) as r:
            assert r.status == 200 and "Upload-Expires" in r.headers
        deadline = time.monotonic() + 20
        gone = False
        while time.monotonic() < deadline and not gone:
            await asyncio.sleep(0.5)
            async with http.get(f"{d.url}/api/v1/uploads/{uid}", headers=d.headers("alice")) as r:
                gone = r.status == 404
        assert gone, "the expired upload is still listed"
        assert not os.path.exists(os.path.join(root, uid))  # removed by the helper as alice
        async with http.head(url, headers={**d.headers("alice"), **TUS}) as r:
            assert r.status == 404
    finally:
        stop_daemon(d)
        shutil.rmtree(staging_dir("alice", d.cfg), ignore_errors=True)
