"""The sources' 4-person call over the room socket: everyone publishes and receives the 3 others.

The callers are logged-in users the room's owner invited (`PATCH /api/v1/live/{room_id}`); a
logged-in stranger is refused, and a peer's name is its username whatever displayName it sends."""
from __future__ import annotations

import asyncio
import json

from tests.support.api import api, register

from .room_client import RoomClient


def _stats(service) -> dict:
    return json.loads(service.get("/api/v1/rtc/stats")[1])["data"]


async def test_four_peers_and_a_fifth_refused(service, owner, room):
    public_id = room["room"]["room_id"]
    ws = f"ws://127.0.0.1:{service.port}/api/v1/live/ws?room_id={public_id}&role=viewer"
    tokens = [register(service, f"caller{i}") for i in range(5)]
    status, body = api(service, f"/api/v1/live/{public_id}", {"call_invitees": [f"caller{i}" for i in range(5)]},
                       owner, method="PATCH")
    assert status == 200 and body["data"]["call_access"] == "invited", body
    stranger = RoomClient(ws, register(service, "stranger"))
    clients = [RoomClient(ws, token) for token in tokens]
    for client in [*clients, stranger]:
        await client.__aenter__()
    try:
        refused = await stranger.join()
        assert refused["type"] == "error" and refused["data"]["code"] == "not_invited", refused
        for i, client in enumerate(clients[:4]):
            reply = await client.join(displayName="sfu-owner")  # tries to pass for the owner
            assert reply["type"] == "rtc:joined", reply
            assert reply["data"]["maxPeers"] == 4
            assert sorted(p["user"] for p in reply["data"]["peers"]) == [f"caller{j}" for j in range(i)]
        refused = await clients[4].join()
        assert refused["type"] == "error" and refused["data"]["code"] == "room_full", refused
        assert "full" in refused["data"]["message"]
        for client in clients[:4]:
            await client.produce()
        for client in clients[:4]:
            for other in clients[:4]:
                if other is not client:
                    await client.consume(other.peer_id)
        collectors = []
        for client in clients[:4]:
            for peer_id, (_, futures) in client.consumers.items():
                collectors.append((client.peer_id, peer_id, await asyncio.wait_for(futures["video"], 10)))
        assert len(collectors) == 12
        await asyncio.gather(*(asyncio.wait_for(c.first, 15) for *_, c in collectors))
        await asyncio.sleep(2)
        for me, other, collector in collectors:
            sizes = {(w, h) for _, w, h in collector.frames}
            assert sizes == {(160, 120)}, (me, other, sizes)
            # 15 fps (6000 ticks a picture): every one from the first on for the 2 s watched, less
            # the 3 (200 ms) still in flight at the end; at most one missing between: twelve
            # streams on a loaded 2-core machine can lose a packet whose resend comes after the
            # receiver gave its picture up (a server dropping one a second loses two here)
            assert collector.missing(6000) <= 1 and len(collector.frames) >= 2 * 15 - 3, \
                (me, other, collector.missing(6000), len(collector.frames))
        kinds = {e["type"] for e in clients[0].events}
        assert {"rtc:peerJoined", "rtc:newProducer"} <= kinds, kinds
        names = {e["data"]["user"] for e in clients[0].events if e["type"] == "rtc:peerJoined"}
        assert names == {f"caller{i}" for i in range(4)}, names
        # one leaves: the others hear rtc:peerLeft and the fifth now fits
        leaving = clients[3].peer_id
        assert (await clients[3].request("rtc:leave"))["type"] == "rtc:left"
        await asyncio.sleep(0.3)
        assert any(e["type"] == "rtc:peerLeft" and e["data"]["peerId"] == leaving for e in clients[0].events)
        assert (await clients[4].join())["type"] == "rtc:joined"
        assert (await clients[0].request("rtc:createTransport"))["data"]["code"] == "not_supported"
    finally:
        for client in [*clients, stranger]:
            await client.__aexit__(None, None, None)
    for _ in range(40):
        if _stats(service)["peers"] == 0:
            break
        await asyncio.sleep(0.1)
    assert _stats(service)["peers"] == 0, "closing the sockets leaves the call"
