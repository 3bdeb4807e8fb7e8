"""Recording files over HTTP: signed URLs (what a <video> element can use, like an S3 presigned
URL) and the file view, which answers Range requests (206 with Content-Range) so players seek.
A recording in the S3 bucket gets the bucket's presigned URL instead: S3 answers Range itself."""
from __future__ import annotations

import re
from collections.abc import Iterator

from django.conf import settings
from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.views.decorators.http import require_safe

from .models import Recording, RecordingStatus
from .recordings import in_bucket, recordings_root, recordings_storage

_SALT = "live.recording-file"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 256 * 1024
KINDS = {"mp4": ("file", "video/mp4"), "jpg": ("thumbnail", "image/jpeg")}


def recording_file_url(recording: Recording, kind: str) -> str:
    """A URL of the recording's MP4 or thumbnail, valid RECORDING_URL_TTL seconds."""
    name = getattr(recording, KINDS[kind][0])
    if in_bucket(name):
        return recordings_storage(name).url(name)  # presigned (signing only: no request to S3)
    token = signing.dumps([recording.public_id, kind], salt=_SALT)
    return reverse("recording-file", kwargs={"public_id": recording.public_id, "kind": kind}) + f"?token={token}"


def _authorized(request: HttpRequest, public_id: str, kind: str) -> bool:
    try:
        signed = signing.loads(request.GET.get("token", ""), salt=_SALT, max_age=settings.RECORDING_URL_TTL)
    except signing.BadSignature:
        return False
    return signed == [public_id, kind]


def _chunks(path, start: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        while length > 0:
            data = f.read(min(_CHUNK, length))
            if not data:
                return
            length -= len(data)
            yield data


@require_safe
def recording_file(request: HttpRequest, public_id: str, kind: str) -> HttpResponse:
    if kind not in KINDS or not _authorized(request, public_id, kind):
        return HttpResponse("this link is not valid (or has expired)\n", status=403, content_type="text/plain")
    recording = Recording.objects.filter(public_id=public_id, status=RecordingStatus.READY).first()
    field, content_type = KINDS[kind]
    name = getattr(recording, field, "") if recording is not None else ""
    path = recordings_root() / name if name else None
    if path is None or not path.is_file():
        raise Http404("no such recording file")
    size = path.stat().st_size
    start, end, status = 0, size - 1, 200
    if match := _RANGE.match(request.headers.get("Range", "").strip()):
        first, last = match.groups()
        if first:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        elif last:  # the last N bytes
            start = max(0, size - int(last))
        if not (first or last) or start > end or start >= size:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return response
        status = 206
    length = end - start + 1
    body = _chunks(path, start, length) if request.method == "GET" else iter(())
    response = StreamingHttpResponse(body, status=status, content_type=content_type)
    response["Content-Length"] = str(length)
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = "private, max-age=3600"
    if status == 206:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return response
