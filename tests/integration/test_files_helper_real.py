"""The user-file helper, for real: run as alice/bob through ``runuser`` by :class:`UserFiles`.

Needs root (to become the users) and the accounts alice and bob (the test bed creates
them); no Redis, no Slurm. Every symlink / hard link / rename trick is planted for real and
the test asserts that no byte of the target ever comes back.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import pwd
import secrets
import shutil
import stat
import threading
import zipfile
from collections.abc import AsyncIterator, Iterator
from io import BytesIO

import pytest

from vizdesk.files.errors import (
    ChecksumMismatch,
    FileExists,
    FileMissing,
    FilePermission,
    OffsetConflict,
    RangeNotSatisfiable,
)
from vizdesk.files.runner import UserFiles


def _user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


ALICE, BOB = _user("alice"), _user("bob")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or ALICE is None or BOB is None or shutil.which("runuser") is None,
    reason="needs root, runuser and the users alice and bob (the test bed creates them)",
)
SECRET = b"TOP-SECRET-CONTENT-NEVER-SERVED"


@pytest.fixture(scope="module")
def files() -> UserFiles:
    return UserFiles(["runuser", "-u", "{user}", "--"], None, 30.0)


def as_user(path: str, who: pwd.struct_passwd) -> None:
    os.lchown(path, who.pw_uid, who.pw_gid)


@pytest.fixture
def tree() -> Iterator[dict[str, str]]:
    """alice's ``base`` with ``root`` (the confined directory) and ``outside`` beside it
    (readable by alice: confinement, not permissions, must keep it out); bob's dir."""
    assert ALICE is not None and BOB is not None
    tag = secrets.token_hex(4)
    base = os.path.join(ALICE.pw_dir, f"vizdesk-it-{tag}")
    bob_dir = os.path.join(BOB.pw_dir, f"vizdesk-it-{tag}")
    paths = {
        "base": base,
        "root": os.path.join(base, "root"),
        "outside": os.path.join(base, "outside"),
        "bob": bob_dir,
    }
    for key in ("base", "root", "outside"):
        os.mkdir(paths[key], 0o700)
        as_user(paths[key], ALICE)
    secret = os.path.join(paths["outside"], "secret.txt")
    with open(secret, "wb") as f:
        f.write(SECRET)
    as_user(secret, ALICE)
    os.mkdir(bob_dir, 0o755)
    as_user(bob_dir, BOB)
    bob_file = os.path.join(bob_dir, "bob.txt")
    with open(bob_file, "wb") as f:
        f.write(SECRET)
    os.chmod(bob_file, 0o644)  # world-readable: only confinement keeps alice's reads out
    as_user(bob_file, BOB)
    yield paths
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(bob_dir, ignore_errors=True)


async def body(data: bytes, piece: int = 1 << 16) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]
        await asyncio.sleep(0)


def plant(link: str, target: str) -> None:
    assert ALICE is not None
    os.symlink(target, link)
    as_user(link, ALICE)


async def read_all(
    files: UserFiles, user: str, root: str, rel: str, spec: str | None = None
) -> bytes:
    async with files.read(user, root, rel, spec) as dl:
        return b"".join([c async for c in dl.chunks()])


async def test_write_resume_and_read_back(files: UserFiles, tree: dict[str, str]) -> None:
    root = tree["root"]
    data = os.urandom(3 << 20) + b"tail"
    await files.create("alice", root, "up")
    first = await files.write("alice", root, "up", 0, 1 << 20, body(data[: 1 << 20]))
    assert first.offset == 1 << 20 and first.complete
    with pytest.raises(OffsetConflict) as conflict:  # not where the file is
        await files.write("alice", root, "up", 5, 10, body(b"x" * 10))
    assert conflict.value.size == 1 << 20
    rest = await files.write(
        "alice", root, "up", 1 << 20, len(data) - (1 << 20), body(data[1 << 20 :]), fsync=True
    )
    assert rest.offset == len(data) and rest.complete
    st = os.lstat(os.path.join(root, "up"))
    assert ALICE is not None and st.st_uid == ALICE.pw_uid  # the user's own file...
    assert stat.S_IMODE(st.st_mode) == 0o600  # ...for the user only
    assert (
        hashlib.sha256(await read_all(files, "alice", root, "up")).digest()
        == hashlib.sha256(data).digest()
    )
    assert await read_all(files, "alice", root, "up", "-4") == b"tail"
    assert await read_all(files, "alice", root, "up", "10-19") == data[10:20]
    with pytest.raises(RangeNotSatisfiable) as bad:
        await read_all(files, "alice", root, "up", f"{len(data)}-")
    assert bad.value.headers["Content-Range"] == f"bytes */{len(data)}"
    assert (await files.size("alice", root, "up")).size == len(data)


