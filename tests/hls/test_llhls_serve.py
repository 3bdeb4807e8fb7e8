"""LL-HLS over the media HTTP server: a real ffmpeg-encoded H.264 (B-frames) + AAC stream written
into the hub of a running media plane, read back with a real HTTP client (asyncio streams).

The playlist lists parts and a preload hint; every part is fetchable and lasts what the playlist
says; a complete segment is its parts, and init + segment decodes with ffmpeg with every picture;
a blocking reload and a preload-hint part request are answered only once the part exists (ordering,
no wall-clock bounds); bad directives get 400, unknown names 404, a block past block_timeout 503."""
from __future__ import annotations

import asyncio
import re
import struct
import subprocess

import pytest

from media.config import MediaConfig
from media.hls.ll_from_hub import PART_TYPE, PLAYLIST_TYPE
from media.hls.ll_playlist import part_uri
from media.hub.unit import TICKS_PER_MS, TIME_BASE, VIDEO, AccessUnit
from media.runtime import start_media_plane
from tests.media.fakes import FakeControl
from tests.support.flv_source import access_units, ffmpeg_flv
from tests.support.media import assert_no_decode_errors
from tests.support.procs import require_tool

ROOM = "llroom"
_PART = re.compile(r'#EXT-X-PART:DURATION=([0-9.]+),URI="([^"]+)"')


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: these tests need no Django."""


@pytest.fixture(scope="module")
def units():
    """4 s of 320x180 30 fps H.264 (1 s GOP, up to 2 B-frames) + AAC, as an RTMP publisher's units."""
    return access_units(ffmpeg_flv(seconds=4, gop=30, bframes=2))


async def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read(-1)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def settle(plane, stream) -> None:
    """Until the LL writer has taken every unit written so far."""
    ll = plane.llhls.streams[ROOM]
    while ll.reader.queued and ll.reader.stream is stream:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0)


async def publish(plane, units) -> object:
    stream = plane.registry.start(ROOM, protocol="rtmp")
    for unit in units:
        stream.write(unit)
        await asyncio.sleep(0)
    await settle(plane, stream)
    return stream


def _boxes(data: bytes, offset: int = 0, end: int | None = None):
    end = len(data) if end is None else end
    while offset < end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        yield kind, offset + 8, offset + size
        offset += size


def video_run(part: bytes) -> tuple[int, int]:
    """(tfdt, summed sample durations) of the video track (id 1, 90 kHz) in one moof+mdat."""
    for kind, start, end in _boxes(part):
        if kind != b"moof":
            continue
        for kind, traf, traf_end in _boxes(part, start, end):
            if kind != b"traf":
                continue
            boxes = {k: (s, e) for k, s, e in _boxes(part, traf, traf_end)}
            if struct.unpack_from(">I", part, boxes[b"tfhd"][0] + 4)[0] != 1:
                continue
            tfdt = struct.unpack_from(">Q", part, boxes[b"tfdt"][0] + 4)[0]
            trun = boxes[b"trun"][0]
            flags = struct.unpack_from(">I", part, trun)[0] & 0xFFFFFF
            count = struct.unpack_from(">I", part, trun + 4)[0]
            row = 4 * bin(flags & 0xF00).count("1")
            first = trun + 12
            return tfdt, sum(struct.unpack_from(">I", part, first + i * row)[0] for i in range(count))
    raise AssertionError("no video track in the part")


def listed_parts(playlist: str) -> list[tuple[float, str]]:
    return [(float(d), uri) for d, uri in _PART.findall(playlist)]


def count_video_frames(path: str) -> int:
    result = subprocess.run([require_tool("ffprobe"), "-v", "error", "-count_frames", "-select_streams", "v:0",
                             "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", path],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)
    assert_no_decode_errors(result, path)
    return int(result.stdout.strip())


