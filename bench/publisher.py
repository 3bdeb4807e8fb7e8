"""One real-time publisher: the source FLV looped and paced by its timestamps.

Runs as its own process (`python -m bench.publisher URL FILE LOG`) so its pacing does not depend on
the orchestrator. For every coded video frame it appends "send_time key" to LOG (CLOCK_MONOTONIC,
system-wide on Linux, so readers in other processes can be compared with it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

from media.codecs.flv import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO
from rtmp.codec import FlvReader, amf0
from rtmp.codec.message import AUDIO, VIDEO

from .rtmpclient import RtmpSession, frame_key, is_coded_frame

CSID = {TAG_AUDIO: 4, TAG_VIDEO: 6}  # the chunk streams ffmpeg publishes on
MSG_TYPE = {TAG_AUDIO: AUDIO, TAG_VIDEO: VIDEO}


def load(path: str) -> tuple[dict, list, list]:
    """(metadata, sequence headers, media tags) of the source file."""
    with open(path, "rb") as f:
        tags = FlvReader().feed(f.read())
    meta: dict = {}
    headers, media = [], []
    for tag in tags:
        if tag.tag_type == TAG_SCRIPT:
            values = amf0.decode_all(tag.payload)
            if len(values) >= 2 and isinstance(values[1], dict):
                meta = values[1]
        elif tag.tag_type in MSG_TYPE:
            is_header = tag.payload[1] == 0  # AVC / AAC sequence header
            (headers if is_header else media).append(tag)
    return meta, headers, media


async def drain_input(session: RtmpSession) -> None:
    """Keep reading so the server's acks/pings are answered and its socket never fills."""
    while data := await session.reader.read(1 << 16):
        session.conn.receive_data(data)
        session.send(session.conn.data_to_send())


async def publish(url: str, path: str, log_path: str, seconds: float) -> None:
    meta, headers, media = load(path)
    session = RtmpSession(url)
    await session.open()
    session.send(session.conn.publish(session.stream_id, session.url.name))
    await session.wait_status("NetStream.Publish.Start")
    reader_task = asyncio.create_task(drain_input(session))
    conn, sid = session.conn, session.stream_id
    session.send(conn.metadata(sid, meta))
    for tag in headers:
        session.send(conn.send_message(CSID[tag.tag_type], MSG_TYPE[tag.tag_type], sid, 0, tag.payload))
    first = media[0].timestamp
    loop_len = media[-1].timestamp - first + 33  # one frame interval after the last tag
    start = time.monotonic()
    # Wall times of the first RTMP byte (handshake C0) and of the first media tag, for startup
    # measurements (HLS startup); the server's answer to `publish` came in between.
    print(f"publishing first_byte={session.first_send_at:.6f} media_start={start:.6f}", flush=True)
    deadline = start + seconds
    with open(log_path, "w", buffering=1 << 16) as log:
        last_flush = start
        offset = 0
        while time.monotonic() < deadline and not reader_task.done():
            for tag in media:
                ts = tag.timestamp - first + offset
                due = start + ts / 1000
                if (delay := due - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                now = time.monotonic()
                session.send(conn.send_message(CSID[tag.tag_type], MSG_TYPE[tag.tag_type], sid, ts, tag.payload))
                if tag.tag_type == TAG_VIDEO and is_coded_frame(tag.payload):
                    log.write(f"{now:.6f} {frame_key(tag.payload)}\n")
                await session.writer.drain()
                if now - last_flush > 0.5:  # the orchestrator reads the log after each case
                    log.flush()
                    last_flush = now
                if now > deadline:
                    break
            offset += loop_len
    reader_task.cancel()
    with contextlib.suppress(BaseException):
        await reader_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("file")
    parser.add_argument("log")
    parser.add_argument("--seconds", type=float, default=3600)
    args = parser.parse_args()
    try:
        asyncio.run(publish(args.url, args.file, args.log, args.seconds))
    except (ConnectionError, OSError) as error:
        print(f"publisher: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
