"""The default image flavour, TurboVNC + VirtualGL, built from the local source builds.

``sidroot.sh images vnc-turbovnc`` builds containers/vnc.def with ``VNC=turbovnc
VGL_TREES=...``: TurboVNC 3.3 and VirtualGL 3.1.4 as ``testbed/vgl.sh`` built them, copied
into the image at their prefix paths (the packagecloud repositories of the default
variant are not reachable here). The image lands in a catalog directory of its own, so
the TigerVNC tests of this tier keep seeing only their image. A daemon inside the root
that scans that directory starts a desktop from it: READY, and a frame through the proxy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import pytest_asyncio

from tests.container.sid import Sid, record_timing, script
from tests.container.test_container_session import SidDaemon, start_sid_daemon, wait_state
from tests.helpers.rfb_client import WsStream, connect_ws, full_framebuffer, handshake
from tests.helpers.vglbed import require_vgl_bed

CATALOG = "/srv/vizdesk/build/catalog-turbovnc"
SIF = f"{CATALOG}/vnc-turbovnc.sif"


@pytest.fixture(scope="module")
def turbovnc_image(sid: Sid) -> str:
    require_vgl_bed()  # the local builds (cached; skips only when they cannot be made)
    t0 = time.monotonic()
    res = script("images", "vnc-turbovnc", timeout=3600)
    if res.returncode != 0:
        pytest.fail(f"sidroot.sh images vnc-turbovnc failed:\n{res.stderr[-3000:]}")
    record_timing("sidroot images vnc-turbovnc (build or reuse)", time.monotonic() - t0)
    return SIF


@pytest.fixture(scope="module")
def turbovnc_daemon(sid_venv: Sid, turbovnc_image: str) -> Iterator[SidDaemon]:
    yield from start_sid_daemon(sid_venv, {"images": {"dirs": [CATALOG]}})


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


def test_turbovnc_image_passes_its_test_section_and_labels(sid: Sid, turbovnc_image: str) -> None:
    res = sid.run("apptainer", "test", *sid.unsquash(), turbovnc_image, user="alice")
    assert "vnc image test passed (turbovnc)" in res.stdout + res.stderr
    out = sid.run("apptainer", "inspect", "--labels", turbovnc_image, user="alice").stdout
    assert "org.vizdesk.vnc: turbovnc" in out
    version = sid.run(
        "apptainer", "exec", *sid.unsquash(), turbovnc_image, "/opt/TurboVNC/bin/Xvnc",
        "-version", user="alice", check=False,
    )  # fmt: skip
    assert "TurboVNC Server (Xvnc) 64-bit v3.3" in version.stdout + version.stderr
    source = sid.run(
        "apptainer", "exec", *sid.unsquash(), turbovnc_image, "cat", "/etc/vizdesk-vnc-source",
        user="alice",
    ).stdout  # fmt: skip
    assert source.strip() == "local builds"


async def test_turbovnc_desktop_from_the_image_reaches_ready_with_a_frame(
    http: aiohttp.ClientSession, turbovnc_daemon: SidDaemon, sid_venv: Sid
) -> None:
    d, sid = turbovnc_daemon, sid_venv
    async with http.get(f"{d.url}/api/v1/images", headers=d.headers("alice")) as r:
        images = (await r.json())["images"]
    vnc = next(i for i in images if i["kind"] == "viz")
    assert vnc["vnc"] == "turbovnc", images
    t0 = time.monotonic()
    async with http.post(
        f"{d.url}/api/v1/sessions",
        json={"image": vnc["id"], "geometry": "1024x768"},
        headers=d.headers("alice"),
    ) as r:
        created = await r.json()
        assert r.status == 201, created
    session_id = created["id"]
    try:
        ready = await wait_state(http, d, session_id, {"READY", "FAILED", "ENDED"}, timeout=120)
        assert ready["state"] == "READY", ready
        record_timing("container TurboVNC session POST to READY", time.monotonic() - t0)
        cmds = [cmd for _, _, cmd in sid.processes("alice")]
        assert any("Apptainer runtime parent: vnc-turbovnc.sif" in c for c in cmds), cmds
        assert any("/turbovnc/bin/Xvnc" in c or "TurboVNC/bin/Xvnc" in c for c in cmds), cmds

        async with http.post(
            f"{d.url}/api/v1/sessions/{session_id}/connect", headers=d.headers("alice")
        ) as r:
            ticket = await r.json()
            assert r.status == 200, ticket
        ws = await connect_ws(http, d.url + ticket["ws_path"])
        stream = WsStream(ws)
        init = await handshake(stream)
        assert init.security_types == [1]  # the proxy did the VNC auth with TurboVNC
        assert (init.width, init.height) == (1024, 768)
        covered, pixels = await full_framebuffer(stream, init)
        assert covered >= 1024 * 768
        deadline = time.monotonic() + 45
        while len(set(pixels)) <= 1 and time.monotonic() < deadline:
            await asyncio.sleep(1)
            covered, pixels = await full_framebuffer(stream, init, set_encodings=False)
        assert len(set(pixels)) > 1, "the TurboVNC desktop in the image never drew anything"
        await ws.close()
    finally:
        async with http.delete(
            f"{d.url}/api/v1/sessions/{session_id}", headers=d.headers("alice")
        ) as r:
            assert r.status in (202, 404, 409), await r.text()
    ended = await wait_state(http, d, session_id, {"ENDED", "FAILED"}, timeout=20)
    assert ended["state"] == "ENDED", ended
    deadline = time.monotonic() + 15
    while sid.processes("alice") and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not sid.processes("alice"), sid.processes("alice")