async def test_an_interrupted_body_keeps_what_arrived(
    files: UserFiles, tree: dict[str, str]
) -> None:
    root = tree["root"]
    stop = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        yield b"b" * 1000
        await asyncio.sleep(0.2)
        stop.set()  # the client went away mid-body
        await asyncio.sleep(30)
        yield b"never"

    result = await files.write("alice", root, "cut", 0, 10_000, slow(), stop=stop)
    assert (result.offset, result.complete) == (2000, False)
    assert (await files.size("alice", root, "cut")).size == 2000


async def test_checksum_mismatch_discards_the_body(files: UserFiles, tree: dict[str, str]) -> None:
    root = tree["root"]
    await files.write("alice", root, "sum", 0, 4, body(b"head"))
    good = b"good body"
    wrong = "sha1:" + base64.b64encode(hashlib.sha1(b"something else").digest()).decode()
    with pytest.raises(ChecksumMismatch):
        await files.write("alice", root, "sum", 4, len(good), body(good), checksum=wrong)
    assert (await files.size("alice", root, "sum")).size == 4  # nothing of it kept
    right = "sha256:" + base64.b64encode(hashlib.sha256(good).digest()).decode()
    result = await files.write("alice", root, "sum", 4, len(good), body(good), checksum=right)
    assert result.offset == 4 + len(good)
    # A body cut short cannot match its checksum: discarded as well.
    short = "md5:" + base64.b64encode(hashlib.md5(b"0123456789").digest()).decode()
    with pytest.raises(ChecksumMismatch):
        await files.write("alice", root, "sum", result.offset, 10, body(b"01234"), checksum=short)
    assert (await files.size("alice", root, "sum")).size == result.offset


async def test_symlinks_are_never_followed(files: UserFiles, tree: dict[str, str]) -> None:
    root = tree["root"]
    plant(os.path.join(root, "shadow"), "/etc/shadow")
    plant(os.path.join(root, "secret"), os.path.join(tree["outside"], "secret.txt"))
    plant(os.path.join(root, "bobs"), tree["bob"])
    plant(os.path.join(root, "up"), "../..")
    for rel in ("shadow", "secret", "bobs/bob.txt", "up/root/../outside/secret.txt", "up"):
        with pytest.raises(FileMissing):
            await read_all(files, "alice", root, rel)
        with pytest.raises(FileMissing):
            await files.size("alice", root, rel)
    with pytest.raises(FileMissing):  # never writes through one either
        await files.write("alice", root, "secret", len(SECRET), 3, body(b"xyz"))
    with pytest.raises(FileMissing):
        await files.write("alice", root, "bobs/new", 0, 3, body(b"xyz"))
    with open(os.path.join(tree["outside"], "secret.txt"), "rb") as f:
        assert f.read() == SECRET
    listing = await files.list("alice", root)
    kinds = {e.path: e.type for e in listing.entries}
    assert kinds == {"shadow": "symlink", "secret": "symlink", "bobs": "symlink", "up": "symlink"}
    async with files.zip("alice", root) as dl:
        archive = b"".join([c async for c in dl.chunks()])
    assert zipfile.ZipFile(BytesIO(archive)).namelist() == []
    assert SECRET not in archive
    # "..", absolute paths, empty components: refused before anything is opened
    for rel in ("../outside/secret.txt", "/etc/shadow", "a//b", "./secret", ""):
        with pytest.raises(FileMissing):
            await files.size("alice", root, rel)


async def test_a_symlinked_root_is_not_entered(files: UserFiles, tree: dict[str, str]) -> None:
    link = os.path.join(tree["base"], "rootlink")
    plant(link, tree["outside"])
    with pytest.raises(FileMissing):
        await read_all(files, "alice", link, "secret.txt")
    with pytest.raises(FileMissing):
        await files.mkdir("alice", link)
    with pytest.raises(FileMissing):
        await files.list("alice", link)


