"""Record real RTMP clients talking to our server: the byte fixtures of tests/rtmp/test_captures.py.

Run by hand, never by the suite (it needs the clients, a running service and ~20 s of wall time).
To re-record, from the repository root (Debian; root for apt-get):

    apt-get install ffmpeg gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
        gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
    .venv/bin/python -m tests.rtmp.captures.record            # all captures
    .venv/bin/python -m tests.rtmp.captures.record ffmpeg_play  # or some of them, by name

then run `.venv/bin/python -m pytest -q tests/rtmp/test_captures.py`. If a client's behaviour changed (a count rule
in the test no longer holds), look at the new capture before changing the rule.

How: `manage.py serve` starts on free loopback ports (tests.support.procs.Service), a fresh room per capture gives a
stream key, and a small TCP relay on another loopback port sits between the client and the server's RTMP port,
keeping each direction's bytes. Each client sends ~2.5 s of 320x240 H.264 + AAC and ends on its own, so the whole
conversation (handshake to close) is captured. For each NAME this writes, next to this file:

    NAME.c2s.bin.gz   client -> server bytes (gzip, mtime 0)
    NAME.s2c.bin.gz   server -> client bytes
    NAME.json         client, versions, command line, app/stream name, what the client says it sent or received:
                      ffmpeg's own end-of-run packet counts (-loglevel verbose); for GStreamer, the tags of flvmux's
                      output, teed to a file next to the RTMP sink and walked here

The stream keys in the fixtures are throwaway keys of a throwaway database.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gzip
import json
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.api import api, create_room, register
from tests.support.procs import Service, free_port, require_tool

HERE = Path(__file__).resolve().parent
SIZE, FPS, RATE = "320x240", 30, 44100
SECONDS = 2.5
VIDEO_FRAMES = int(SECONDS * FPS)  # 75
AUDIO_BUFFERS = round(SECONDS * RATE / 1024)  # 108 buffers of 1024 samples: GStreamer's audio input
PLAY_PUBLISHER_SECONDS = SECONDS + 1.5  # the player joins ~1 s in and plays to the end


def media(channels: int) -> dict:
    """What the client encodes (ffmpeg's sine source is mono; the GStreamer pipelines ask for stereo)."""
    width, height = (int(v) for v in SIZE.split("x"))
    return {"video": {"codec": "h264", "width": width, "height": height, "fps": FPS},
            "audio": {"codec": "aac", "sample_rate": RATE, "channels": channels}}


# --- the relay -------------------------------------------------------------------------------------------------------


@dataclass
class Conversation:
    c2s: bytearray = field(default_factory=bytearray)
    s2c: bytearray = field(default_factory=bytearray)
    done: threading.Event = field(default_factory=threading.Event)


class Relay:
    """127.0.0.1:port -> 127.0.0.1:target, in a thread of its own; each connection's two directions are kept."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.conversations: list[Conversation] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def take(self, timeout: float = 15.0) -> Conversation:
        """The one conversation since the last take(), once both sides closed."""
        deadline = time.monotonic() + timeout
        while not self.conversations and time.monotonic() < deadline:
            time.sleep(0.05)
        if len(self.conversations) != 1:
            raise RuntimeError(f"expected one connection through the relay, saw {len(self.conversations)}")
        conv = self.conversations.pop()
        if not conv.done.wait(max(0.0, deadline - time.monotonic())):
            raise RuntimeError("the relayed connection did not close")
        return conv

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        conv = Conversation()
        self.conversations.append(conv)
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        try:
            await asyncio.gather(self._pump(client_r, server_w, conv.c2s), self._pump(server_r, client_w, conv.s2c))
        finally:
            for w in (client_w, server_w):
                w.close()
            conv.done.set()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep: bytearray) -> None:
        try:
            while data := await reader.read(1 << 16):
                keep += data
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass


# --- the clients -----------------------------------------------------------------------------------------------------


def first_line(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.splitlines()[0].strip()


def deb_version(package: str) -> str:
    return subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True).stdout


def ffmpeg_versions() -> dict[str, str]:
    return {"ffmpeg": first_line([require_tool("ffmpeg"), "-version"]), "libx264": deb_version("libx264-164")}


def gst_versions(sink: str) -> dict[str, str]:
    inspect = subprocess.run([require_tool("gst-inspect-1.0"), sink], capture_output=True, text=True).stdout
    plugin = re.search(r"^\s+Version\s+(\S+)", inspect, re.M)
    versions = {
        "gstreamer": first_line([require_tool("gst-launch-1.0"), "--version"]),
        sink: f"{plugin.group(1) if plugin else '?'} (gst-plugins-bad {deb_version('gstreamer1.0-plugins-bad')})",
        "libx264": deb_version("libx264-164"),
    }
    if sink == "rtmpsink":
        versions["librtmp1"] = deb_version("librtmp1")
    return versions


def ffmpeg_publish_cmd(url: str, seconds: float = SECONDS) -> list[str]:
    # x264's default B-frame decisions (up to 2), as OBS's x264 sends them: composition times are in the capture.
    return [require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "verbose", "-re",
            "-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate={FPS}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={RATE}",
            "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", str(FPS),
            "-keyint_min", str(FPS), "-b:v", "300k", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "64k", "-f", "flv", url]


def ffmpeg_counts(stderr: str, side: str) -> dict[str, int]:
    """ffmpeg's own end-of-run packet counts (-loglevel verbose): `Output stream #0:0 (video): ... 75 packets
    muxed` for what it sent, `Input stream #0:0 (video): 75 packets read` for what it read."""
    counts = {}
    for kind in ("video", "audio"):
        pattern = (rf"Output stream #\d+:\d+ \({kind}\):.*?(\d+) packets muxed" if side == "output"
                   else rf"Input stream #\d+:\d+ \({kind}\): (\d+) packets read")
        found = re.findall(pattern, stderr)
        if len(found) != 1:
            raise RuntimeError(f"no single {side} {kind} count in ffmpeg's output:\n{stderr[-3000:]}")
        counts[f"{kind}_frames"] = int(found[0])
    return counts


def gst_publish_cmd(url: str, sink: str, aac: str, flv_copy: Path) -> list[str]:
    """flvmux's output goes to the RTMP sink and, through a tee, to a file: what the sink was given, to count."""
    location = f"{url} live=1" if sink == "rtmpsink" else url  # librtmp options follow the URL
    width, height = SIZE.split("x")
    return [require_tool("gst-launch-1.0"), "-e",
            "videotestsrc", "is-live=true", f"num-buffers={VIDEO_FRAMES}", "pattern=smpte", "!",
            f"video/x-raw,width={width},height={height},framerate={FPS}/1", "!",
            "x264enc", "tune=zerolatency", "speed-preset=veryfast", "bitrate=300", f"key-int-max={FPS}", "!",
            "h264parse", "!", "queue", "!", "mux.",
            "audiotestsrc", "is-live=true", f"num-buffers={AUDIO_BUFFERS}", "samplesperbuffer=1024", "!",
            f"audio/x-raw,rate={RATE},channels=2", "!", "audioconvert", "!", aac, "!", "aacparse", "!",
            "queue", "!", "mux.",
            "flvmux", "name=mux", "streamable=true", "!", "tee", "name=t",
            "!", "queue", "!", sink, f"location={location}",
            "t.", "!", "queue", "!", "filesink", f"location={flv_copy}"]


def flv_counts(flv: bytes) -> dict[str, int]:
    """Tags of an FLV file by kind: coded frames (AVC/AAC packet type 1), headers, end of sequence, script data."""
    kinds = {(9, 1): "video_frames", (8, 1): "audio_frames", (9, 0): "video_sequence_headers",
             (8, 0): "audio_sequence_headers", (9, 2): "video_end_of_sequence", (18, None): "script_tags"}
    counts = dict.fromkeys(kinds.values(), 0)
    pos = 9 + 4  # FLV header, PreviousTagSize0
    while pos + 11 <= len(flv):
        tag_type, size = flv[pos], int.from_bytes(flv[pos + 1 : pos + 4], "big")
        body = flv[pos + 11 : pos + 11 + size]
        kind = kinds.get((tag_type, body[1] if tag_type != 18 and len(body) > 1 else None))
        if kind is None:
            raise RuntimeError(f"unexpected FLV tag type {tag_type} ({body[:2].hex()})")
        counts[kind] += 1
        pos += 11 + size + 4
    if pos != len(flv):
        raise RuntimeError("truncated FLV copy")
    return counts


def run(cmd: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


# --- the captures ----------------------------------------------------------------------------------------------------


@dataclass
class Context:
    service: Service
    relay: Relay
    token: str

    def room(self, title: str) -> dict:
        return create_room(self.service, self.token, title=title)

    def relayed(self, name: str) -> str:
        return f"rtmp://127.0.0.1:{self.relay.port}/live/{name}"

    def direct(self, name: str) -> str:
        return f"rtmp://127.0.0.1:{self.service.rtmp_port}/live/{name}"

    def wait_status(self, room: dict, status: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if api(self.service, f"/api/v1/live/{room['room']['room_id']}")[1]["data"]["status"] == status:
                return
            time.sleep(0.1)
        raise RuntimeError(f"room never became {status}:\n{self.service.log()[-3000:]}")


def capture_ffmpeg_publish(ctx: Context) -> tuple[Conversation, dict]:
    room = ctx.room("ffmpeg publish")
    cmd = ffmpeg_publish_cmd(ctx.relayed(room["stream_key"]))
    result = run(cmd)
    info = {"client": "ffmpeg", "versions": ffmpeg_versions(), "command": cmd, "role": "publish",
            "app": "live", "stream": room["stream_key"], **media(1), "sent": ffmpeg_counts(result.stderr, "output"),
            "counted_by": "ffmpeg -loglevel verbose: 'Output stream ... N packets muxed' (coded frames; the FLV muxer "
                          "adds the sequence headers, and an AVC end of sequence at the trailer)"}
    return ctx.relay.take(), info


def capture_ffmpeg_play(ctx: Context) -> tuple[Conversation, dict]:
    room = ctx.room("ffmpeg play")
    publisher = subprocess.Popen(ffmpeg_publish_cmd(ctx.direct(room["stream_key"]), seconds=PLAY_PUBLISHER_SECONDS),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ctx.wait_status(room, "live")
        time.sleep(0.5)
        # The player ends on its own at the server's NetStream.Play.UnpublishNotify when the publisher stops.
        cmd = [require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "verbose",
               "-i", ctx.relayed(room["room"]["room_id"]), "-map", "0", "-c", "copy", "-f", "null", "-"]
        result = run(cmd)
    finally:
        publisher.wait(20)
    info = {"client": "ffmpeg", "versions": ffmpeg_versions(), "command": cmd, "role": "play",
            "app": "live", "stream": room["room"]["room_id"], **media(1),
            "received": ffmpeg_counts(result.stderr, "input"),
            "counted_by": "ffmpeg -loglevel verbose: 'Input stream ... N packets read' (coded frames; the FLV demuxer "
                          "takes the sequence headers as codec config, not packets)",
            "publisher": ffmpeg_publish_cmd("rtmp://HOST/live/KEY", PLAY_PUBLISHER_SECONDS)}
    return ctx.relay.take(), info


def capture_gst(sink: str, aac: str) -> Callable[[Context], tuple[Conversation, dict]]:
    def capture(ctx: Context) -> tuple[Conversation, dict]:
        room = ctx.room(f"gstreamer {sink}")
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "sent.flv"
            cmd = gst_publish_cmd(ctx.relayed(room["stream_key"]), sink, aac, copy)
            run(cmd)
            sent = flv_counts(copy.read_bytes())
        cmd = [a.replace(str(copy), "SENT.flv") for a in cmd]
        info = {"client": f"GStreamer {sink}", "versions": gst_versions(sink), "command": cmd, "role": "publish",
                "app": "live", "stream": room["stream_key"], **media(2), "sent": sent,
                "counted_by": "FLV tags flvmux gave the sink, walked in a copy of its output (tee to SENT.flv)"}
        return ctx.relay.take(), info
    return capture


CAPTURES: dict[str, Callable[[Context], tuple[Conversation, dict]]] = {
    "ffmpeg_publish": capture_ffmpeg_publish,
    "ffmpeg_play": capture_ffmpeg_play,
    "gst_rtmpsink_publish": capture_gst("rtmpsink", "avenc_aac"),
    "gst_rtmp2sink_publish": capture_gst("rtmp2sink", "voaacenc"),
}


def save(name: str, conv: Conversation, info: dict) -> None:
    for direction in ("c2s", "s2c"):
        data = bytes(getattr(conv, direction))
        (HERE / f"{name}.{direction}.bin.gz").write_bytes(gzip.compress(data, 9, mtime=0))
        info[f"{direction}_bytes"] = len(data)
    info["recorded"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    (HERE / f"{name}.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"{name}: c2s {info['c2s_bytes']} B, s2c {info['s2c_bytes']} B, {info.get('sent') or info.get('received')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"captures to record (default: all): {list(CAPTURES)}")
    names = parser.parse_args().names or list(CAPTURES)
    if unknown := set(names) - set(CAPTURES):
        parser.error(f"unknown capture(s) {sorted(unknown)}; known: {list(CAPTURES)}")
    with Service() as service, Relay(service.rtmp_port) as relay:
        ctx = Context(service, relay, register(service, "recorder"))
        for name in names:
            save(name, *CAPTURES[name](ctx))


if __name__ == "__main__":
    main()
