"""A room-socket client for the rtc:* call protocol (websockets + aiortc)."""
from __future__ import annotations

import asyncio
import itertools
import json

import websockets
from aiortc import RTCSessionDescription

from .clients import PatternVideo, ToneAudio, peer_connection, recv_offer

_ids = itertools.count(1)


class RoomClient:
    def __init__(self, ws_url: str, token: str) -> None:
        self.ws_url, self.token = ws_url, token
        self.events: list[dict] = []
        self._pending: dict[int, asyncio.Future] = {}
        self.peer_id = ""
        self.producer = None
        self.consumers: dict[str, tuple] = {}

    async def __aenter__(self) -> RoomClient:
        self.ws = await websockets.connect(self.ws_url, subprotocols=["bearer", self.token])
        hello = json.loads(await self.ws.recv())
        assert hello["type"] == "joined", hello
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        for pc, _ in self.consumers.values():
            await pc.close()
        if self.producer:
            await self.producer.close()
        await self.ws.close()
        self._reader.cancel()

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            future = self._pending.pop(message.get("id"), None)
            if future is not None:
                future.set_result(message)
            else:
                self.events.append(message)

    async def request(self, kind: str, **fields) -> dict:
        request_id = next(_ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        await self.ws.send(json.dumps({"type": kind, "id": request_id, **fields}))
        return await asyncio.wait_for(future, 20)

    async def join(self, **fields) -> dict:
        reply = await self.request("rtc:join", **fields)
        if reply["type"] == "rtc:joined":
            self.peer_id = reply["data"]["peerId"]
        return reply

    async def produce(self, width: int = 160, height: int = 120, fps: int = 15) -> dict:
        pc = peer_connection()
        pc.addTransceiver(PatternVideo(width, height, fps), direction="sendonly")
        pc.addTransceiver(ToneAudio(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        reply = await self.request("rtc:produce", sdp=pc.localDescription.sdp)
        assert reply["type"] == "rtc:produced", reply
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["data"]["sdp"], type="answer"))
        self.producer = pc
        return reply

    async def consume(self, peer_id: str) -> dict:
        pc, collectors = await recv_offer(("video",))
        reply = await self.request("rtc:consume", peerId=peer_id, sdp=pc.localDescription.sdp)
        assert reply["type"] == "rtc:consumed", reply
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["data"]["sdp"], type="answer"))
        self.consumers[peer_id] = (pc, collectors)
        return reply