async def test_playlist_parts_and_segments_decode(plane, units, tmp_path):
    port = plane.http_port
    media = [u for u in units if not u.config]
    cut = next(i for i, u in enumerate(units) if u.dts >= int(2.6 * TIME_BASE))
    await publish(plane, units[:cut])

    status, headers, body = await get(port, f"/hls/{ROOM}/ll.m3u8")
    assert status == 200 and headers["content-type"] == PLAYLIST_TYPE and headers["cache-control"] == "no-cache"
    playlist = body.decode()
    target = plane.llhls.streams[ROOM].playlist.options.part_target
    assert 0.15 < target <= 0.2  # 5 frames of 30 fps and a jitter margin
    assert f"#EXT-X-PART-INF:PART-TARGET={target:g}" in playlist and "CAN-BLOCK-RELOAD=YES" in playlist
    init_name = f"init{plane.llhls.streams[ROOM].first_msn}.mp4"  # a name no other publish here uses
    assert f'#EXT-X-MAP:URI="{init_name}"' in playlist
    hint = plane.llhls.streams[ROOM].playlist.next_part
    assert f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{part_uri(*hint)}"' in playlist
    parts = listed_parts(playlist)
    assert len(parts) >= 10

    status, headers, init = await get(port, f"/hls/{ROOM}/{init_name}")
    assert status == 200 and headers["content-type"] == "video/mp4" and headers["cache-control"] == "max-age=60"
    fetched = {}
    for duration, uri in parts:
        status, headers, data = await get(port, f"/hls/{ROOM}/{uri}")
        assert status == 200 and headers["content-type"] == PART_TYPE, uri
        _, ticks = video_run(data)
        assert ticks / TIME_BASE == pytest.approx(duration, abs=1e-5), uri
        assert duration <= target + 1e-6, uri  # the 85% floor is LowLatencyPlaylist.add_part's check
        fetched[uri] = data

    segments = [int(m) for m in re.findall(r"^seg([0-9]+)\.m4s$", playlist, re.M)]
    assert len(segments) >= 2
    for msn in segments[:2]:
        status, _, segment = await get(port, f"/hls/{ROOM}/seg{msn}.m4s")
        assert status == 200
        own = [data for uri, data in fetched.items() if uri.startswith(f"part{msn}.")]
        assert own and segment == b"".join(own)
        start = video_run(own[0])[0]
        end = start + sum(video_run(data)[1] for data in own)
        path = tmp_path / f"seg{msn}.mp4"
        path.write_bytes(init + segment)
        result = subprocess.run([require_tool("ffmpeg"), "-v", "error", "-i", str(path), "-f", "null", "-"],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)
        assert_no_decode_errors(result, path)
        expected = sum(1 for u in media if u.kind == VIDEO and start <= u.dts < end)
        assert expected == 30  # one 1 s GOP per segment
        assert count_video_frames(str(path)) == expected


async def test_blocking_reload_and_preload_hint_wait_for_the_part(plane, units):
    port = plane.http_port
    cut = next(i for i, u in enumerate(units) if u.dts >= int(1.5 * TIME_BASE))
    stream = await publish(plane, units[:cut])
    ll = plane.llhls.streams[ROOM]
    hint = ll.playlist.next_part
    reload = asyncio.ensure_future(get(port, f"/hls/{ROOM}/ll.m3u8?_HLS_msn={hint.msn}&_HLS_part={hint.part}"))
    preload = asyncio.ensure_future(get(port, f"/hls/{ROOM}/{part_uri(*hint)}"))
    for _ in range(20):  # both requests reach the server and are held
        await asyncio.sleep(0.01)
    assert not reload.done() and not preload.done()
    answered_with_part = []
    rest = iter(units[cut:])
    while not (reload.done() and preload.done()):
        unit = next(rest)
        stream.write(unit)
        await settle(plane, stream)
        await asyncio.sleep(0.01)
        if reload.done() or preload.done():
            answered_with_part.append(hint in ll.parts)
    assert answered_with_part and all(answered_with_part)
    status, _, body = reload.result()
    assert status == 200 and f'URI="{part_uri(*hint)}"' in body.decode()
    status, headers, data = preload.result()
    assert status == 200 and headers["content-type"] == PART_TYPE and data == ll.parts[hint]

    stream.close("publisher_left")
    await asyncio.sleep(0.05)
    status, _, body = await get(port, f"/hls/{ROOM}/ll.m3u8")
    assert status == 200 and body.decode().rstrip().endswith("#EXT-X-ENDLIST")
    assert "PRELOAD-HINT" not in body.decode()


