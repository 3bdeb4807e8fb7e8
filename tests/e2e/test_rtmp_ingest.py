"""RTMP ingest and RTMP/HTTP-FLV playback, proven by real clients: ffmpeg pushes as OBS does,
ffmpeg/ffprobe/PyAV read back and count decoded frames."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import av
import pytest

from rtmp.codec.connection import ClientConnection
from tests.support.api import api
from tests.support.media import (
    FPS,
    HEIGHT,
    WIDTH,
    assert_live,
    decode_errors,
    ffmpeg_decode,
    ffmpeg_publish,
    ffprobe_streams,
    framemd5_frames,
    pyav_errors,
    wait_until,
)

pytestmark = pytest.mark.e2e


def rtmp_publish_url(service, room) -> str:
    return f"rtmp://127.0.0.1:{service.rtmp_port}/live/{room['stream_key']}"


def rtmp_play_url(service, room) -> str:
    return f"rtmp://127.0.0.1:{service.rtmp_port}/live/{room['room']['room_id']}"


def flv_url(service, room) -> str:
    return f"http://127.0.0.1:{service.media_http_port}/flv/{room['room']['room_id']}.flv"


def session_of(service, room) -> tuple | None:
    rows = service.query("SELECT s.ended_at, s.end_reason, s.bytes_received, r.status FROM live_livesession s "
                         "JOIN live_room r ON r.id = s.room_id WHERE r.public_id = %s ORDER BY s.id DESC",
                         room["room"]["room_id"])
    return rows[0] if rows else None


def room_status(service, room) -> str:
    return api(service, f"/api/v1/live/{room['room']['room_id']}")[1]["data"]["status"]


def start_publisher(service, room, **kwargs) -> subprocess.Popen:
    publisher = ffmpeg_publish(rtmp_publish_url(service, room), **kwargs)
    assert wait_until(lambda: room_status(service, room) == "live" or publisher.poll() is not None, 15), \
        service.log()
    assert publisher.poll() is None, publisher.stderr.read().decode()
    return publisher


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(10)


def media_connections(service) -> int:
    """TCP connections the service holds on its RTMP and media HTTP ports (listeners excluded):
    what a publisher or viewer would leave behind. Database and Redis sockets do not count."""
    ports = {service.rtmp_port, service.media_http_port}
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
                if local_port in ports and state != "0A":
                    inodes.add(inode)
    held = 0
    for fd in os.listdir(f"/proc/{service.proc.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{service.proc.pid}/fd/{fd}")
        except OSError:
            continue
        held += target.startswith("socket:[") and target[8:-1] in inodes
    return held


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_ffmpeg_push_plays_over_rtmp_and_flv_at_source_rate(service, room):
    publisher = start_publisher(service, room)
    try:
        time.sleep(1.5)  # join mid-GOP
        results: dict[str, object] = {}
        readers = [threading.Thread(target=lambda k=k, u=u: results.__setitem__(k, ffmpeg_decode(u, seconds=5)))
                   for k, u in (("rtmp", rtmp_play_url(service, room)), ("flv", flv_url(service, room)))]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(40)
        for kind, decoded in results.items():
            # 5 s of stream from the GOP cache's keyframe on, none lost: 5 * 30 pictures, 5 s of AAC
            assert_live(decoded, 5, what=kind)
            # read live: the frames arrive at the source rate
            assert decoded.elapsed < 5 + 3.5, (kind, decoded.elapsed)
            # timestamps start near 0 for every viewer, whenever it joined
            assert decoded.first_video_pts is not None and decoded.first_video_pts < 200, (kind, decoded)
        assert set(results) == {"rtmp", "flv"}
    finally:
        stop(publisher)


def test_ffprobe_sees_codecs_size_and_rate_and_a_late_viewer_starts_within_a_gop(service, room):
    publisher = start_publisher(service, room)
    try:
        time.sleep(2.3)
        streams = ffprobe_streams(rtmp_play_url(service, room))
        video, audio = streams["video"], streams["audio"]
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", WIDTH, HEIGHT)
        assert video["r_frame_rate"] in ("30/1", "60/2") and audio["codec_name"] == "aac"
        flv_streams = ffprobe_streams(flv_url(service, room))
        assert flv_streams["video"]["codec_name"] == "h264" and flv_streams["audio"]["codec_name"] == "aac"

        # first decoded picture: the GOP cache gives a keyframe at once
        started = time.monotonic()
        with pyav_errors() as errors, av.open(rtmp_play_url(service, room), timeout=10, options={
                "analyzeduration": "0", "probesize": "32768", "fflags": "nobuffer"}) as player:
            frame = next(player.decode(video=0))
        first_picture = time.monotonic() - started
        assert errors == [], errors
        assert (frame.width, frame.height) == (WIDTH, HEIGHT)
        assert first_picture < 1.0, first_picture  # one GOP is 1 s here
    finally:
        stop(publisher)


def test_wrong_key_is_refused_with_one_log_line(service, room):
    log_before = service.log()
    bad = ffmpeg_publish(f"rtmp://127.0.0.1:{service.rtmp_port}/live/sk_not_a_real_key", seconds=5)
    assert bad.wait(15) != 0
    new_lines = service.log()[len(log_before):].splitlines()
    refused = [line for line in new_lines if "refused" in line.lower()]
    assert len(refused) == 1, new_lines
    assert "sk_not_a_real_key" not in service.log()
    assert session_of(service, room) is None
    assert room_status(service, room) == "idle"


def test_second_publisher_is_refused_and_the_first_keeps_going(service, room):
    first = start_publisher(service, room)
    try:
        second = ffmpeg_publish(rtmp_publish_url(service, room), seconds=5)
        assert second.wait(15) != 0
        assert first.poll() is None
        decoded = ffmpeg_decode(rtmp_play_url(service, room), seconds=2)
        assert_live(decoded, 2)
    finally:
        stop(first)


def test_publisher_killed_ends_session_and_viewers_and_frees_everything(service, room):
    publisher = start_publisher(service, room)
    viewers = [subprocess.Popen(["ffmpeg", "-loglevel", "error", "-i", url, "-map", "0:v", "-f", "framemd5", "-"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for url in (rtmp_play_url(service, room), flv_url(service, room))]
    time.sleep(3)
    assert all(viewer.poll() is None for viewer in viewers)
    assert media_connections(service) >= 3
    publisher.send_signal(signal.SIGKILL)
    publisher.wait(5)
    # the viewers' streams end: ffmpeg exits by itself, with every picture up to the end decoded
    # cleanly: the last ones arrive whole, none is missing (what was sent is not known: the
    # publisher dies at a wall-clock instant, so the count is held to the pictures' own timeline)
    for viewer in viewers:
        out, err = viewer.communicate(timeout=15)
        counts, pts, _ = framemd5_frames(out)
        assert viewer.returncode == 0 and not decode_errors(err), err[-1500:]
        assert counts["video"] >= 2.5 * FPS, counts  # it watched 3 s before the kill
        assert counts["video"] == round((pts[-1] - pts[0]) * FPS) + 1, (counts, pts[0], pts[-1])
    assert wait_until(lambda: (session_of(service, room) or (None,))[0] is not None, 10)
    ended_at, reason, bytes_received, status = session_of(service, room)
    assert reason == "publisher_left" and bytes_received > 100_000 and status == "ended"
    assert wait_until(lambda: media_connections(service) == 0, 10), media_connections(service)


def test_staff_end_live_drops_the_publisher_within_a_second(service, room, streamer_token):
    publisher = start_publisher(service, room)
    try:
        status, body = api(service, f"/api/v1/live/{room['room']['room_id']}/end", {}, streamer_token)
        asked = time.monotonic()
        assert status == 200 and body["data"]["was_live"]
        # the RTMP server closes the connection; ffmpeg fails on its next write
        assert wait_until(lambda: publisher.poll() is not None, 5)
        assert time.monotonic() - asked < 1.5
        assert session_of(service, room)[1] == "dropped_by_staff"
    finally:
        stop(publisher)


def test_key_rotation_drops_the_publisher(service, room, streamer_token):
    publisher = start_publisher(service, room)
    try:
        status, _ = api(service, f"/api/v1/live/{room['room']['room_id']}/rotate-key", {}, streamer_token)
        assert status == 200
        assert wait_until(lambda: publisher.poll() is not None, 5)
        assert session_of(service, room)[1] == "key_rotated"
        retry = ffmpeg_publish(rtmp_publish_url(service, room), seconds=3)
        assert retry.wait(15) != 0  # the old key no longer works
    finally:
        stop(publisher)


def stalled_rtmp_viewer(service, room) -> socket.socket:
    """An RTMP player that completes play and then never reads again."""
    sock = socket.create_connection(("127.0.0.1", service.rtmp_port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    client = ClientConnection()
    sock.sendall(client.connect("live", f"rtmp://127.0.0.1:{service.rtmp_port}/live"))
    sock.settimeout(5)
    stream_id = None
    deadline = time.monotonic() + 10
    while stream_id is None and time.monotonic() < deadline:
        for event in client.receive_data(sock.recv(65536)):
            name = type(event).__name__
            if name == "Result" and event.values and isinstance(event.values[-1], float | int):
                stream_id = int(event.values[-1])
            elif name == "Result":
                sock.sendall(client.create_stream())
        sock.sendall(client.data_to_send())
    assert stream_id is not None
    sock.sendall(client.play(stream_id, room["room"]["room_id"]))
    return sock


def test_a_viewer_that_never_reads_keeps_memory_flat_and_others_at_full_rate(service, room):
    publisher = start_publisher(service, room, bitrate="3000k")
    try:
        time.sleep(1)
        stalled = stalled_rtmp_viewer(service, room)
        time.sleep(2)
        pid = service.proc.pid
        rss_start = rss_kib(pid)
        peak = rss_start
        decoded = {}
        reader = threading.Thread(target=lambda: decoded.setdefault("d", ffmpeg_decode(flv_url(service, room),
                                                                                          seconds=10)))
        reader.start()
        for _ in range(30):
            time.sleep(1)
            peak = max(peak, rss_kib(pid))
        reader.join(30)
        # 30 s at 3 Mbit/s would be ~11 MiB if the stalled viewer's bytes were kept
        assert peak - rss_start < 4 * 1024, (rss_start, peak)
        assert_live(decoded["d"], 10)
        assert decoded["d"].elapsed < 13, decoded["d"]
        # and the stalled viewer was dropped by the server: reading now drains to EOF (no timeout),
        # and what it holds is bounded by our 1 MiB cap plus the kernel's socket buffers
        stalled.settimeout(5)
        total = 0
        while chunk := stalled.recv(1 << 20):
            total += len(chunk)
        with open("/proc/sys/net/ipv4/tcp_wmem") as wmem:
            kernel_send_max = int(wmem.read().split()[2])
        assert total <= (1 << 20) + kernel_send_max + (256 << 10), total
        stalled.close()
    finally:
        stop(publisher)
