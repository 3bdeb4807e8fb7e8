"""Recordings on the control plane: a fragmented MP4 (as the media node writes it) finalized into
a faststart MP4 with a thumbnail; listed by the API; served with Range; deleted with its files."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from live import recordings, services
from live.models import Recording, RecordingStatus
from tests.support.procs import require_tool


@pytest.fixture
def recordings_dir(settings, tmp_path):
    settings.RECORDINGS_PATH = str(tmp_path / "recordings")
    return recordings.recordings_root()


def fragmented_mp4(path: Path, seconds: int = 6, size: str = "320x180", bitrate: str = "") -> None:
    """What the media node writes: fragmented MP4 (moov first, empty; moof+mdat per keyframe)."""
    rate = ["-b:v", bitrate, "-minrate", bitrate, "-maxrate", bitrate, "-bufsize", bitrate] if bitrate else []
    subprocess.run([require_tool("ffmpeg"), "-y", "-loglevel", "error", "-f", "lavfi",
                    "-i", f"testsrc2=size={size}:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast" if bitrate else "veryfast", *rate,
                    "-g", "30", "-c:a", "aac", "-movflags", "frag_keyframe+empty_moov+default_base_moof", str(path)],
                   check=True, timeout=60)


def top_level_boxes(path: Path) -> list[str]:
    data, boxes, offset = path.read_bytes(), [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        boxes.append(data[offset + 4:offset + 8].decode())
        if size < 8:
            break
        offset += size
    return boxes


def ffprobe(path_or_url: str) -> dict:
    out = subprocess.run([require_tool("ffprobe"), "-v", "error", "-show_format", "-show_streams", "-of", "json",
                          path_or_url], capture_output=True, text=True, check=True, timeout=30)
    return json.loads(out.stdout)


def test_a_room_that_records_gets_a_recording_per_live_session(room_and_key):
    room, key = room_and_key
    services.publish_start(stream_key=key, protocol="rtmp")
    assert recordings.recording_begin(public_id=room.public_id) is None  # not a recording room
    services.room_recording_update(room=room, recording=True)
    recording = recordings.recording_begin(public_id=room.public_id)
    assert recording.status == RecordingStatus.RECORDING and recording.session is not None
    assert key not in recording.part_name and room.public_id not in recording.part_name


def test_finalize_makes_a_faststart_mp4_and_a_thumbnail(room_and_key, recordings_dir,
                                                       django_capture_on_commit_callbacks):
    room, _ = room_and_key
    services.room_recording_update(room=room, recording=True)
    recording = recordings.recording_begin(public_id=room.public_id)
    fragmented_mp4(recordings_dir / recording.part_name)
    with django_capture_on_commit_callbacks(execute=True):  # the task runs eagerly here
        recordings.recording_end(recording_id=recording.public_id, reason="publisher_left")
    recording.refresh_from_db()
    assert recording.status == RecordingStatus.READY, recording.error
    final = recordings_dir / recording.file
    assert top_level_boxes(final).index("moov") < top_level_boxes(final).index("mdat")  # plays at once, seeks
    assert not (recordings_dir / recording.part_name).exists()
    assert abs(recording.duration - 6) < 0.2 and recording.size == final.stat().st_size
    assert (recording.video_codec, recording.audio_codec, recording.width, recording.height) == \
        ("h264", "aac", 320, 180)
    decoded = subprocess.run([require_tool("ffmpeg"), "-v", "error", "-i", str(final), "-f", "null", "-"],
                             capture_output=True, text=True, timeout=60)
    assert decoded.stderr == ""
    thumb = ffprobe(str(recordings_dir / recording.thumbnail))["streams"][0]
    assert (thumb["codec_name"], thumb["width"], thumb["height"]) == ("mjpeg", 320, 180)


def test_finalize_without_media_fails_visibly(room_and_key, recordings_dir, django_capture_on_commit_callbacks):
    room, _ = room_and_key
    services.room_recording_update(room=room, recording=True)
    recording = recordings.recording_begin(public_id=room.public_id)
    with django_capture_on_commit_callbacks(execute=True):
        recordings.recording_end(recording_id=recording.public_id, reason="publisher_left")
    recording.refresh_from_db()
    assert recording.status == RecordingStatus.FAILED and "no media was written" in recording.error


@pytest.fixture
def ready_recording(room_and_key, recordings_dir, django_capture_on_commit_callbacks) -> Recording:
    room, _ = room_and_key
    services.room_recording_update(room=room, recording=True)
    recording = recordings.recording_begin(public_id=room.public_id)
    fragmented_mp4(recordings_dir / recording.part_name, seconds=3)
    with django_capture_on_commit_callbacks(execute=True):
        recordings.recording_end(recording_id=recording.public_id, reason="publisher_left")
    recording.refresh_from_db()
    return recording


def test_the_api_lists_them_for_the_owner_and_serves_ranges(ready_recording, client_for, user, other_user,
                                                           recordings_dir):
    room = ready_recording.room
    response = client_for(user).get(f"/api/v1/live/{room.public_id}/recordings")
    assert response.status_code == 200
    [item] = response.json()["data"]
    assert (item["id"], item["status"]) == (ready_recording.public_id, "ready")
    assert client_for(other_user).get(f"/api/v1/live/{room.public_id}/recordings").status_code == 403
    assert client_for().get(f"/api/v1/live/{room.public_id}/recordings").status_code == 403
    services.room_recording_update(room=room, public=True)
    assert client_for().get(f"/api/v1/live/{room.public_id}/recordings").status_code == 200

    whole = (recordings_dir / ready_recording.file).read_bytes()
    url = item["url"]
    ranged = client_for().get(url, HTTP_RANGE="bytes=100-1099")
    assert ranged.status_code == 206 and ranged["Content-Range"] == f"bytes 100-1099/{len(whole)}"
    assert b"".join(ranged.streaming_content) == whole[100:1100]
    full = client_for().get(url)
    assert full.status_code == 200 and b"".join(full.streaming_content) == whole
    assert client_for().get(url, HTTP_RANGE=f"bytes={len(whole)}-").status_code == 416
    assert client_for().get(url.split("?")[0] + "?token=forged").status_code == 403
    thumb = client_for().get(item["thumbnail_url"])
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/jpeg"


def test_delete_removes_the_row_and_its_files(ready_recording, client_for, user, other_user, recordings_dir):
    files = [recordings_dir / ready_recording.file, recordings_dir / ready_recording.thumbnail]
    assert all(f.exists() for f in files)
    assert client_for(other_user).delete(f"/api/v1/recordings/{ready_recording.public_id}").status_code == 403
    assert client_for(user).delete(f"/api/v1/recordings/{ready_recording.public_id}").status_code == 200
    assert not Recording.objects.filter(pk=ready_recording.pk).exists() and not any(f.exists() for f in files)


def test_patch_turns_recording_on_and_create_follows_recording_default(client_for, user, settings):
    settings.RECORDING_DEFAULT = True
    created = client_for(user).post("/api/v1/live/create", {"title": "t"}, format="json").json()["data"]
    assert created["room"]["recording"] is True
    public_id = created["room"]["room_id"]
    patched = client_for(user).patch(f"/api/v1/live/{public_id}", {"recording": False}, format="json")
    assert patched.status_code == 200 and patched.json()["data"]["recording"] is False


def test_a_recording_left_open_by_a_dead_media_node_is_finalized_at_start(room_and_key, recordings_dir,
                                                                         django_capture_on_commit_callbacks):
    """The whole server was killed mid-recording: at the next start the open session is closed
    and the fragmented MP4 it left (all but its last seconds) becomes a playable recording."""
    room, key = room_and_key
    services.room_recording_update(room=room, recording=True)
    services.publish_start(stream_key=key, protocol="rtmp")
    recording = recordings.recording_begin(public_id=room.public_id)
    fragmented_mp4(recordings_dir / recording.part_name, seconds=4)
    with django_capture_on_commit_callbacks(execute=True):
        assert recordings.recordings_recover() == 0  # still live: not touched
        services.sessions_close_orphaned(node="")  # what the media plane does when it starts
    recording.refresh_from_db()
    assert (recording.status, recording.end_reason) == (RecordingStatus.READY, "error"), recording.error
    assert abs(recording.duration - 4) < 0.2


def test_retention_deletes_old_recordings_with_their_files(ready_recording, recordings_dir, settings, monkeypatch):
    """The hourly beat job: a recording started more than RECORDINGS_RETENTION_DAYS ago goes,
    file and row; a newer one, or any while the setting is 0, stays."""
    from datetime import timedelta

    from django.utils import timezone

    from live.tasks import storage_expire

    monkeypatch.setenv("HLS_PATH", str(recordings_dir / "hls"))  # none: only recordings are looked at
    settings.RECORDINGS_RETENTION_DAYS = 0
    assert storage_expire()["recordings"] == 0
    settings.RECORDINGS_RETENTION_DAYS = 7
    assert storage_expire()["recordings"] == 0  # a new one
    files = [recordings_dir / ready_recording.file, recordings_dir / ready_recording.thumbnail]
    assert all(f.exists() for f in files)
    Recording.objects.filter(pk=ready_recording.pk).update(started_at=timezone.now() - timedelta(days=8))
    assert storage_expire()["recordings"] == 1
    assert not Recording.objects.filter(pk=ready_recording.pk).exists()
    assert not any(f.exists() for f in files)


def test_hls_leftovers_of_streams_no_longer_live_are_removed(room_and_key, tmp_path, monkeypatch):
    """What a dead media node left in HLS_PATH goes; a live room's files and fresh files stay."""
    import os
    import time

    from live.tasks import storage_expire

    room, key = room_and_key
    services.publish_start(stream_key=key, protocol="rtmp")
    monkeypatch.setenv("HLS_PATH", str(tmp_path))
    old = time.time() - 3600
    for public_id, mtime in ((room.public_id, old), ("gone", old), ("fresh", time.time())):
        (tmp_path / public_id).mkdir()
        for path in (tmp_path / f"{public_id}.m3u8", tmp_path / public_id / "0.ts"):
            path.write_bytes(b"x")
            os.utime(path, (mtime, mtime))
        os.utime(tmp_path / public_id, (mtime, mtime))
    assert storage_expire()["hls"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [room.public_id, f"{room.public_id}.m3u8", "fresh", "fresh.m3u8"])