async def test_bad_directives_unknown_names_and_timeout(plane, units):
    port = plane.http_port
    cut = next(i for i, u in enumerate(units) if u.dts >= int(1.5 * TIME_BASE))
    await publish(plane, units[:cut])
    ll = plane.llhls.streams[ROOM]
    hint = ll.playlist.next_part
    for query in (f"_HLS_msn={hint.msn + 5}", f"_HLS_msn={hint.msn}&_HLS_part=100", "_HLS_msn=abc",
                  "_HLS_msn=-1", "_HLS_part=1", "_HLS_skip=NO"):
        status, _, _ = await get(port, f"/hls/{ROOM}/ll.m3u8?{query}")
        assert status == 400, query
    for path in ("/hls/nosuch/ll.m3u8", "/hls/nosuch/init.mp4", f"/hls/{ROOM}/part{hint.msn}.{hint.part + 1}.m4s",
                 f"/hls/{ROOM}/seg{hint.msn}.m4s", f"/hls/{ROOM}/init1.mp4", f"/hls/{ROOM}/seg1.ts",
                 f"/hls/{ROOM}/part01.0.m4s"):
        status, _, _ = await get(port, path)
        assert status == 404, path
    status, _, body = await get(port, f"/hls/{ROOM}/ll.m3u8?_HLS_skip=YES")
    assert status == 200  # too short to skip anything yet, but a valid delta request
    # Nothing more is published: a blocking request ends in 503 after block_timeout.
    status, _, _ = await get(port, f"/hls/{ROOM}/ll.m3u8?_HLS_msn={hint.msn}&_HLS_part={hint.part}")
    assert status == 503


@pytest.mark.parametrize("fps", [24, 29.97, 60])
async def test_part_target_fits_the_frame_rate(plane, units, fps):
    """A fixed 0.2 s PART-TARGET fits no whole number of 24 or 29.97 fps frames within the RFC's
    85%..100%: the writer fits it to the frame rate, on RTMP's millisecond clock."""
    video = [u for u in units if u.kind == VIDEO]
    retimed, index = [], 0
    for unit in video:
        if unit.config:
            retimed.append(unit)
            continue
        dts = round(index * 1000 / fps) * TICKS_PER_MS
        offset = round((unit.pts - unit.dts) / TICKS_PER_MS * 30 / fps) * TICKS_PER_MS
        retimed.append(AccessUnit(VIDEO, unit.codec, dts, dts + offset, unit.payload, unit.keyframe))
        index += 1
    stream = await publish(plane, retimed)
    ll = plane.llhls.streams[ROOM]
    assert ll.failed is None
    target = ll.playlist.options.part_target
    assert target <= 0.2
    status, _, body = await get(plane.http_port, f"/hls/{ROOM}/ll.m3u8")
    parts = listed_parts(body.decode())
    assert status == 200 and len(parts) >= 10
    assert all(duration <= target + 1e-6 for duration, _ in parts)
    stream.close("publisher_left")


