"""`python -m bench.bridges` (part of `make bench`): the hub's bridges between RTMP and WebRTC.

    python -m bench.bridges [--parts webrtc,webrtc-bframes,hls] [--counts 1,10] [--seconds 15] [--warmup 5]
                            [--runs 5] [--subs-per-proc 4] [--whip-size 640x360]
                            [--whip-source testsrc2|pattern] [--no-doc]

- webrtc (RTMP -> WebRTC added latency): one bench/publisher.py RTMP publisher of the clip encoded
  without B-frames into MicroVibe (HLS off, as in the fan-out), then for each count N subscribers
  over WHEP (`POST /whep/{room}`) in worker processes (`whep-worker`, at most --subs-per-proc
  each), which take aiortc's reassembled frames without decoding (`receiver_forward`). Each
  subscriber logs (arrival, key) of every frame in the window; the lag of a frame is its arrival
  minus the publisher's send time of the same frame. The key is computed from the frame's last
  slice NAL unit, the only part both sides carry byte for byte (the RTMP side has an FLV AVC body
  of 4-byte-length-prefixed NAL units, the WebRTC side Annex B with SPS/PPS put before IDR frames).
  Then the same N as RTMP readers on the same stream (bench.run.run_case), and the fan-out's own
  rtmp-N rows (MicroVibe and nginx-rtmp, bench/out/latest.json) next to them.
- webrtc-bframes (the same with a re-encode): the clip with its B-frames, which the server plays to
  WebRTC re-encoded without them (a rendition, media.bridges.rendition). The re-encode changes
  every byte, so a frame is matched by its RTP timestamp, which is its pts (kept by the re-encode)
  plus a per-subscriber origin: each send's pts comes from the clip's order (`sends_by_pts`), each
  subscriber's origin from the candidates around its first frame (`match_rtp`).
- hls (WHIP -> HLS startup): --runs fresh rooms; in each an aiortc WHIP publisher (`whip-publisher`
  child: H.264 from aiortc's encoder, FFmpeg's testsrc2 picture or the tests' PatternVideo) starts
  while this process polls the room's playlist as bench/hls.py does; startup = the first playlist
  listing a segment that can be fetched - the WHIP POST. Shown with the RTMP -> HLS startup of
  bench/hls.py (bench/out/hls-latest.json).

The tables replace the sections between `<!-- bench:rtmp-webrtc:start/end -->`,
`<!-- bench:rtmp-webrtc-bframes:start/end -->` and `<!-- bench:whip-hls:start/end -->` in
docs/benchmarks.md; raw numbers go to bench/out/bridges-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import asdict
from pathlib import Path

from . import report
from .rtmpclient import frame_key, is_coded_frame
from .source import OUT

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("webrtc", "webrtc-bframes", "hls")
WHEP_STARTUP = 3.0  # s for the worker processes to start and every subscriber to join before the warm-up
CHILD_START_TIMEOUT = 20.0  # s for the WHIP publisher child to start (imports) and reach its POST
SLICE_TYPES = (1, 5)  # coded slice of a non-IDR / an IDR picture
MARKERS = {
    "webrtc": ("<!-- bench:rtmp-webrtc:start -->", "<!-- bench:rtmp-webrtc:end -->"),
    "webrtc-bframes": ("<!-- bench:rtmp-webrtc-bframes:start -->", "<!-- bench:rtmp-webrtc-bframes:end -->"),
    "hls": ("<!-- bench:whip-hls:start -->", "<!-- bench:whip-hls:end -->"),
}
HEADINGS = {"webrtc": "### RTMP -> WebRTC latency", "webrtc-bframes": "### RTMP with B-frames -> WebRTC latency",
            "hls": "### WHIP -> HLS startup"}
RTP_MASK = 0xFFFFFFFF


# --- frame keys: the same value from an FLV AVC body and from the Annex B frame of WebRTC ----------

def _nal_key(nal: bytes) -> int:
    # Trailing zero bytes are dropped: in Annex B they cannot be told from a 4-byte start code's first byte.
    nal = nal.rstrip(b"\0")
    return (len(nal) << 32) | zlib.crc32(nal[:64] + nal[-64:])


def flv_slice_key(payload: bytes) -> int | None:
    """Key of the last slice NAL unit of an FLV AVC video body (5-byte header, then length-prefixed NALs)."""
    last, pos = None, 5
    while pos + 4 <= len(payload):
        size = int.from_bytes(payload[pos : pos + 4], "big")
        nal = payload[pos + 4 : pos + 4 + size]
        if nal and nal[0] & 0x1F in SLICE_TYPES:
            last = nal
        pos += 4 + size
    return None if last is None else _nal_key(last)


def annexb_slice_key(data: bytes) -> int | None:
    """Key of the last slice NAL unit of an Annex B access unit (start codes of 3 or 4 bytes)."""
    for nal in reversed(data.split(b"\0\0\1")):
        nal = nal.rstrip(b"\0")
        if nal and nal[0] & 0x1F in SLICE_TYPES:
            return _nal_key(nal)
    return None


def clip_keys(source: Path) -> tuple[dict[int, int], dict]:
    """The clip's frames: bench/publisher.py's key (whole body) -> slice key, and a uniqueness check."""
    from media.codecs.flv import TAG_VIDEO

    from .publisher import load

    _meta, _headers, media = load(str(source))
    bodies = [t.payload for t in media if t.tag_type == TAG_VIDEO and is_coded_frame(t.payload)]
    mapping = {frame_key(body): flv_slice_key(body) for body in bodies}
    slices = [k for k in mapping.values() if k is not None]
    check = {"frames": len(bodies), "distinct_body_keys": len(mapping), "distinct_slice_keys": len(set(slices)),
             "frames_without_slice": sum(1 for k in mapping.values() if k is None)}
    return {b: s for b, s in mapping.items() if s is not None}, check


def translate_sends(sends: dict[int, list[float]], mapping: dict[int, int]) -> dict[int, list[float]]:
    """The publisher's send log (body keys) re-keyed by slice key."""
    out: dict[int, list[float]] = {}
    for key, times in sends.items():
        if (slice_key := mapping.get(key)) is not None:
            out.setdefault(slice_key, []).extend(times)
    for times in out.values():
        times.sort()
    return out


