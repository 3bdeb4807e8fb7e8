"""WebRTC SFU benchmark: server CPU per subscriber (SFU vs aiortc MediaRelay), join time, added latency.

    python -m bench.sfu [--counts 1,5,10,20] [--seconds 6] [--relay-counts 1,5,10,20]
                        [--subs-per-proc 4] [--doc docs/benchmarks.md | --no-doc] [--json FILE]

One 1280x720 30 fps ~1.5 Mbit/s VP8 publisher (a pre-encoded clip replayed as packets, so the
publisher costs almost nothing; a PLI is answered with an intra-coded copy of an upcoming frame).
The server under test is a child process (`--server sfu|relay`) signalled over stdin/stdout; its CPU
is read from /proc/PID/stat. Subscribers run in worker processes (`--worker`, at most
`--subs-per-proc` each) so that they keep up on a small machine: they do not decode but count the
frames the receiver hook reassembles; one subscriber per point decodes every frame (its fps is the
"decoded fps" column), and so do the join-time subscribers. Loopback only.

Added latency, measured inside the server: from the kernel's receive timestamp (SIOCGSTAMPNS) of
a frame's last packet on the publisher's socket to the return of the system call that hands that
frame's last packet to the kernel for a subscriber; one sample per frame per subscriber. It so
includes the time the packet waited in the socket buffer and in asyncio while the server was busy.

The table also replaces the section between `<!-- bench:sfu:start -->` and `<!-- bench:sfu:end -->`
in `--doc` (default docs/benchmarks.md; the markers and a heading are appended when missing).
`SFU_BENCH_CODE=DIR` runs the server with the `sfu` package from DIR (to compare with an old copy).
"""
from __future__ import annotations

import argparse
import asyncio
import fcntl
import fractions
import json
import os
import pickle
import re
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if "--server" in sys.argv and os.environ.get("SFU_BENCH_CODE"):
    sys.path.insert(0, os.environ["SFU_BENCH_CODE"])

import av  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import MediaStreamTrack  # noqa: E402

from sfu.aiortc_hooks import ice_restrict, receiver_forward, sender_route_keyframe  # noqa: E402

WIDTH, HEIGHT, FPS, BITRATE = 1280, 720, 30, 1_500_000
CLIP_FRAMES = 150
INTRA_EVERY = 5
CLK_TCK = os.sysconf("SC_CLK_TCK")
SIOCGSTAMPNS = 0x8907
DOC = ROOT / "docs" / "benchmarks.md"
DOC_START, DOC_END = "<!-- bench:sfu:start -->", "<!-- bench:sfu:end -->"


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

def kernel_arrivals() -> dict[int, float]:
    """RTP timestamp -> kernel receive time (on the monotonic clock) of the latest packet carrying it,
    for every RTP packet this process receives (only the publisher sends RTP to the server)."""
    import aioice.ice

    arrivals: dict[int, float] = {}
    offset = time.monotonic() - time.time()
    original = aioice.ice.StunProtocol.datagram_received

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) >= 12 and data[0] >> 6 == 2 and not 192 <= data[1] <= 223:  # RTP, not RTCP/STUN/DTLS
            fd = self.__dict__.get("_bench_fd")
            if fd is None:
                fd = self._bench_fd = self.transport.get_extra_info("socket").fileno()
            try:
                sec, nsec = struct.unpack("qq", fcntl.ioctl(fd, SIOCGSTAMPNS, bytes(16)))
            except OSError:  # the socket's first packet has no stamp yet
                pass
            else:
                if len(arrivals) > 1000:
                    arrivals.clear()
                arrivals[int.from_bytes(data[4:8], "big")] = sec + nsec / 1e9 + offset
        original(self, data, addr)

    aioice.ice.StunProtocol.datagram_received = datagram_received
    return arrivals


def stamp_frames(pc: RTCPeerConnection, arrivals: dict[int, float], waited, fanout) -> None:
    """Give the forwarder the kernel's arrival time of each frame's last packet, not the moment
    the jitter buffer saw it (which excludes time spent queued while the server was busy).
    `waited` gets each frame's kernel-to-forwarder delay, `fanout` the time its fan-out took."""
    for transceiver in pc.getTransceivers():
        buffer = transceiver.receiver._RTCRtpReceiver__jitter_buffer
        sink = buffer.sink

        def stamped(data, timestamp, arrived, after_loss, sink=sink) -> None:
            start = time.monotonic()
            kernel = arrivals.pop(timestamp & 0xFFFFFFFF, arrived)
            sink(data, timestamp, kernel, after_loss)
            waited.add(start - kernel)
            fanout.add(time.monotonic() - start)

        buffer.sink = stamped