async def test_ll_names_beside_the_mpegts_route(units, tmp_path):
    """With MPEG-TS HLS on too, `/hls/{id}.m3u8` and `/hls/{id}/seg{N}.ts` stay its own, LL names are LL's."""
    config = MediaConfig(bind="127.0.0.1", rtmp_port=0, http_port=0, hls_path=str(tmp_path / "hls"),
                         llhls_enabled=True)
    plane = await start_media_plane(config, FakeControl().plane(), register_control=False)
    try:
        stream = await publish(plane, units[: len(units) // 2])
        # with the MPEG-TS route's player counting on, an LL player gets an id of its own first
        status, headers, body = await get(plane.http_port, f"/hls/{ROOM}/ll.m3u8")
        match = re.search(r"^ll\.m3u8\?ctx=([0-9a-f]{12})$", body.decode(), re.M)
        assert status == 200 and "#EXT-X-STREAM-INF" in body.decode() and match, body
        assert plane.registry.viewers.count(ROOM) == 0  # not a player until it loads its playlist
        for _ in range(3):  # reloads (hls.js adds its directives to the query) are the same player
            status, headers, body = await get(plane.http_port, f"/hls/{ROOM}/ll.m3u8?ctx={match[1]}&_HLS_skip=YES")
            assert status == 200 and "#EXT-X-PART:" in body.decode()
        assert plane.registry.viewers.count(ROOM) == 1
        [session] = plane.registry.viewers.all()
        assert session.protocol == "hls" and session.public_id == ROOM

        # its copy of the playlist names every part, the hint and the init under its id: its bytes
        tag = f"?ctx={match[1]}"
        status, _, body = await get(plane.http_port, f"/hls/{ROOM}/ll.m3u8{tag}")
        playlist = body.decode()
        uris = re.findall(r'URI="([^"]+)"', playlist)
        segments = re.findall(r"^(seg[0-9]+\.m4s.*)$", playlist, re.M)
        assert uris and segments and all(uri.endswith(tag) for uri in uris + segments), playlist
        hint = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]+)"', playlist)[1]
        sent = 0
        for uri in [u for u in uris if u != hint]:
            status, _, data = await get(plane.http_port, f"/hls/{ROOM}/{uri}")
            assert status == 200, uri
            sent += len(data)
        waiting = asyncio.ensure_future(get(plane.http_port, f"/hls/{ROOM}/{hint}"))  # held until it exists
        await asyncio.sleep(0.05)
        for unit in units[len(units) // 2:len(units) // 2 + 120]:
            stream.write(unit)
            await asyncio.sleep(0)
        status, _, data = await asyncio.wait_for(waiting, 5)
        assert status == 200
        sent += len(data)
        assert session.sent() == sent  # the held part's too

        assert plane.registry.viewers.drop(session.id)
        status, _, _ = await get(plane.http_port, f"/hls/{ROOM}/ll.m3u8?ctx={match[1]}")
        assert status == 403  # dropped by staff
        status, _, _ = await get(plane.http_port, f"/hls/{ROOM}/{uris[0]}")
        assert status == 403  # its media too

        # a republish numbers its segments past the last publish's: no name is served twice
        first = plane.llhls.streams[ROOM].playlist.next_part.msn
        plane.registry.end(ROOM, "publisher_left", stream=stream)
        await publish(plane, units[: len(units) // 2])
        assert plane.llhls.streams[ROOM].playlist.first_msn > first
        status, headers, body = await get(plane.http_port, f"/hls/{ROOM}.m3u8")
        assert status == 200 and "#EXT-X-STREAM-INF" in body.decode()  # the TS route's multivariant playlist
        status, _, _ = await get(plane.http_port, f"/hls/{ROOM}/seg99.ts")
        assert status == 404
    finally:
        await plane.stop()


def _listed_segments(playlist: str) -> list[tuple[int, str, bool]]:
    """(msn, its EXT-X-MAP URI, discontinuous) of each complete segment listed."""
    found, init, gap = [], None, False
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-MAP:URI="):
            init = line.split('"')[1]
        elif line == "#EXT-X-DISCONTINUITY":
            gap = True
        elif match := re.fullmatch(r"seg([0-9]+)\.m4s", line):
            found.append((int(match[1]), init, gap))
            gap = False
    return found


def _probe_size(path) -> str:
    result = subprocess.run([require_tool("ffprobe"), "-v", "error", "-select_streams", "v:0", "-show_entries",
                             "stream=width,height", "-of", "csv=p=0:s=x", str(path)],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)
    assert_no_decode_errors(result, path)
    return result.stdout.strip()


async def test_a_resumed_publish_with_new_codec_parameters_gets_a_new_init_section(plane, units, tmp_path):
    """OBS back after a blip at another resolution (reconnect grace): the LL playlist closes the
    open segment, marks a discontinuity and names a new init section; each init decodes its own
    segments with ffmpeg at its own size, every picture of the second publish there."""
    port = plane.http_port
    other = access_units(ffmpeg_flv(seconds=3, size="480x270", gop=30, bframes=2))
    stream = await publish(plane, units)
    registry = plane.registry
    assert registry.hold(ROOM, stream, "publisher_left", session_id=1, bytes_received=0,
                         end_session=lambda *_: None)
    assert registry.resume(ROOM, 1, protocol="rtmp") is not None
    for unit in other:
        stream.write(unit)
        await asyncio.sleep(0)
    await settle(plane, stream)
    registry.end(ROOM, "publisher_left", stream=stream)
    ll = plane.llhls.streams[ROOM]
    while not ll.playlist.ended:
        await asyncio.sleep(0.01)
    assert ll.failed is None

    status, _, body = await get(port, f"/hls/{ROOM}/ll.m3u8")
    assert status == 200
    listed = _listed_segments(body.decode())
    first = [s for s in listed if not s[2] and s[1] == f"init{ll.first_msn}.mp4"]
    resumed = next(i for i, s in enumerate(listed) if s[2])
    second = listed[resumed:]
    assert len(first) == resumed >= 3 and len(second) == 3, listed  # 4 s, then 3 s, of 1 s GOPs
    new_init = f"init{second[0][0]}.mp4"  # named by the first segment it is for
    assert all(init == new_init for _, init, _ in second) and all(not gap for *_, gap in second[1:])

    for segments, size, pictures in ((first, "320x180", 30 * len(first)), (second, "480x270", 90)):
        status, headers, init = await get(port, f"/hls/{ROOM}/{segments[0][1]}")
        assert status == 200 and headers["content-type"] == "video/mp4"
        whole = init
        for msn, *_ in segments:
            status, _, data = await get(port, f"/hls/{ROOM}/seg{msn}.m4s")
            assert status == 200, msn
            whole += data
        path = tmp_path / f"{size}.mp4"
        path.write_bytes(whole)
        assert _probe_size(path) == size
        assert count_video_frames(str(path)) == pictures, (size, segments)


async def test_an_hevc_stream_gets_ll_hls_in_hvc1(plane, tmp_path):
    """An Enhanced RTMP HEVC publish (units as the hub holds them): an hvc1 init, 1 s segments of
    parts, and init + every segment decodes with ffmpeg with every picture."""
    from .test_cmaf import hevc_clip

    units = hevc_clip(tmp_path)
    stream = await publish(plane, units)
    plane.registry.end(ROOM, "publisher_left", stream=stream)
    ll = plane.llhls.streams[ROOM]
    while not ll.playlist.ended:
        await asyncio.sleep(0.01)
    assert ll.failed is None
    status, _, body = await get(plane.http_port, f"/hls/{ROOM}/ll.m3u8")
    listed = _listed_segments(body.decode())
    assert status == 200 and len(listed) == 3 and "#EXT-X-PART:" in body.decode(), body.decode()
    status, _, whole = await get(plane.http_port, f"/hls/{ROOM}/{listed[0][1]}")
    assert status == 200 and b"hvc1" in whole and b"hvcC" in whole
    for msn, *_ in listed:
        status, _, data = await get(plane.http_port, f"/hls/{ROOM}/seg{msn}.m4s")
        assert status == 200, msn
        whole += data
    path = tmp_path / "hevc.mp4"
    path.write_bytes(whole)
    assert _probe_size(path) == "480x270"
    assert count_video_frames(str(path)) == 90