# --- frame matching by RTP timestamp: a re-encoded stream (B-frames removed) ------------------------
#
# A re-encode changes every byte of a frame but keeps its presentation time: the server sends
# RTP timestamp = the hub pts + a random origin per subscriber (sfu.from_hub.TrackOut.frame,
# sfu.aiortc_hooks.RtpOutput), and the hub pts is the publisher's FLV timestamp + composition time
# (x90). The publisher logs a send per frame in the clip's order, so each send has its pts; each
# subscriber's origin is found by trying every frame sent in the 2 s before its first frame.

def clip_pts(source: Path) -> tuple[list[int], int]:
    """The clip's coded video frames in the publisher's send order: pts in ms from its first media
    tag (bench/publisher.py's timeline), and the loop length it adds per loop (ms)."""
    from media.codecs.flv import TAG_VIDEO, parse_video

    from .publisher import load

    _meta, _headers, media = load(str(source))
    first = media[0].timestamp
    pts = [t.timestamp - first + parse_video(t.payload).composition_time
           for t in media if t.tag_type == TAG_VIDEO and is_coded_frame(t.payload)]
    return pts, media[-1].timestamp - first + 33  # the loop length as bench/publisher.py computes it


def sends_by_pts(log_path: Path, pts: list[int], loop_len: int) -> dict[int, list[float]]:
    """The publisher's send log keyed by the hub pts (90 kHz) of each send (its n-th line is the
    clip's frame n mod len(pts), in loop n // len(pts))."""
    sends: dict[int, list[float]] = {}
    with open(log_path) as f:
        for n, line in enumerate(f):
            fields = line.split()
            if len(fields) == 2:
                loop, i = divmod(n, len(pts))
                sends.setdefault((pts[i] + loop * loop_len) * 90, []).append(float(fields[0]))
    return sends


def match_rtp(frames: list, sends: dict[int, list[float]]) -> tuple[list[tuple[float, int]], dict]:
    """One subscriber's (arrival, RTP timestamp) frames as (arrival, pts): the origin that matches
    (nearly) every frame to a send before its arrival, with the least median lag. A frame later in
    the candidate's pts than the true one was sent after it arrived (unmatched); an earlier one
    gives lags a frame period or more longer; one or two frames off, many pts do not exist (FLV
    millisecond timestamps: 33, 33, 34 ms apart)."""
    from .stats import reader_lags

    if not frames:
        return [], {}
    first_at, first_rtp = frames[0]
    scored = []
    for pts, times in sends.items():
        if not any(first_at - 2.0 <= t <= first_at for t in times):
            continue
        origin = (first_rtp - pts) & RTP_MASK
        mapped = [(arrived, (rtp - origin) & RTP_MASK) for arrived, rtp in frames]
        lags, _ = reader_lags(mapped, sends)
        scored.append((len(lags), statistics.median(lags) if lags else math.inf, mapped))
    if not scored:
        return [], {"matched": 0}
    most = max(n for n, _, _ in scored)
    near = sorted((s for s in scored if s[0] >= 0.98 * most), key=lambda s: s[1])
    n, median, mapped = near[0]
    return mapped, {"matched": n, "frames": len(frames), "lag_median_ms": round(median, 1),
                    "next_median_ms": round(near[1][1], 1) if len(near) > 1 else None}


