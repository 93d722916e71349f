"""Nothing is per-replica: what one replica hands out or records, another one honours —
tickets (once), the per-desktop connection cap, share links and their revocation, the
events fan-out and tus upload sessions. Each request goes to a chosen replica directly."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.ha.conftest import HaBed, api, create_desktop, delete_all, open_vnc, wait_ready
from tests.helpers.rfb_client import WsStream, connect_ws, handshake

TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture(scope="module")
async def desktop(http: aiohttp.ClientSession, ha: HaBed) -> AsyncIterator[str]:
    sid = await create_desktop(http, ha)
    await wait_ready(http, ha, sid)
    yield sid
    await delete_all(http, ha, [sid])


async def test_a_ticket_from_one_replica_opens_once_on_another(
    http: aiohttp.ClientSession, ha: HaBed, desktop: str
) -> None:
    r1, r2, r3 = (ha.replica_url(i) for i in (1, 2, 3))
    status, ticket = await api(http, ha, "POST", f"/api/v1/sessions/{desktop}/connect", base=r1)
    assert status == 200, ticket
    ws = await connect_ws(http, r2 + ticket["ws_path"])
    init = await handshake(WsStream(ws))
    assert init.width == 800
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await connect_ws(http, r3 + ticket["ws_path"])
    assert err.value.status in (401, 403)
    await ws.close()


async def test_the_connection_cap_counts_every_replica(
    http: aiohttp.ClientSession, ha: HaBed, desktop: str
) -> None:
    cap = ha.cfg.limits.max_websockets_per_session
    bases = [ha.replica_url(i % 3 + 1) for i in range(cap + 1)]
    opened = [await open_vnc(http, ha, desktop, base=b) for b in bases[:cap]]
    try:
        status, ticket = await api(
            http, ha, "POST", f"/api/v1/sessions/{desktop}/connect", base=bases[cap]
        )
        assert status == 200
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await connect_ws(http, bases[cap] + ticket["ws_path"])
        assert err.value.status == 429
    finally:
        for ws in opened:
            await ws.close()
    await asyncio.sleep(0.3)
    ws = await open_vnc(http, ha, desktop, base=bases[cap])  # room again
    await ws.close()


async def test_a_share_made_on_one_revoked_on_another_closes_on_a_third(
    http: aiohttp.ClientSession, ha: HaBed, desktop: str
) -> None:
    r1, r2, r3 = (ha.replica_url(i) for i in (1, 2, 3))
    status, link = await api(
        http, ha, "POST", f"/api/v1/sessions/{desktop}/shares", base=r1,
        json={"scope": "view", "expires_in_minutes": 10},
    )  # fmt: skip
    assert status == 201, link
    status, ticket = await api(
        http, ha, "POST", f"/api/v1/shares/{link['id']}/ticket", "bob", base=r2
    )
    assert status == 200, ticket
    ws = await connect_ws(http, r3 + ticket["ws_path"])
    await handshake(WsStream(ws))
    status, _ = await api(
        http, ha, "DELETE", f"/api/v1/sessions/{desktop}/shares/{link['id']}", base=r2
    )
    assert status in (200, 204)
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
    assert ws.close_code == 1008
    status, _ = await api(http, ha, "POST", f"/api/v1/shares/{link['id']}/ticket", "bob", base=r3)
    assert status in (403, 404)


async def test_an_event_crosses_replicas(http: aiohttp.ClientSession, ha: HaBed) -> None:
    async with http.get(
        ha.replica_url(2) + "/api/v1/events", headers=ha.headers("bob"),
        timeout=aiohttp.ClientTimeout(total=None),
    ) as r:  # fmt: skip
        async with asyncio.timeout(10):
            await r.content.readuntil(b"event: status")
        sid = await create_desktop(
            http, HaBed(ha.env | {"HA_URL": ha.replica_url(1)}, ha.cfg), "bob"
        )
        try:
            async with asyncio.timeout(10):
                while True:
                    line = (await r.content.readline()).decode()
                    if line.startswith("data:") and sid in line:
                        assert json.loads(line[5:])["id"] == sid
                        break
        finally:
            await delete_all(http, ha, [sid], "bob")


async def test_a_tus_upload_moves_between_replicas(http: aiohttp.ClientSession, ha: HaBed) -> None:
    r1, r2, r3 = (ha.replica_url(i) for i in (1, 2, 3))
    body = bytes(range(256)) * 64  # 16 KiB
    name = base64.b64encode(b"ha-tus.bin").decode()
    headers = {**ha.headers(), **TUS}
    async with http.post(
        r1 + "/api/v1/uploads",
        headers={**headers, "Upload-Length": str(len(body)), "Upload-Metadata": f"filename {name}"},
    ) as r:
        assert r.status == 201, await r.text()
        path = r.headers["Location"]
    patch = {**headers, "Content-Type": "application/offset+octet-stream"}
    async with http.patch(
        r2 + path, headers={**patch, "Upload-Offset": "0"}, data=body[:6000]
    ) as r:
        assert r.status == 204, await r.text()
    async with http.head(r3 + path, headers=headers) as r:
        assert r.headers["Upload-Offset"] == "6000"
    async with http.patch(
        r1 + path, headers={**patch, "Upload-Offset": "6000"}, data=body[6000:]
    ) as r:
        assert r.status == 204, await r.text()
        assert r.headers["Upload-Offset"] == str(len(body))
    async with http.get(r2 + path, headers=ha.headers()) as r:
        doc = await r.json()
        assert r.status == 200 and doc["offset"] == len(body), doc
    async with http.delete(r3 + path, headers=headers) as r:
        assert r.status == 204
