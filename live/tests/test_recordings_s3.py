"""Recordings in S3-compatible object storage, against a real one (SeaweedFS on loopback): the
finalize task uploads the MP4 and its thumbnail to the bucket, the API hands out presigned URLs
that play and answer Range requests, and delete removes the objects with the row."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from live import recordings, services
from live.models import Recording, RecordingStatus
from live.tests.test_recordings import ffprobe, fragmented_mp4
from tests.support.s3 import S3Server, seaweedfs


@pytest.fixture(scope="module")
def s3_server():
    with seaweedfs(bucket="mv-recordings") as server:
        yield server


@pytest.fixture
def s3_settings(settings, tmp_path, s3_server: S3Server):
    settings.RECORDINGS_PATH = str(tmp_path / "recordings")
    settings.RECORDINGS_S3_ENDPOINT_URL = s3_server.endpoint_url
    settings.RECORDINGS_S3_BUCKET = s3_server.bucket
    settings.RECORDINGS_S3_ACCESS_KEY = s3_server.access_key
    settings.RECORDINGS_S3_SECRET_KEY = s3_server.secret_key
    settings.RECORDINGS_S3_REGION = s3_server.region
    return settings


def head(server: S3Server, key: str) -> dict | None:
    try:
        return server.client().head_object(Bucket=server.bucket, Key=key)
    except ClientError as error:
        if error.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return None
        raise


def get(url: str, **headers) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_a_recording_goes_to_the_bucket_plays_from_a_presigned_url_and_is_deleted(
        s3_settings, s3_server, room_and_key, client_for, user, django_capture_on_commit_callbacks):
    room, key = room_and_key
    services.room_recording_update(room=room, recording=True)
    recording = recordings.recording_begin(public_id=room.public_id)
    root = recordings.recordings_root()
    fragmented_mp4(root / recording.part_name, seconds=3)
    with django_capture_on_commit_callbacks(execute=True):  # the task (and so the upload) runs eagerly here
        recordings.recording_end(recording_id=recording.public_id, reason="publisher_left")
    recording.refresh_from_db()
    assert recording.status == RecordingStatus.READY, recording.error
    assert (recording.file, recording.thumbnail) == \
        (f"recordings/{recording.public_id}.mp4", f"recordings/{recording.public_id}.jpg")
    assert key not in recording.file and room.public_id not in recording.file
    video, thumb = head(s3_server, recording.file), head(s3_server, recording.thumbnail)
    assert video and video["ContentLength"] == recording.size and video["ContentType"] == "video/mp4"
    assert thumb and thumb["ContentType"] == "image/jpeg"
    assert list(root.iterdir()) == []  # no part file, no local copies left

    [item] = client_for(user).get(f"/api/v1/live/{room.public_id}/recordings").json()["data"]
    url = item["url"]
    assert url.startswith(f"{s3_server.endpoint_url}/{s3_server.bucket}/{recording.file}?")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=3600" in url
    probed = ffprobe(url)
    assert abs(float(probed["format"]["duration"]) - 3) < 0.2
    assert sorted(s["codec_name"] for s in probed["streams"]) == ["aac", "h264"]
    status, headers, whole = get(url)
    assert status == 200 and len(whole) == recording.size
    status, headers, part = get(url, Range="bytes=100-1099")
    assert status == 206 and headers["Content-Range"] == f"bytes 100-1099/{recording.size}"
    assert part == whole[100:1100]
    assert get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0"))[0] == 403  # the signature is checked
    assert get(url.split("?")[0])[0] == 403  # and needed
    status, headers, jpeg = get(item["thumbnail_url"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and jpeg.startswith(b"\xff\xd8")

    assert client_for(user).delete(f"/api/v1/recordings/{recording.public_id}").status_code == 200
    assert head(s3_server, recording.file) is None and head(s3_server, recording.thumbnail) is None
    assert not Recording.objects.filter(pk=recording.pk).exists()


def test_a_recording_made_before_s3_was_turned_on_still_plays_from_disk(
        settings, s3_server, room_and_key, client_for, user, django_capture_on_commit_callbacks, tmp_path):
    settings.RECORDINGS_PATH = str(tmp_path / "recordings")
    room, _ = room_and_key
    services.room_recording_update(room=room, recording=True)
    recording = recordings.recording_begin(public_id=room.public_id)
    fragmented_mp4(recordings.recordings_root() / recording.part_name, seconds=2)
    with django_capture_on_commit_callbacks(execute=True):
        recordings.recording_end(recording_id=recording.public_id, reason="publisher_left")
    recording.refresh_from_db()
    assert recording.file == f"{recording.public_id}.mp4"  # S3 off: a local file

    settings.RECORDINGS_S3_ENDPOINT_URL, settings.RECORDINGS_S3_BUCKET = s3_server.endpoint_url, s3_server.bucket
    settings.RECORDINGS_S3_ACCESS_KEY, settings.RECORDINGS_S3_SECRET_KEY = s3_server.access_key, s3_server.secret_key
    [item] = client_for(user).get(f"/api/v1/live/{room.public_id}/recordings").json()["data"]
    assert item["url"].startswith("http://testserver/")  # still the Django URL that serves the local file
    ranged = client_for().get(item["url"], HTTP_RANGE="bytes=0-99")
    assert ranged.status_code == 206 and len(b"".join(ranged.streaming_content)) == 100
    final = recordings.recordings_root() / recording.file
    assert client_for(user).delete(f"/api/v1/recordings/{recording.public_id}").status_code == 200
    assert not final.exists()


def test_a_long_recording_is_uploaded_in_parts_and_reads_back_whole(
        s3_settings, s3_server, room_and_key, django_capture_on_commit_callbacks):
    """Past boto3's 8 MiB threshold the upload is multipart (the object's ETag says in how many
    parts); the object reads back byte for byte and decodes."""
    room, _ = room_and_key
    services.room_recording_update(room=room, recording=True)
    recording = recordings.recording_begin(public_id=room.public_id)
    root = recordings.recordings_root()
    fragmented_mp4(root / recording.part_name, seconds=4, size="1280x720", bitrate="30M")
    with django_capture_on_commit_callbacks(execute=True):
        recordings.recording_end(recording_id=recording.public_id, reason="publisher_left")
    recording.refresh_from_db()
    assert recording.status == RecordingStatus.READY, recording.error
    assert recording.size > 8 * 2**20, recording.size  # boto3: multipart from 8 MiB
    etag = head(s3_server, recording.file)["ETag"].strip('"')
    assert etag.rsplit("-", 1)[-1].isdigit() and int(etag.rsplit("-", 1)[1]) >= 2, etag  # "<md5>-<parts>"
    url = recordings.recordings_storage(recording.file).url(recording.file)
    status, _, whole = get(url)
    assert status == 200 and len(whole) == recording.size
    probed = ffprobe(url)
    assert abs(float(probed["format"]["duration"]) - 4) < 0.2
