"""Recordings: the writes (begin, end, finalize, delete) and the file work of finalizing.

A recording room's live session is written by the media node as a fragmented MP4
(`{id}.part.mp4` under RECORDINGS_PATH, flushed every 2 s: a crash loses at most that). When the
session ends, `recording_end` marks it finalizing and a Celery task (`live.tasks.recording_finalize`)
remuxes it into a regular MP4 with its index first (`faststart`: it plays at once and seeks),
takes a JPEG thumbnail from a keyframe near 10 % of its length, and fills in duration, size,
codecs and size of the picture. The remux and the thumbnail are FFmpeg's through PyAV, never on
the event loop (the task runs in a Celery worker, or eagerly in the embedded default's thread).

Where the finished files live: RECORDINGS_PATH by default (`Recording.file` is `{id}.mp4`, relative
to it); with RECORDINGS_S3_* set, the task uploads both to the bucket as `recordings/{id}.mp4` and
`recordings/{id}.jpg` (django-storages' S3Storage) and removes the local copies. A name under
`recordings/` is an object in the bucket, any other a local file, so rows written before S3 was
turned on still play. Ids are random: no stream key is in any file or object name.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import av
from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage
from django.db import transaction
from django.utils import timezone

from . import media_control
from .models import Recording, RecordingStatus, Room
from .selectors import session_get_open

log = logging.getLogger(__name__)

THUMBNAIL_AT = 0.10  # of the duration
S3_PREFIX = "recordings/"  # the object names of the bucket; local names have no directory


def recordings_root() -> Path:
    root = Path(settings.RECORDINGS_PATH).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def recordings_s3_enabled() -> bool:
    return bool(settings.RECORDINGS_S3_BUCKET and settings.RECORDINGS_S3_ENDPOINT_URL)


def in_bucket(name: str) -> bool:
    """The file `name` is an object of the S3 bucket (S3 being configured), not under RECORDINGS_PATH."""
    return name.startswith(S3_PREFIX) and recordings_s3_enabled()


def recordings_storage(name: str | None = None) -> Storage:
    """The storage of the file `name` (an object under `recordings/` is in the bucket), or without a
    name, where finished recordings go: the S3 bucket when RECORDINGS_S3_* are set, else RECORDINGS_PATH."""
    if recordings_s3_enabled() if name is None else in_bucket(name):
        return _s3_storage(settings.RECORDINGS_S3_ENDPOINT_URL, settings.RECORDINGS_S3_BUCKET,
                           settings.RECORDINGS_S3_ACCESS_KEY, settings.RECORDINGS_S3_SECRET_KEY,
                           settings.RECORDINGS_S3_REGION, settings.RECORDING_URL_TTL)
    return FileSystemStorage(location=recordings_root())


@functools.lru_cache(maxsize=4)
def _s3_storage(endpoint_url: str, bucket: str, access_key: str, secret_key: str, region: str,
                ttl: int) -> Storage:
    """One per configuration: its boto3 clients (one per thread) are made once, not per URL."""
    from storages.backends.s3 import S3Storage

    return S3Storage(bucket_name=bucket, endpoint_url=endpoint_url, access_key=access_key or None,
                     secret_key=secret_key or None, region_name=region or None, addressing_style="path",
                     signature_version="s3v4", querystring_auth=True, querystring_expire=ttl,
                     file_overwrite=True)


def recording_begin(*, public_id: str, staff: bool = False) -> Recording | None:
    """The room went live (or staff started recording it): its new Recording row, or None when
    the room does not record."""
    room = Room.objects.filter(public_id=public_id).first()
    if room is None or not (room.recording or staff):
        return None
    return Recording.objects.create(room=room, session=session_get_open(room=room))


class RecordingConflict(Exception):
    """A staff start or stop that does not fit the room's state (not live, already recording...)."""


def recording_start_request(*, room: Room) -> None:
    """Staff: record the room's live stream now; its media node makes the row and the file."""
    if session_get_open(room=room) is None:
        raise RecordingConflict("the room is not live")
    if Recording.objects.filter(room=room, status=RecordingStatus.RECORDING).exists():
        raise RecordingConflict("the room is already recording")
    media_control.recording_request(public_id=room.public_id, action="start")


def recording_stop_request(*, room: Room) -> None:
    """Staff: end the room's running recording now (it is finalized as any other); the room's
    `recording` setting is left as it is, for its next sessions."""
    if not Recording.objects.filter(room=room, status=RecordingStatus.RECORDING).exists():
        raise RecordingConflict("the room is not recording")
    media_control.recording_request(public_id=room.public_id, action="stop")


def recording_end(*, recording_id: str, reason: str) -> None:
    """The media node closed the file: queue its finalizing (once; idempotent)."""
    from .tasks import recording_finalize

    with transaction.atomic():
        updated = Recording.objects.filter(public_id=recording_id, status=RecordingStatus.RECORDING).update(
            status=RecordingStatus.FINALIZING, ended_at=timezone.now(), end_reason=reason)
    if updated:
        transaction.on_commit(lambda: recording_finalize.delay(recording_id))


@dataclass(frozen=True)
class Finished:
    duration: float
    size: int
    video_codec: str
    audio_codec: str
    width: int | None
    height: int | None


