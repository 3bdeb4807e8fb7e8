"""WebRTC SFU benchmark: server CPU per subscriber (SFU vs aiortc MediaRelay), join time, added latency.

    python -m bench.sfu [--counts 1,5,10,20] [--seconds 6] [--relay-counts 1,5,10,20]

One 1280x720 30 fps ~1.5 Mbit/s VP8 publisher (a pre-encoded clip replayed as packets, so the
publisher costs almost nothing; a PLI is answered with an intra-coded copy of an upcoming frame).
The server under test is a child process (`--server sfu|relay`) signalled over stdin/stdout; its CPU
is read from /proc/PID/stat. Subscribers run in this process and do not decode (they count frames
with the same receiver hook), except the join-time subscribers, which decode.
Prints a Markdown table. Loopback only.
"""
from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import av  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import MediaStreamTrack  # noqa: E402

from sfu.aiortc_hooks import ice_restrict, receiver_forward, sender_route_keyframe  # noqa: E402

WIDTH, HEIGHT, FPS, BITRATE = 1280, 720, 30, 1_500_000
CLIP_FRAMES = 150
INTRA_EVERY = 5
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


# --- the clip ----------------------------------------------------------------------------------

def _encoder(gop: int) -> av.CodecContext:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.time_base = fractions.Fraction(1, FPS)
    codec.framerate = fractions.Fraction(FPS, 1)
    codec.bit_rate = BITRATE
    codec.gop_size = gop
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "qmin": "4", "qmax": "63",
                     "minrate": str(BITRATE), "maxrate": str(BITRATE), "bufsize": str(BITRATE // 2)}
    return codec


def clip_make(path: Path) -> None:
    """Scrolling noise with a moving band: detailed enough that VP8 spends its whole bit budget."""
    noise = bytes(b & 0x3F | 0x40 for b in os.urandom(WIDTH * HEIGHT * 2))
    frames = []
    for i in range(CLIP_FRAMES):
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        offset = (i * 7 * WIDTH + i * 3) % (len(noise) - WIDTH * HEIGHT)
        luma = bytearray(noise[offset:offset + WIDTH * HEIGHT])
        band = (i * 8) % HEIGHT
        luma[band * WIDTH:(band + 40) * WIDTH] = bytes([235]) * (40 * WIDTH)
        for index, plane in enumerate(frame.planes):
            if index == 0 and plane.line_size == WIDTH:
                plane.update(bytes(luma[:plane.buffer_size]))
            else:
                plane.update(bytes([128 + 20 * index]) * plane.buffer_size)
        frame.pts = i
        frames.append(frame)
    main_codec = _encoder(gop=CLIP_FRAMES)
    stream = [bytes(p) for f in frames for p in main_codec.encode(f)]
    intra = {}
    for i in range(0, CLIP_FRAMES, INTRA_EVERY):
        codec = _encoder(gop=1)
        intra[i] = b"".join(bytes(p) for p in codec.encode(frames[i]) + codec.encode(None))
    path.write_bytes(pickle.dumps({"frames": stream, "intra": intra}))


class ClipTrack(MediaStreamTrack):
    """Replays the clip as encoded packets at 30 fps; a keyframe request takes the next intra copy."""

    kind = "video"

    def __init__(self, clip: dict) -> None:
        super().__init__()
        self.frames, self.intra = clip["frames"], clip["intra"]
        self.count = 0
        self.want_key = False
        self._start: float | None = None

    def force_keyframe(self) -> None:
        self.want_key = True

    async def recv(self) -> av.Packet:
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self.count / FPS - time.monotonic()))
        index = self.count % len(self.frames)
        data = self.frames[index]
        if self.want_key and index in self.intra:
            data, self.want_key = self.intra[index], False
        packet = av.Packet(data)
        packet.pts, packet.time_base = self.count * (90000 // FPS), fractions.Fraction(1, 90000)
        self.count += 1
        return packet


# --- the server child ----------------------------------------------------------------------------

async def serve(mode: str) -> None:
    from django.conf import settings

    settings.configure(RTC_VIDEO_CODECS=["VP8"], RTC_AUDIO_CODECS=["opus"], RTC_KEYFRAME_INTERVAL=0.3,
                       RTC_ANNOUNCED_IP="", RTC_LISTEN_IPS=["127.0.0.1"])
    from aiortc.contrib.media import MediaRelay

    from sfu.session import publisher_open, subscriber_open
    from sfu.stats import Samples

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    latency = Samples()
    publisher = None
    relay, relay_track = MediaRelay(), loop.create_future()
    subscribers = []

    def reply(data: dict) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    while line := await reader.readline():
        request = json.loads(line)
        op = request["op"]
        if op == "publish" and mode == "sfu":
            publisher, answer = await publisher_open(request["sdp"], latency=latency)
            reply({"sdp": answer})
        elif op == "publish":
            pc = _pc()
            pc.on("track", lambda track: relay_track.set_result(track))
            await pc.setRemoteDescription(RTCSessionDescription(request["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            publisher = pc
            reply({"sdp": pc.localDescription.sdp})
        elif op == "subscribe" and mode == "sfu":
            session, answer = await subscriber_open(request["sdp"], publisher)
            subscribers.append(session)
            reply({"sdp": answer})
        elif op == "subscribe":
            pc = _pc()
            pc.addTrack(relay.subscribe(await relay_track, buffered=False))
            await pc.setRemoteDescription(RTCSessionDescription(request["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            subscribers.append(pc)
            reply({"sdp": pc.localDescription.sdp})
        elif op == "drop":
            await asyncio.gather(*(s.close() for s in subscribers))
            subscribers.clear()
            reply({"ok": True})
        elif op == "latency":
            reply(latency.summary_ms())
            latency.clear()


# --- the orchestrator -----------------------------------------------------------------------------

class Server:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def start(self) -> Server:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), "--server", self.mode, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        return self

    async def call(self, **request) -> dict:
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        await self.proc.stdin.drain()
        return json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 30))

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    async def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.kill()
        await self.proc.wait()


async def publish(server: Server, clip: dict) -> RTCPeerConnection:
    pc = _pc()
    track = ClipTrack(clip)
    transceiver = pc.addTransceiver(track, direction="sendonly")
    sender_route_keyframe(transceiver.sender, track.force_keyframe)
    await pc.setLocalDescription(await pc.createOffer())
    answer = await server.call(op="publish", sdp=pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    return pc


async def subscribe(server: Server, decode: bool) -> tuple[RTCPeerConnection, dict]:
    """A subscriber; counts frames without decoding unless `decode` (then times the first picture)."""
    pc = _pc()
    seen = {"frames": 0, "first": asyncio.get_running_loop().create_future()}

    def sink(data, timestamp, arrived, after_loss) -> None:
        seen["frames"] += 1
        if not seen["first"].done():
            seen["first"].set_result(time.monotonic())

    async def read(track) -> None:
        while True:
            await track.recv()
            if not seen["first"].done():
                seen["first"].set_result(time.monotonic())

    @pc.on("track")
    def on_track(track) -> None:
        if decode:
            seen["task"] = asyncio.ensure_future(read(track))
        else:
            receiver_forward(pc.getTransceivers()[0].receiver, sink)

    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    seen["sent"] = time.monotonic()
    answer = await server.call(op="subscribe", sdp=pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    return pc, seen


async def fanout_point(server: Server, count: int, seconds: float) -> dict:
    subs = [await subscribe(server, decode=False) for _ in range(count)]
    await asyncio.wait_for(asyncio.gather(*(seen["first"] for _, seen in subs)), 20)
    await asyncio.sleep(1.5)
    await server.call(op="latency")
    frames0 = sum(seen["frames"] for _, seen in subs)
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
    fps = (sum(seen["frames"] for _, seen in subs) - frames0) / (time.monotonic() - t0) / count
    latency = await server.call(op="latency")
    for pc, _ in subs:
        await pc.close()
    await server.call(op="drop")
    await asyncio.sleep(0.5)
    return {"count": count, "cpu": cpu, "fps": fps, "latency": latency}


async def measure(mode: str, clip: dict, counts: list[int], seconds: float, joins: int) -> dict:
    server = await Server(mode).start()
    try:
        publisher = await publish(server, clip)
        await asyncio.sleep(2)
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        base = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
        points = [await fanout_point(server, n, seconds) for n in counts]
        join_times = []
        for _ in range(joins):
            pc, seen = await subscribe(server, decode=True)
            first = await asyncio.wait_for(seen["first"], 20)
            join_times.append(first - seen["sent"])
            seen["task"].cancel()
            await pc.close()
            await server.call(op="drop")
            await asyncio.sleep(0.3)
        await publisher.close()
        return {"base": base, "points": points, "joins": join_times}
    finally:
        await server.stop()


def report(sfu: dict, relay: dict | None, clip_kbps: float) -> str:
    lines = [f"SFU fan-out: one {WIDTH}x{HEIGHT} {FPS} fps VP8 publisher at {clip_kbps:.0f} kbit/s, "
             f"server CPU in % of one core (publisher only: SFU {sfu['base']:.1f} %"
             + (f", MediaRelay {relay['base']:.1f} %" if relay else "") + ").", "",
             "| subscribers | SFU CPU | SFU per subscriber | fps per subscriber | added latency p50 / p99 (ms) "
             "| MediaRelay CPU | MediaRelay per subscriber | MediaRelay fps | ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    relay_points = {p["count"]: p for p in relay["points"]} if relay else {}
    for point in sfu["points"]:
        n = point["count"]
        per = (point["cpu"] - sfu["base"]) / n
        lat = point["latency"]
        row = f"| {n} | {point['cpu']:.1f} % | {per:.2f} % | {point['fps']:.1f} | {lat['p50_ms']} / {lat['p99_ms']} |"
        other = relay_points.get(n)
        if other:
            rper = (other["cpu"] - relay["base"]) / n
            saturated = " (saturated)" if other["cpu"] > 90 * (os.cpu_count() or 1) / 2 else ""
            row += (f" {other['cpu']:.1f} %{saturated} | {rper:.2f} % | {other['fps']:.1f} |"
                    f" {rper / per if per > 0 else float('inf'):.0f}x |")
        else:
            row += " - | - | - | - |"
        lines.append(row)
    joins = sfu["joins"]
    lines += ["", f"Join time (offer sent to first decoded frame), {len(joins)} joins: median "
              f"{statistics.median(joins) * 1000:.0f} ms, worst {max(joins) * 1000:.0f} ms."]
    lines.append("Added latency: a frame's last packet in to its last packet out, per subscriber.")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    ice_restrict(["127.0.0.1"])
    path = Path(tempfile.gettempdir()) / f"microvibe-sfu-clip-{WIDTH}x{HEIGHT}-{CLIP_FRAMES}.pickle"
    if not path.exists():
        print("encoding the 720p VP8 clip once...", file=sys.stderr)
        clip_make(path)
    clip = pickle.loads(path.read_bytes())
    clip_kbps = sum(len(f) for f in clip["frames"]) * 8 / (len(clip["frames"]) / FPS) / 1000
    counts = [int(c) for c in args.counts.split(",")]
    sfu = await measure("sfu", clip, counts, args.seconds, args.joins)
    relay = None
    if args.relay_counts:
        relay = await measure("relay", clip, [int(c) for c in args.relay_counts.split(",")], args.seconds, 0)
    print(report(sfu, relay, clip_kbps))
    if args.json:
        Path(args.json).write_text(json.dumps({"sfu": sfu, "relay": relay, "clip_kbps": clip_kbps}, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["sfu", "relay"], help=argparse.SUPPRESS)
    parser.add_argument("--counts", default="1,5,10,20")
    parser.add_argument("--relay-counts", default="1,5,10,20")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--joins", type=int, default=10)
    parser.add_argument("--json", default="")
    arguments = parser.parse_args()
    if arguments.server:
        ice_restrict(["127.0.0.1"])
        asyncio.run(serve(arguments.server))
    else:
        asyncio.run(main(arguments))
