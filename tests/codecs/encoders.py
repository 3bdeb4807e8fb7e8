"""Real encoder output from PyAV's bundled FFmpeg (libx264, libvpx, aac, libopus), for codec helper tests."""

from __future__ import annotations

import io
from fractions import Fraction

import av

from tests.support.media import pyav_errors

_PATTERN = bytes(range(256)) * 2


def _frame(width: int, height: int, pix_fmt: str, index: int) -> av.VideoFrame:
    """A deterministic frame that moves between indices, so inter frames carry data."""
    frame = av.VideoFrame(width, height, pix_fmt)
    wide = pix_fmt.endswith(("10le", "10be"))
    for plane in frame.planes:
        size = plane.buffer_size
        if wide:  # keep 16-bit samples within 10 bits
            period = bytes(b for k in range(256) for b in ((k + 5 * index) & 0xFF, k & 0x03))
        else:
            period = _PATTERN[(7 * index) & 0xFF :][:256]
        plane.update((period * (size // len(period) + 1))[:size])
    frame.pts = index
    return frame


def h264_packets(
    width: int, height: int, profile: str, pix_fmt: str = "yuv420p", frames: int = 3, **options: str
) -> list[bytes]:
    """Annex B access units from libx264 (SPS/PPS inline in the first one), without B-frames."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
    ctx.time_base, ctx.framerate = Fraction(1, 30), Fraction(30)
    ctx.options = {"profile": profile, "bf": "0", "preset": "veryfast", **options}
    packets = []
    for i in range(frames):
        packets += ctx.encode(_frame(width, height, pix_fmt, i))
    packets += ctx.encode(None)
    return [bytes(p) for p in packets]


def h264_mp4_avcc(width: int, height: int, profile: str, pix_fmt: str = "yuv420p") -> tuple[bytes, bytes]:
    """(Annex B extradata from libx264, the avcC FFmpeg's MP4 muxer wrote from it)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30, options={"profile": profile, "bf": "0", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for i in range(2):
            out.mux(stream.encode(_frame(width, height, pix_fmt, i)))
        out.mux(stream.encode(None))
        annexb = bytes(stream.codec_context.extradata)
    buf.seek(0)
    with av.open(buf) as inp:
        avcc = bytes(inp.streams.video[0].codec_context.extradata)
    return annexb, avcc


def h264_decode(packets: list[bytes], extradata: bytes | None = None) -> list[list[bytes]]:
    """Decoded pictures (plane bytes) from FFmpeg's h264 decoder; AVCC framing when extradata is set.
    Fails on any error the decoder reports (it conceals damage and still returns a picture)."""
    ctx = av.CodecContext.create("h264", "r")
    if extradata is not None:
        ctx.extradata = extradata
    pictures = []
    with pyav_errors() as errors:
        for data in [*packets, None]:
            for frame in ctx.decode(None if data is None else av.Packet(data)):
                pictures.append([f"{frame.width}x{frame.height}".encode(), *(bytes(p) for p in frame.planes)])
    assert errors == [], errors
    return pictures


def vp8_packets(width: int, height: int, frames: int = 3) -> list[tuple[bytes, bool]]:
    """(frame, PyAV's keyframe flag) from libvpx."""
    ctx = av.CodecContext.create("libvpx", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, 30), Fraction(30)
    ctx.options = {"deadline": "realtime", "lag-in-frames": "0"}
    packets = []
    for i in range(frames):
        packets += ctx.encode(_frame(width, height, "yuv420p", i))
    packets += ctx.encode(None)
    return [(bytes(p), p.is_keyframe) for p in packets]


def aac_encoder(sample_rate: int, layout: str) -> tuple[bytes, list[bytes]]:
    """(extradata, raw AAC frames) from FFmpeg's native AAC encoder, from a second of silence."""
    ctx = av.CodecContext.create("aac", "w")
    ctx.sample_rate, ctx.layout, ctx.format = sample_rate, layout, "fltp"
    ctx.time_base = Fraction(1, sample_rate)
    ctx.open()
    packets = []
    for i in range(sample_rate // 1024):
        frame = av.AudioFrame(format="fltp", layout=layout, samples=1024)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate, frame.pts = sample_rate, i * 1024
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    return bytes(ctx.extradata), [bytes(p) for p in packets]


def aac_decode(extradata: bytes, packets: list[bytes]) -> list[tuple[int, int]]:
    """(sample rate, channels) of each frame FFmpeg's AAC decoder produced with this extradata."""
    ctx = av.CodecContext.create("aac", "r")
    ctx.extradata = extradata
    frames = []
    with pyav_errors() as errors:
        for data in [*packets, None]:
            frames += ctx.decode(None if data is None else av.Packet(data))
    assert errors == [], errors
    return [(f.sample_rate, f.layout.nb_channels) for f in frames]


def libopus_extradata(channels: int) -> bytes:
    """The OpusHead libopus writes as extradata."""
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format = 48000, "stereo" if channels == 2 else "mono", "s16"
    ctx.open()
    return bytes(ctx.extradata)