def recording_finalize(*, recording_id: str) -> Recording:
    """Remux the part file into `{id}.mp4` (faststart) with `{id}.jpg`; raises on failure (the task retries)."""
    recording = Recording.objects.get(public_id=recording_id)
    if recording.status == RecordingStatus.READY:
        return recording
    root = recordings_root()
    part, final, thumb = root / recording.part_name, root / f"{recording_id}.mp4", root / f"{recording_id}.jpg"
    Recording.objects.filter(pk=recording.pk).update(attempts=recording.attempts + 1)
    if not part.exists() and not final.exists():
        raise FileNotFoundError(f"recording {recording_id}: no media was written ({part.name} is missing)")
    if part.exists():
        finished = remux_faststart(part, final)
        part.unlink()
    else:  # a retry after the remux succeeded
        finished = probe(final)
    thumbnail_write(final, thumb, finished.duration * THUMBNAIL_AT)
    file_name, thumb_name = final.name, thumb.name if thumb.exists() else ""  # no picture: no thumbnail
    s3 = recordings_s3_enabled()
    if s3:  # the upload is this task's too: a Celery worker, never the event loop
        storage = recordings_storage()
        file_name = _upload(storage, final, S3_PREFIX + file_name)
        thumb_name = thumb_name and _upload(storage, thumb, S3_PREFIX + thumb_name)
    Recording.objects.filter(pk=recording.pk).update(
        status=RecordingStatus.READY, file=file_name, thumbnail=thumb_name, duration=finished.duration,
        size=finished.size, video_codec=finished.video_codec, audio_codec=finished.audio_codec,
        width=finished.width, height=finished.height, error="")
    if s3:  # uploaded and recorded in the row: the local copies can go
        final.unlink(missing_ok=True)
        thumb.unlink(missing_ok=True)
    log.info("recording %s ready: %.1f s, %d bytes, %s", recording_id, finished.duration, finished.size, file_name)
    recording = Recording.objects.select_related("room").get(pk=recording.pk)
    _record_done_notify(recording)
    return recording


def _record_done_notify(recording: Recording) -> None:
    from . import hooks
    from .recording_files import recording_file_url

    room = recording.room
    url = recording_file_url(recording, "mp4")
    hooks.notify("on_record_done", room_pk=room.pk, public_id=room.public_id, overrides=room.hooks,
                 session_id=recording.session_id,
                 recording={"id": recording.public_id, "duration": recording.duration, "size": recording.size,
                            "url": url if url.startswith("http") else settings.PUBLIC_URL + url})


def recordings_recover() -> int:
    """Recordings still "recording" whose live session has ended: the media node that wrote them
    died (a crash, a kill) before closing them. Their fragmented MP4 holds all but the last
    seconds: finalize them. Run at start-up and by Celery beat."""
    from django.db.models import Q

    orphaned = Recording.objects.filter(status=RecordingStatus.RECORDING).filter(
        Q(session__isnull=True) | Q(session__ended_at__isnull=False))
    count = 0
    for public_id in orphaned.values_list("public_id", flat=True):
        log.warning("recording %s was left open (its media node died): finalizing what it wrote", public_id)
        recording_end(recording_id=public_id, reason="error")
        count += 1
    return count


def recordings_expire(*, days: int) -> int:
    """Delete the recordings (files and rows) that started more than `days` ago; 0 keeps all.
    One that is still being written or finalized is left for the next run."""
    if days <= 0:
        return 0
    old = Recording.objects.filter(started_at__lt=timezone.now() - timedelta(days=days),
                                   status__in=(RecordingStatus.READY, RecordingStatus.FAILED))
    deleted = 0
    for recording in old.iterator():
        try:
            recording_delete(recording=recording)
        except Exception:
            log.exception("recording %s: deleting it past retention failed (tried again next run)",
                          recording.public_id)
            continue
        deleted += 1
    if deleted:
        log.info("recordings: %d deleted, older than %d day(s)", deleted, days)
    return deleted


def recording_failed(*, recording_id: str, error: str) -> None:
    Recording.objects.filter(public_id=recording_id).update(status=RecordingStatus.FAILED, error=error[:2000])


def recording_delete(*, recording: Recording) -> None:
    """The row and its files (local or in the bucket; a storage error keeps the row, to retry)."""
    for name in (recording.file, recording.thumbnail, recording.part_name):
        if name:
            recordings_storage(name).delete(name)
    recording.delete()


def _upload(storage: Storage, path: Path, name: str) -> str:
    with path.open("rb") as f:
        return storage.save(name, File(f, name=path.name))


# -- file work (PyAV) -------------------------------------------------------------------------


def remux_faststart(source: Path, target: Path) -> Finished:
    """Copy every packet of the fragmented MP4 into a regular one whose moov comes first."""
    temporary = target.with_suffix(".tmp.mp4")
    with av.open(str(source)) as inp, av.open(str(temporary), "w", format="mp4",
                                                  options={"movflags": "+faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
        for packet in inp.demux(*[s for s in inp.streams if s.index in streams]):
            if packet.dts is None:
                continue  # the demuxer's flush packets
            packet.stream = streams[packet.stream_index]
            out.mux(packet)
    os.replace(temporary, target)
    return probe(target)


def probe(path: Path) -> Finished:
    with av.open(str(path)) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        duration = (container.duration or 0) / av.time_base
        return Finished(duration=duration, size=path.stat().st_size,
                        video_codec=video.codec_context.name if video else "",
                        audio_codec=audio.codec_context.name if audio else "",
                        width=video.codec_context.width if video else None,
                        height=video.codec_context.height if video else None)


def thumbnail_write(path: Path, target: Path, at: float) -> None:
    """A JPEG of the first picture decoded from the keyframe at or before `at` seconds."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            return
        stream = container.streams.video[0]
        container.seek(int(at / stream.time_base), stream=stream, backward=True, any_frame=False)
        frame = next(container.decode(stream))
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width, encoder.height, encoder.pix_fmt = frame.width, frame.height, "yuvj420p"
        encoder.time_base = stream.time_base
        encoder.open()
        packets = encoder.encode(frame.reformat(format="yuvj420p")) + encoder.encode(None)
    target.write_bytes(b"".join(bytes(p) for p in packets))