async def serve(mode: str) -> None:
    from django.conf import settings

    settings.configure(RTC_VIDEO_CODECS=["VP8"], RTC_AUDIO_CODECS=["opus"], RTC_KEYFRAME_INTERVAL=0.3,
                       RTC_ANNOUNCED_IP="", RTC_LISTEN_IPS=["127.0.0.1"])
    from aiortc.contrib.media import MediaRelay

    from media.config import MediaConfig
    from media.hub.stream import Stream
    from sfu.aiortc_hooks import h264_profiles_register
    from sfu.from_hub import stream_out
    from sfu.session import publisher_open, subscriber_open
    from sfu.stats import Samples

    h264_profiles_register()

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    latency, waited, fanout = Samples(), Samples(), Samples()
    arrivals = kernel_arrivals()
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
            # The WHIP path: the publisher is a hub source, subscribers read the hub stream.
            publisher, answer = await publisher_open(request["sdp"])
            stream = Stream("bench", MediaConfig())
            publisher.attach(stream)
            stamp_frames(publisher.pc, arrivals, waited, fanout)
            reply({"sdp": answer})
        elif op == "publish":
            pc = _pc()
            pc.on("track", lambda track: relay_track.set_result(track))
            await pc.setRemoteDescription(RTCSessionDescription(request["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            publisher = pc
            reply({"sdp": pc.localDescription.sdp})
        elif op == "subscribe" and mode == "sfu":
            session, answer = await subscriber_open(request["sdp"], stream_out(stream, latency))
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
            reply({**latency.summary_ms(), "waited": waited.summary_ms(), "fanout": fanout.summary_ms()})
            for samples in (latency, waited, fanout):
                samples.clear()


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


class Subscriber:
    """A subscriber; counts reassembled frames without decoding unless `decode` (then counts decoded ones)."""

    def __init__(self, decode: bool) -> None:
        self.pc = _pc()
        self.decode = decode
        self.frames = 0
        self.first = asyncio.get_running_loop().create_future()
        self.sent = 0.0
        self.task: asyncio.Task | None = None
        self.pc.on("track", self._on_track)

    def _seen(self) -> None:
        self.frames += 1
        if not self.first.done():
            self.first.set_result(time.monotonic())

    def _on_track(self, track) -> None:
        if self.decode:
            self.task = asyncio.ensure_future(self._read(track))
        else:
            receiver_forward(self.pc.getTransceivers()[0].receiver, lambda *frame: self._seen())

    async def _read(self, track) -> None:
        while True:
            await track.recv()
            self._seen()

    async def offer(self) -> str:
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.sent = time.monotonic()
        return self.pc.localDescription.sdp

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.pc.close()


async def work() -> None:
    """A worker process holding some subscribers, driven over stdin/stdout by the orchestrator."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    subs: dict[int, Subscriber] = {}

    def reply(data: dict) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    while line := await reader.readline():
        request = json.loads(line)
        op = request["op"]
        if op == "offer":
            sub = Subscriber(request["decode"])
            subs[len(subs)] = sub
            reply({"id": len(subs) - 1, "sdp": await sub.offer()})
        elif op == "answer":
            await subs[request["id"]].answer(request["sdp"])
            reply({"ok": True})
        elif op == "first":
            await asyncio.wait_for(asyncio.gather(*(s.first for s in subs.values())), 20)
            reply({"ok": True})
        elif op == "count":
            reply({"frames": [s.frames for s in subs.values()], "decode": [s.decode for s in subs.values()]})
        elif op == "close":
            await asyncio.gather(*(s.close() for s in subs.values()))
            subs.clear()
            reply({"ok": True})


class Worker(Server):
    async def start(self) -> Worker:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), "--worker", cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        return self


async def fanout_point(server: Server, count: int, seconds: float, per_proc: int) -> dict:
    workers = [await Worker("worker").start() for _ in range(-(-count // per_proc))]
    for i in range(count):
        worker = workers[i % len(workers)]
        offer = await worker.call(op="offer", decode=i == 0)
        answer = await server.call(op="subscribe", sdp=offer["sdp"])
        await worker.call(op="answer", id=offer["id"], sdp=answer["sdp"])
    await asyncio.gather(*(w.call(op="first") for w in workers))
    await asyncio.sleep(1.5)
    await server.call(op="latency")
    counts0 = await asyncio.gather(*(w.call(op="count") for w in workers))
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    workers_cpu0 = sum(w.cpu_seconds() for w in workers)
    await asyncio.sleep(seconds)
    counts1 = await asyncio.gather(*(w.call(op="count") for w in workers))
    elapsed = time.monotonic() - t0
    cpu = (server.cpu_seconds() - cpu0) / elapsed * 100
    workers_cpu = (sum(w.cpu_seconds() for w in workers) - workers_cpu0) / elapsed * 100
    latency = await server.call(op="latency")
    counted, decoded = [], []
    for before, after in zip(counts0, counts1, strict=True):
        for n0, n1, decode in zip(before["frames"], after["frames"], after["decode"], strict=True):
            (decoded if decode else counted).append((n1 - n0) / elapsed)
    for worker in workers:
        await worker.call(op="close")
        await worker.stop()
    await server.call(op="drop")
    await asyncio.sleep(0.5)
    every = counted + decoded
    return {"count": count, "cpu": cpu, "fps": sum(every) / len(every), "fps_min": min(every),
            "decoded_fps": decoded[0] if decoded else None, "latency": latency, "workers_cpu": workers_cpu,
            "workers": len(workers)}


async def measure(mode: str, clip: dict, counts: list[int], seconds: float, joins: int, per_proc: int) -> dict:
    server = await Server(mode).start()
    try:
        publisher = await publish(server, clip)
        await asyncio.sleep(2)
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        base = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
        points = [await fanout_point(server, n, seconds, per_proc) for n in counts]
        join_times = []
        for _ in range(joins):
            sub = Subscriber(decode=True)
            answer = await server.call(op="subscribe", sdp=await sub.offer())
            await sub.answer(answer["sdp"])
            join_times.append(await asyncio.wait_for(sub.first, 20) - sub.sent)
            await sub.close()
            await server.call(op="drop")
            await asyncio.sleep(0.3)
        await publisher.close()
        return {"base": base, "points": points, "joins": join_times}
    finally:
        await server.stop()


def report(sfu: dict, relay: dict | None, clip_kbps: float) -> str:
    lines = [f"One {WIDTH}x{HEIGHT} {FPS} fps VP8 publisher at {clip_kbps:.0f} kbit/s; server CPU in % of one core "
             f"(publisher alone: SFU {sfu['base']:.1f} %" + (f", MediaRelay {relay['base']:.1f} %" if relay else "")
             + "); fps per subscriber: mean (lowest); decoded: the one subscriber that decodes every frame.", "",
             "| subscribers | SFU CPU | SFU per subscriber | fps per subscriber | decoded fps "
             "| added latency p50 / p99 (ms) | MediaRelay CPU | MediaRelay per subscriber | MediaRelay fps | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    relay_points = {p["count"]: p for p in relay["points"]} if relay else {}
    for point in sfu["points"]:
        n = point["count"]
        per = (point["cpu"] - sfu["base"]) / n
        lat = point["latency"]
        decoded = f"{point['decoded_fps']:.1f}" if point.get("decoded_fps") is not None else "-"
        row = (f"| {n} | {point['cpu']:.1f} % | {per:.2f} % | {point['fps']:.1f} ({point['fps_min']:.1f}) "
               f"| {decoded} | {lat['p50_ms']} / {lat['p99_ms']} |")
        other = relay_points.get(n)
        if other:
            rper = (other["cpu"] - relay["base"]) / n
            saturated = " (saturated)" if other["cpu"] > 90 else ""
            row += (f" {other['cpu']:.1f} %{saturated} | {rper:.2f} % | {other['fps']:.1f} ({other['fps_min']:.1f}) |"
                    f" {rper / per if per > 0 else float('inf'):.0f}x |")
        else:
            row += " - | - | - | - |"
        lines.append(row)
    joins = sfu["joins"]
    if joins:
        lines += ["", f"Join time (offer sent to first decoded frame), {len(joins)} joins: median "
                  f"{statistics.median(joins) * 1000:.0f} ms, worst {max(joins) * 1000:.0f} ms."]
    last = sfu["points"][-1]["latency"] if sfu["points"] else {}
    if last.get("waited") and last["waited"]["count"]:
        waited, fanout = last["waited"], last["fanout"]
        lines.append(f"Where the added latency goes at {sfu['points'][-1]['count']} subscribers (p50 / p99): "
                     f"a frame's last packet waits {waited['p50_ms']} / {waited['p99_ms']} ms from the kernel to "
                     f"the forwarder; sending the frame to every subscriber takes {fanout['p50_ms']} / "
                     f"{fanout['p99_ms']} ms.")
    workers = ", ".join(f"{p['count']}: {p['workers_cpu']:.0f} % in {p['workers']}" for p in sfu["points"])
    lines.append(f"Subscriber processes' CPU (SFU run; subscribers: % of one core in N processes): {workers}.")
    return "\n".join(lines)


DOC_METHOD = """`python -m bench.sfu` (run by `make bench`) rewrites the table below. One 1280x720 30 fps ~1.5
Mbit/s VP8 publisher (a pre-encoded clip replayed as RTP, answering PLIs with intra frames) and 1,
5, 10, 20 subscribers on loopback; the server (MicroVibe's `sfu` package, or aiortc's MediaRelay for
comparison) is its own process and its CPU comes from /proc. Subscribers run in worker processes
(`--subs-per-proc`, 4 each): all 20 in one process, as before, took 70 % of a core on an idle
machine, too close to a whole core to keep up next to other load on 2 cores. They count the frames
aiortc reassembles without decoding, except one per row that decodes every frame ("decoded fps").
*Added latency* is measured in the server: from the kernel's receive timestamp (SIOCGSTAMPNS) of a
frame's last packet to the return of the `sendmsg` that hands that frame's last packet to the kernel
for a subscriber, one sample per frame and subscriber, so it includes time queued in the socket
buffer while the server was busy. Join time: a decoding subscriber's offer to its first decoded
frame.

The server sends each frame to all its subscribers at once when its last packet is reassembled:
packetized once, then per subscriber RTP headers, SRTP and one `sendmsg` (UDP GSO) for the whole
frame, no task per subscriber. The latency is that fan-out, which grows with the frame's size times
the subscribers; most of it is the system call, which on loopback also delivers every packet into
the subscriber's socket (on a real network interface it costs much less)."""


def doc_update(path: Path, table: str, command: str) -> None:
    """Replace the SFU section between the markers in `path` (append heading + markers when missing)."""
    text = path.read_text() if path.exists() else ""
    body = f"{DOC_START}\n_{time.strftime('%Y-%m-%d')}, `{command}`:_\n\n{table}\n{DOC_END}"
    if DOC_START in text and DOC_END in text:
        text = re.sub(re.escape(DOC_START) + ".*?" + re.escape(DOC_END), lambda _: body, text, count=1, flags=re.S)
    else:
        text = text.rstrip("\n") + f"\n\n## WebRTC SFU\n\n{DOC_METHOD}\n\n{body}\n"
    path.write_text(text)


async def main(args: argparse.Namespace) -> None:
    ice_restrict(["127.0.0.1"])
    path = Path(tempfile.gettempdir()) / f"microvibe-sfu-clip-{WIDTH}x{HEIGHT}-{CLIP_FRAMES}.pickle"
    if not path.exists():
        print("encoding the 720p VP8 clip once...", file=sys.stderr)
        clip_make(path)
    clip = pickle.loads(path.read_bytes())
    clip_kbps = sum(len(f) for f in clip["frames"]) * 8 / (len(clip["frames"]) / FPS) / 1000
    counts = [int(c) for c in args.counts.split(",")]
    sfu = await measure("sfu", clip, counts, args.seconds, args.joins, args.subs_per_proc)
    relay = None
    if args.relay_counts:
        relay = await measure("relay", clip, [int(c) for c in args.relay_counts.split(",")], args.seconds, 0,
                              args.subs_per_proc)
    table = report(sfu, relay, clip_kbps)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"sfu": sfu, "relay": relay, "clip_kbps": clip_kbps}, indent=1))
    if not args.no_doc:
        doc_update(Path(args.doc), table, "python -m bench.sfu " + " ".join(sys.argv[1:]))
        print(f"updated {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["sfu", "relay"], help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--counts", default="1,5,10,20")
    parser.add_argument("--relay-counts", default="1,5,10,20")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--joins", type=int, default=10)
    parser.add_argument("--subs-per-proc", type=int, default=4)
    parser.add_argument("--json", default="")
    parser.add_argument("--doc", default=str(DOC), help="the Markdown file whose SFU section to rewrite")
    parser.add_argument("--no-doc", action="store_true", help="do not touch --doc")
    arguments = parser.parse_args()
    if arguments.server:
        ice_restrict(["127.0.0.1"])
        asyncio.run(serve(arguments.server))
    elif arguments.worker:
        ice_restrict(["127.0.0.1"])
        asyncio.run(work())
    else:
        asyncio.run(main(arguments))