async def test_hard_link_to_a_root_file_is_refused_by_the_kernel(
    files: UserFiles, tree: dict[str, str]
) -> None:
    """A hard link in alice's directory to a file only root may read (planted by root
    here: alice herself may not create it, protected_hardlinks): the helper runs as
    alice, so the kernel refuses the open; nothing is ever read as root."""
    private = os.path.join(tree["base"], "root-only")
    with open(private, "wb") as f:
        f.write(SECRET)
    os.chmod(private, 0o600)  # root's
    os.link(private, os.path.join(tree["root"], "hard"))
    with pytest.raises(FilePermission):
        await read_all(files, "alice", tree["root"], "hard")
    with pytest.raises(FilePermission):
        await files.write("alice", tree["root"], "hard", len(SECRET), 1, body(b"x"))
    async with files.zip("alice", tree["root"]) as dl:
        archive = b"".join([c async for c in dl.chunks()])
    assert SECRET not in archive


async def test_other_users_directories_are_theirs(files: UserFiles, tree: dict[str, str]) -> None:
    await files.write("alice", tree["root"], "mine", 0, 4, body(b"mine"))
    os.chmod(tree["root"], 0o700)
    with pytest.raises((FilePermission, FileMissing)):
        await read_all(files, "bob", tree["root"], "mine")
    with pytest.raises((FilePermission, FileMissing)):
        await files.write("bob", tree["root"], "bobs-file", 0, 1, body(b"x"))
    with pytest.raises((FilePermission, FileMissing)):
        await files.remove("bob", tree["root"], "mine")
    assert os.path.exists(os.path.join(tree["root"], "mine"))


async def test_move_never_overwrites(files: UserFiles, tree: dict[str, str]) -> None:
    root, dst = tree["root"], os.path.join(tree["base"], "job")
    await files.mkdir("alice", dst)
    assert ALICE is not None and os.lstat(dst).st_uid == ALICE.pw_uid
    await files.write("alice", root, "a", 0, 3, body(b"aaa"))
    await files.write("alice", root, "b", 0, 3, body(b"bbb"))
    await files.move("alice", root, "a", dst, "mesh.msh")
    with pytest.raises(FileExists):
        await files.move("alice", root, "b", dst, "mesh.msh")
    assert await read_all(files, "alice", dst, "mesh.msh") == b"aaa"
    assert await read_all(files, "alice", root, "b") == b"bbb"
    plant(os.path.join(root, "link"), os.path.join(tree["outside"], "secret.txt"))
    with pytest.raises(FileMissing):
        await files.move("alice", root, "link", dst, "stolen")


async def test_rmtree_does_not_follow_links_out(files: UserFiles, tree: dict[str, str]) -> None:
    root = tree["root"]
    await files.mkdir("alice", root, "deep/er")
    await files.write("alice", root, "deep/er/f", 0, 1, body(b"f"))
    plant(os.path.join(root, "deep", "out"), tree["outside"])
    await files.rmtree("alice", root)
    assert not os.path.exists(root)
    assert os.path.exists(os.path.join(tree["outside"], "secret.txt"))


async def test_a_component_swapped_for_a_symlink_never_leaks(
    files: UserFiles, tree: dict[str, str]
) -> None:
    """Race: ``sub`` flips between a real directory and a symlink to a directory alice
    may read outside the root, while the helper reads ``sub/f`` again and again."""
    root = tree["root"]
    await files.mkdir("alice", root, "sub")
    await files.write("alice", root, "sub/f", 0, 2, body(b"OK"))
    with open(os.path.join(tree["outside"], "f"), "wb") as f:
        f.write(SECRET)
    sub, parked, link = (os.path.join(root, n) for n in ("sub", "parked", "link"))
    plant(link, tree["outside"])
    done = threading.Event()

    def flip() -> None:
        while not done.is_set():
            os.rename(sub, parked)
            os.rename(link, sub)
            os.rename(sub, link)
            os.rename(parked, sub)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    seen: set[bytes] = set()
    try:
        for _ in range(40):
            try:
                seen.add(await read_all(files, "alice", root, "sub/f"))
            except FileMissing:
                seen.add(b"<missing>")
    finally:
        done.set()
        flipper.join()
    assert SECRET not in seen
    assert seen <= {b"OK", b"<missing>"}