# --- child: WHEP subscribers that do not decode ------------------------------------------------------

async def _whep_reader(base: str, room_id: str, log, t0: float, t1: float, by_rtp: bool = False) -> None:
    from aiortc import RTCSessionDescription

    from sfu.aiortc_hooks import receiver_forward
    from tests.sfu.clients import http_async, peer_connection

    pc = peer_connection()
    try:
        transceiver = pc.addTransceiver("video", direction="recvonly")

        def sink(data: bytes, rtp_timestamp: int, arrived: float, _after_loss: bool) -> None:
            log.frames_total += 1
            log.bytes_total += len(data)
            if log.first_frame_at is None:
                log.first_frame_at = arrived
            if t0 <= arrived <= t1:
                key = rtp_timestamp if by_rtp else annexb_slice_key(data)
                if key is not None:
                    log.frames.append((arrived, key))

        receiver_forward(transceiver.receiver, sink)  # before any media: frames come to `sink`, no decoder
        await pc.setLocalDescription(await pc.createOffer())
        status, headers, body = await http_async("POST", f"{base}/whep/{room_id}", pc.localDescription.sdp.encode(),
                                                 {"Content-Type": "application/sdp"})
        if status != 201:
            raise ConnectionError(f"WHEP refused: {status} {body[:200]!r}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))
        log.connected_at = time.monotonic()
        await asyncio.sleep(max(0.0, t1 - time.monotonic()))
        with contextlib.suppress(Exception):
            await http_async("DELETE", base + headers["Location"])
    finally:
        await pc.close()


async def _whep_workers(args: argparse.Namespace) -> list:
    from sfu.aiortc_hooks import h264_profiles_register

    from .readers import ReaderLog

    h264_profiles_register()  # offer Main/High too, so the answer carries the stream's own profile (x264: High)
    logs = [ReaderLog(args.first_index + i) for i in range(args.count)]

    async def one(log, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await asyncio.wait_for(_whep_reader(args.base, args.room, log, args.t0, args.t1, args.by_rtp),
                                   args.t1 + 10 - time.monotonic())
        except Exception as error:  # noqa: BLE001 - any failure is a result to report
            log.error = f"{type(error).__name__}: {error}"

    await asyncio.gather(*(one(log, i * 0.05) for i, log in enumerate(logs)))
    return logs


def whep_worker(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bridges whep-worker")
    parser.add_argument("base")
    parser.add_argument("room")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--t0", type=float, required=True)
    parser.add_argument("--t1", type=float, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--by-rtp", action="store_true", help="log RTP timestamps instead of slice keys")
    args = parser.parse_args(argv)
    logs = asyncio.run(_whep_workers(args))
    Path(args.out).write_text(json.dumps([asdict(log) for log in logs]))
    return 0


# --- child: a WHIP publisher ----------------------------------------------------------------------

def _video_track(kind: str, width: int, height: int, fps: int = 30):
    """The WHIP publisher's camera: `testsrc2` (FFmpeg's lavfi test picture, the RTMP clip's picture)
    or the tests' PatternVideo; `first_at` is when aiortc's sender asks for the first frame."""
    import fractions

    import av
    from aiortc.mediastreams import MediaStreamTrack

    from tests.sfu.clients import PatternVideo

    class Testsrc2Video(MediaStreamTrack):
        """PatternVideo's pacing and timestamps with FFmpeg's testsrc2 picture: moving content that x264
        codes as P-frames (PatternVideo's rows are all alike, so x264 codes each of its frames as intra)."""

        kind = "video"

        def __init__(self, width: int, height: int, fps: int) -> None:
            super().__init__()
            self.fps = fps
            self._count = 0
            self._start: float | None = None
            container = av.open(f"testsrc2=size={width}x{height}:rate={fps}", format="lavfi")
            self._frames = container.decode(container.streams.video[0])

        async def recv(self):
            if self._start is None:
                self._start = time.monotonic()
            await asyncio.sleep(max(0.0, self._start + self._count / self.fps - time.monotonic()))
            frame = next(self._frames)
            frame.pts = self._count * (90000 // self.fps)
            frame.time_base = fractions.Fraction(1, 90000)
            self._count += 1
            return frame

    base = Testsrc2Video if kind == "testsrc2" else PatternVideo

    class Timed(base):
        first_at: float | None = None

        async def recv(self):
            if self.first_at is None:
                self.first_at = time.monotonic()  # the sender asks for its first frame: DTLS is up
            return await super().recv()

    return Timed(width, height, fps)


async def _whip_publish(args: argparse.Namespace) -> int:
    from aiortc import RTCRtpSender, RTCSessionDescription

    from tests.sfu.clients import http_async, peer_connection

    width, height = (int(v) for v in args.size.split("x"))
    track = _video_track(args.source, width, height)
    pc = peer_connection()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        transceiver = pc.addTransceiver(track, direction="sendonly")
        codecs = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in codecs if c.mimeType in ("video/H264", "video/rtx")])
        asked: list[float] = []  # when the server's PLIs (keyframe requests) came in
        sender, original = transceiver.sender, transceiver.sender._send_keyframe

        def send_keyframe() -> None:
            asked.append(time.monotonic())
            original()

        sender._send_keyframe = send_keyframe  # what aiortc calls on a PLI/FIR; the next frame is an IDR
        await pc.setLocalDescription(await pc.createOffer())
        posted = time.monotonic()
        print(f"posted={posted:.6f}", flush=True)
        status, headers, body = await http_async(
            "POST", f"{args.base}/whip/{args.room}", pc.localDescription.sdp.encode(),
            {"Content-Type": "application/sdp", "Authorization": f"Bearer {args.key}"})
        answered = time.monotonic()
        if status != 201:
            print(f"error=WHIP_{status} {body[:200]!r}", flush=True)
            return 1
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))
        print(f"answered={answered:.6f}", flush=True)
        deadline = time.monotonic() + args.seconds
        while track.first_at is None and not stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if track.first_at is not None:
            print(f"media_start={track.first_at:.6f}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, deadline - time.monotonic()))
        if track.first_at is not None:
            print("keyframe_requests=" + ",".join(f"{t - track.first_at:.3f}" for t in asked), flush=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(http_async("DELETE", args.base + headers["Location"]), 5)
        return 0
    finally:
        await pc.close()


def whip_publisher(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bridges whip-publisher")
    parser.add_argument("base")
    parser.add_argument("room")
    parser.add_argument("key")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--source", choices=("testsrc2", "pattern"), default="testsrc2")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    return asyncio.run(_whip_publish(args))


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.bridges", *args]


# --- part 1: RTMP -> WebRTC ------------------------------------------------------------------------

def webrtc_case(server, publisher: subprocess.Popen, sends, count: int, args, tmp: Path, by_rtp: bool = False) -> dict:
    """N WHEP subscribers of the running RTMP stream; figures as bench.run.run_case gives them.
    `by_rtp`: frames matched by RTP timestamp (`match_rtp`; `sends` keyed by pts) instead of slice key."""
    from .run import measure_window, split
    from .stats import summarize

    row = {"case": f"webrtc-{count}", "kind": "whep", "server": server.name}
    if publisher.poll() is not None:
        raise RuntimeError(f"{server.name}: the publisher exited:\n{server.log()}")
    t0 = time.monotonic() + WHEP_STARTUP + args.warmup
    t1 = t0 + args.seconds
    shares = split(count, math.ceil(count / args.subs_per_proc))
    procs, outs = [], []
    for i, (first, n) in enumerate(shares):
        outs.append(tmp / f"whep-{count}-{i}.json")
        procs.append(subprocess.Popen(_python("whep-worker", server.service.url(""), server.room_id, "--count", str(n),
                                              "--first-index", str(first), "--t0", f"{t0:.6f}", "--t1", f"{t1:.6f}",
                                              "--out", str(outs[-1]), *(["--by-rtp"] if by_rtp else [])),
                                      cwd=ROOT))
    usage, machine_pct, readers = measure_window(server, publisher, procs, outs, shares, t0, t1)
    time.sleep(1.0)  # the publisher flushes its send log every 0.5 s
    sent = sends()
    matching = []
    if by_rtp:
        for reader in readers:
            reader["frames"], found = match_rtp(reader["frames"], sent)
            matching.append(found)
    summary = summarize(readers, sent, t0, t1)
    late = [r["index"] for r in readers if r["first_frame_at"] is None or r["first_frame_at"] > t0 - args.warmup / 2]
    print(f"  WebRTC x{count}: server CPU {usage['server'].cpu_pct:.1f}%, fps min {summary['fps_min']}, "
          f"lag p50 {summary['lag_median_ms'] or 0:.1f} / p99 {summary['lag_p99_ms'] or 0:.1f} ms, "
          f"{summary['frames_unmatched']} unmatched, {summary['readers_behind']} behind", flush=True)
    return {
        **row, "readers_requested": count, "window_s": round(t1 - t0, 3),
        "server_cpu_pct": round(usage["server"].cpu_pct, 2),
        "server_rss_mib": round(usage["server"].rss_mib_max, 1),
        "publisher_cpu_pct": round(usage["publisher"].cpu_pct, 2),
        "client_cpu_pct": [round(u.cpu_pct, 1) for name, u in usage.items() if name.startswith("client")],
        "machine_cpu_pct": round(machine_pct, 1),
        "other_cpu_pct": round(max(0.0, machine_pct - sum(u.cpu_pct for u in usage.values())), 1),
        "joined_late": late,  # first frame less than warmup/2 before the window: its GOP burst may be in it
        "join_s": [round(r["first_frame_at"] - r["connected_at"], 3) for r in readers
                   if r["first_frame_at"] and r["connected_at"]],
        **summary,
        **({"rtp_matching": matching} if by_rtp else {}),
    }  # fmt: skip


def webrtc_part(args, tmp: Path, bframes: bool = False) -> dict:
    """RTMP -> WebRTC. `bframes`: the clip with B-frames, which the server re-encodes for WebRTC
    (a rendition), so frames are matched by RTP timestamp, not by their bytes."""
    from .microvibe import MicroVibe
    from .run import CASES, Case, run_case, start_publisher
    from .source import source_flv
    from .stats import load_sends

    source = source_flv(bframes=bframes)
    if bframes:
        pts, loop_len = clip_pts(source)
        check = {"frames": len(pts), "distinct_pts": len(set(pts)), "loop_ms": loop_len}
    else:
        mapping, check = clip_keys(source)
    print(f"clip {source.name}: {check}", flush=True)
    result: dict = {"clip": source.name, "key_check": check, "rows": [], "bframes": bframes}
    counts = [int(c) for c in args.counts.split(",")]
    try:
        with MicroVibe(hls=False) as server:
            print(f"MicroVibe: RTMP -> WebRTC{' (B-frames re-encoded)' if bframes else ''}, {args.counts} "
                  f"subscribers", flush=True)
            pub_log = tmp / f"publisher-webrtc{'-bframes' if bframes else ''}.log"
            publisher = start_publisher(server, source, pub_log)
            try:
                time.sleep(2.0)  # a first GOP through the server before anyone plays
                for count in counts:
                    if bframes:
                        sends = lambda: sends_by_pts(pub_log, pts, loop_len)  # noqa: E731
                    else:
                        sends = lambda: translate_sends(load_sends(pub_log), mapping)  # noqa: E731
                    result["rows"].append(webrtc_case(server, publisher, sends, count, args, tmp, by_rtp=bframes))
                    time.sleep(1.0)
                    case = CASES.get(f"rtmp-{count}") or Case(f"rtmp-{count}", "rtmp", count)
                    rtmp = run_case(server, publisher, pub_log, case, args, tmp)
                    result["rows"].append({**rtmp, "kind": "rtmp-same-stream"})
                    time.sleep(1.0)
            finally:
                publisher.terminate()
                publisher.wait(10)
    except Exception as error:  # noqa: BLE001 - reported in the table
        import traceback

        traceback.print_exc()
        result["error"] = f"failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    return result


# --- part 2: WHIP -> HLS startup ---------------------------------------------------------------------

def whip_startup_run(server, args) -> dict:
    """One fresh room: the WHIP POST to the first playlist that lists a fetchable segment (bench/hls.py's rule)."""
    from .hls import RUN_TIMEOUT, poll_first_segment

    room_id, key, playlist_url = server.new_whip_stream()
    publisher = subprocess.Popen(_python("whip-publisher", server.service.url(""), room_id, key, "--size",
                                         args.whip_size, "--source", args.whip_source,
                                         "--seconds", str(RUN_TIMEOUT + 5)),
                                 cwd=ROOT, stdout=subprocess.PIPE, text=True)
    row: dict = {"polls": 0}
    try:
        first = ""
        if publisher.stdout and select.select([publisher.stdout], [], [], CHILD_START_TIMEOUT)[0]:
            first = publisher.stdout.readline()  # printed just before the POST
        if first.startswith("posted="):
            poll_first_segment(playlist_url, publisher, row)
    finally:
        publisher.terminate()
        try:
            rest, _ = publisher.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            publisher.kill()
            rest, _ = publisher.communicate()
    stamps = dict(field.split("=", 1) for field in (first + rest).split() if "=" in field)
    if "answered" not in stamps:
        return {**row, "error": stamps.get("error") or f"the WHIP publisher did not start:\n{server.log()}"}
    row.update({k: float(stamps[k]) for k in ("posted", "answered", "media_start") if k in stamps})
    # s after the first frame at which the server's keyframe requests reached the publisher
    row["keyframe_requests"] = [float(v) for v in stamps.get("keyframe_requests", "").split(",") if v]
    row["signaling_ms"] = round(1000 * (row["answered"] - row["posted"]), 1)  # POST to the 201 answer
    if "media_start" not in row:
        return {**row, "error": "no media: ICE/DTLS did not connect"}
    row["connect_ms"] = round(1000 * (row["media_start"] - row["answered"]), 1)  # answer to the first frame
    row["setup_ms"] = round(1000 * (row["media_start"] - row["posted"]), 1)
    if "playlist_at" not in row:
        return {**row, "error": f"no playable playlist in {RUN_TIMEOUT:g} s"}
    row["startup_s"] = round(row["playlist_at"] - row["posted"], 3)
    row["startup_with_segment_s"] = round(row["segment_at"] - row["posted"], 3)
    return row


def hls_part(args) -> dict:
    from .microvibe import MicroVibe

    result: dict = {"server": "MicroVibe", "runs": []}
    try:
        with MicroVibe(hls=True) as server:
            print(f"MicroVibe: WHIP -> HLS startup, {args.runs} runs, {args.whip_size} {args.whip_source}", flush=True)
            for i in range(args.runs):
                r = whip_startup_run(server, args)
                result["runs"].append(r)
                print(f"  run {i + 1}: " + (f"{r['startup_s']:.3f} s (POST to answer {r['signaling_ms']:.0f} ms, "
                                              f"to first frame {r['connect_ms']:.0f} ms, first segment "
                                              f"{r['segment_s']:g} s)" if "startup_s" in r
                                              else r["error"].splitlines()[0]), flush=True)
                time.sleep(0.5)
    except Exception as error:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        result["error"] = f"failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    ok = [r for r in result["runs"] if "startup_s" in r]
    values = sorted(r["startup_s"] for r in ok)
    result["summary"] = {"runs_ok": len(ok), "runs": len(result["runs"])}
    if values:
        result["summary"].update({
            "startup_median_s": round(statistics.median(values), 3), "startup_min_s": values[0],
            "startup_max_s": values[-1],
            "setup_median_ms": round(statistics.median(r["setup_ms"] for r in ok), 1),
            "signaling_median_ms": round(statistics.median(r["signaling_ms"] for r in ok), 1),
            "connect_median_ms": round(statistics.median(r["connect_ms"] for r in ok), 1),
            "from_media_median_s": round(statistics.median(r["playlist_at"] - r["media_start"] for r in ok), 3),
            "with_segment_median_s": round(statistics.median(r["startup_with_segment_s"] for r in ok), 3),
            "first_segment_s": sorted({r["segment_s"] for r in ok}),
        })  # fmt: skip
    return result


# --- anchors from the other parts of `make bench` ----------------------------------------------------

def _latest(name: str) -> dict | None:
    path = OUT / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _run_label(data: dict) -> str:
    m = data.get("machine", {})
    return f"{m.get('date_utc', '?')} at commit {m.get('git_commit', '?')}"


# --- report ---------------------------------------------------------------------------------------

def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _lag_row(count: int, path: str, r: dict) -> str:
    if r.get("skipped"):
        return f"| {count} | {path} | {r['server']} | {r['skipped']} | | | | | | | |"
    clients = r.get("client_cpu_pct", [])
    return (f"| {count} | {path} | {r['server']} | {r['readers_with_frames']}/{r['readers']} "
            f"| {_f(r['lag_median_ms'])} / {_f(r['lag_p99_ms'])} / {_f(r['lag_max_ms'])} "
            f"| {_f(r['fps_min'])} / {_f(r['fps_median'])} | {r['readers_behind']} | {_f(r['server_cpu_pct'])} "
            f"| {_f(max(clients, default=None))} / {len(clients)} | {_f(r['publisher_cpu_pct'])} "
            f"| {_f(r['other_cpu_pct'])} |")


def webrtc_section(part: dict, fanout: dict | None, machine: dict, args) -> str:
    m = machine
    bframes = part.get("bframes")
    clip = ("the 720p30 clip with its B-frames, which the server re-encodes without them for WebRTC" if bframes
            else "the 720p30 clip, `-bf 0`")
    lines = [
        f"Run {m['date_utc']} at commit {m['git_commit']}: {m['nproc']} cores ({m['cpu_model']}), Linux {m['kernel']}, "
        f"Python {m['python']}. Source: `{part['clip']}` ({clip}), one RTMP publisher into "
        f"MicroVibe (HLS off); each case {args.warmup:g} s warm-up, {args.seconds:g} s measured; WHEP subscribers "
        f"at most {args.subs_per_proc} per process, not decoding.",
        "",
        "| viewers | path | server | viewers ok | lag p50 / p99 / max ms | fps min / med | behind | server CPU % "
        "| client CPU % (max proc / procs) | publisher CPU % | other CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if part.get("error") and not part["rows"]:
        lines.append(f"| | | MicroVibe | {part['error']} | | | | | | | |")
    fan_rows = {(r["case"], r["server"]): r for r in (fanout or {}).get("results", [])}
    adds = []
    for count in [int(c) for c in args.counts.split(",")]:
        web = next((r for r in part["rows"] if r["case"] == f"webrtc-{count}"), None)
        same = next((r for r in part["rows"] if r.get("kind") == "rtmp-same-stream" and r["readers"] == count), None)
        if web:
            lines.append(_lag_row(count, "WebRTC (WHEP)", web))
        if same:
            lines.append(_lag_row(count, "RTMP, same stream", same))
        for server in ("MicroVibe", "nginx-rtmp"):
            ref = fan_rows.get((f"rtmp-{count}", server))
            if ref:
                lines.append(_lag_row(count, "RTMP, fan-out run", ref))
            else:
                lines.append(f"| {count} | RTMP, fan-out run | {server} | n/a: no rtmp-{count} row in "
                             f"bench/out/latest.json | | | | | | | |")
        if web and same and not web.get("skipped") and not same.get("skipped") and web["lag_median_ms"] is not None \
                and same["lag_median_ms"] is not None:
            adds.append(f"{count}: {web['lag_median_ms'] - same['lag_median_ms']:+.1f} / "
                        f"{web['lag_p99_ms'] - same['lag_p99_ms']:+.1f} ms")
    notes = [""]
    if adds:
        notes.append(f"WebRTC minus RTMP on the same stream, p50 / p99, by viewers: {'; '.join(adds)}.")
    if fanout:
        notes.append(f"Fan-out rows: `bench/out/latest.json`, run {_run_label(fanout)} "
                     f"({'the same clip' if bframes else 'its own clip, with B-frames'}; same publisher and RTMP "
                     f"readers).")
    joins = [s for r in part["rows"] if r["case"].startswith("webrtc-") for s in r.get("join_s", [])]
    if joins:
        notes.append(f"WHEP answer to first frame: median {statistics.median(joins) * 1000:.0f} ms, worst "
                     f"{max(joins) * 1000:.0f} ms (the GOP-cache start; its frames are before the window).")
    unmatched = sum(r.get("frames_unmatched", 0) for r in part["rows"] if r["case"].startswith("webrtc-"))
    check = part["key_check"]
    if bframes:
        found = [f for r in part["rows"] for f in r.get("rtp_matching", []) if f.get("frames")]
        gaps = [f["next_median_ms"] - f["lag_median_ms"] for f in found if f.get("next_median_ms") is not None]
        notes.append(f"Frames matched by RTP timestamp ({check['distinct_pts']} distinct pts for {check['frames']} "
                     f"frames of the clip): {unmatched} WebRTC frames in the windows matched no send; per subscriber, "
                     f"the next best origin's median lag was {min(gaps, default=0):.0f} ms or more longer.")
    else:
        notes.append(f"Frame keys: {check['distinct_slice_keys']} distinct last-slice keys for {check['frames']} "
                     f"frames of the clip; {unmatched} WebRTC frames in the windows matched no send.")
    late = {r["case"]: r["joined_late"] for r in part["rows"] if r.get("joined_late")}
    if late:
        notes.append(f"Joined late (first frame after half the warm-up): {late}.")
    errors = [f"{r['case']}: {', '.join(r['errors'])}" for r in part["rows"] if r.get("errors")]
    if errors:
        notes.append(f"Errors: {'; '.join(errors)}.")
    if part.get("error") and part["rows"]:
        notes.append(f"The run stopped early: {part['error']}.")
    return "\n".join(lines + notes)


def _startup_row(path: str, server: str, st: dict | None, setup: str) -> str:
    if not st or not st.get("runs_ok"):
        ok = f"0/{st['runs']}" if st else "n/a: not run"
        return f"| {path} | {server} | {ok} | | | | | | | |"
    return (f"| {path} | {server} | {st['runs_ok']}/{st['runs']} | {st['startup_median_s']:.3f} "
            f"| {st['startup_min_s']:.3f} | {st['startup_max_s']:.3f} | {setup} "
            f"| {st['from_media_median_s']:.3f} | {st['with_segment_median_s']:.3f} | {_span(st['first_segment_s'])} |")


def _span(values: list[float]) -> str:
    low, high = f"{min(values):.2f}", f"{max(values):.2f}"
    return low if low == high else f"{low}-{high}"


def hls_section(part: dict, hls: dict | None, machine: dict, args) -> str:
    from .hls import POLL

    m = machine
    st = part["summary"]
    lines = [
        f"Run {m['date_utc']} at commit {m['git_commit']}: {m['nproc']} cores ({m['cpu_model']}), Linux {m['kernel']}, "
        f"Python {m['python']}. WHIP: an aiortc publisher, {args.whip_size} 30 fps H.264 (aiortc's libx264 "
        f"encoder, video only), a fresh room per run; `HLS_FRAGMENT=2`, playlist polled every {POLL * 1000:g} ms.",
        "",
        "| path | server | runs ok | startup med s | min s | max s | setup med ms | first media to playlist, med s "
        "| with the segment fetched, med s | first segment EXTINF s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    if part.get("error") and not part["runs"]:
        lines.append(f"| WHIP -> HLS | MicroVibe | {part['error']} | | | | | | | |")
    else:
        lines.append(_startup_row("WHIP -> HLS", "MicroVibe", st, _f(st.get("setup_median_ms"), 0)))
    servers = {s["server"]: s for s in (hls or {}).get("results", {}).get("servers", [])}
    for name in ("MicroVibe", "nginx-rtmp"):
        ref = servers.get(name, {}).get("startup")
        lines.append(_startup_row("RTMP -> HLS", name, ref, _f(ref.get("setup_median_ms"), 0) if ref else ""))
    lines.append("")
    if st.get("runs_ok"):
        lines.append(f"WHIP setup, median: POST to the 201 answer {st['signaling_median_ms']:.0f} ms, answer to the "
                     f"first video frame (ICE + DTLS) {st['connect_median_ms']:.0f} ms.")
    asked = [r["keyframe_requests"] for r in part["runs"] if "startup_s" in r]
    if asked:
        firsts = [statistics.median(a[i] for a in asked if len(a) > i) for i in range(max(map(len, asked)))]
        lines.append(f"Keyframe requests reaching the WHIP publisher, s after its first frame (median by order): "
                     f"{', '.join(f'{t:.2f}' for t in firsts[:5])}.")
    errors = [r["error"].splitlines()[0] for r in part["runs"] if r.get("error")]
    if errors:
        lines.append(f"Failed runs: {'; '.join(errors)}.")
    if part.get("error") and part["runs"]:
        lines.append(f"The run stopped early: {part['error']}.")
    if hls:
        lines.append(f"RTMP -> HLS rows: `bench/out/hls-latest.json`, run {_run_label(hls)} (the [HLS](#hls) "
                     f"section; setup = first RTMP byte to the first media tag).")
    else:
        lines.append("RTMP -> HLS rows: no `bench/out/hls-latest.json` (run `python -m bench --parts hls` first).")
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bridges",
                                     description="RTMP -> WebRTC added latency and WHIP -> HLS startup")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--counts", default="1,10", help="WebRTC subscribers per case")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per latency case")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up per latency case")
    parser.add_argument("--runs", type=int, default=5, help="WHIP -> HLS startup: fresh rooms")
    parser.add_argument("--subs-per-proc", type=int, default=4, help="WHEP subscribers per worker process")
    parser.add_argument("--whip-size", default="640x360", help="the WHIP publisher's picture (WxH), 30 fps")
    parser.add_argument("--whip-source", choices=("testsrc2", "pattern"), default="testsrc2",
                        help="the WHIP publisher's picture: FFmpeg's testsrc2 or the tests' PatternVideo")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.set_defaults(readers_per_proc=50)  # the RTMP control case (bench.run.run_case)
    args = parser.parse_args(argv)
    bad = [p for p in args.parts.split(",") if p not in PARTS]
    if bad:
        parser.error(f"unknown part(s) {', '.join(bad)}; known: {', '.join(PARTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "whep-worker":
        return whep_worker(argv[1:])
    if argv and argv[0] == "whip-publisher":
        return whip_publisher(argv[1:])
    args = parse_args(argv)
    parts = args.parts.split(",")
    results: dict = {}
    sections: dict[str, str] = {}
    code = 0
    with tempfile.TemporaryDirectory(prefix="mv-bench-bridges-") as tmp:
        if "webrtc" in parts:
            results["webrtc"] = webrtc_part(args, Path(tmp))
        if "webrtc-bframes" in parts:
            results["webrtc-bframes"] = webrtc_part(args, Path(tmp), bframes=True)
        if "hls" in parts:
            results["hls"] = hls_part(args)
    machine = report.machine_info(None)
    for name in ("webrtc", "webrtc-bframes"):
        if name not in results:
            continue
        part = results[name]
        sections[name] = webrtc_section(part, _latest("latest.json"), machine, args)
        failed = part.get("error") or any(r.get("skipped") or r["readers_with_frames"] < r["readers"]
                                          for r in part["rows"])
        code |= 1 if failed else 0
    if "hls" in results:
        part = results["hls"]
        sections["hls"] = hls_section(part, _latest("hls-latest.json"), machine, args)
        code |= 1 if part.get("error") or part["summary"]["runs_ok"] != args.runs else 0
    for text in sections.values():
        print()
        print(text)
    settings = {k: getattr(args, k) for k in ("parts", "counts", "seconds", "warmup", "runs", "subs_per_proc",
                                              "whip_size", "whip_source")}
    path = report.write_json(OUT, results, machine, settings, prefix="bridges-")
    print(f"\nraw numbers: {path.relative_to(ROOT)}")
    if not args.no_doc:
        for name, text in sections.items():
            start, end = MARKERS[name]
            report.write_doc(text, "# Benchmarks\n", start=start, end=end, heading=HEADINGS[name])
        print(f"bridges sections written to {report.DOC.relative_to(ROOT)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
