"""HEVC configuration records (media.codecs.hevc): x265's hvcC gives its SPS and the picture size
ffmpeg encoded (a conformance window crops 270 from 272 lines); arbitrary and mutated records and
SPS NAL units only ever raise MalformedData."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media.codecs import hevc
from media.codecs.errors import MalformedData
from tests.support.procs import require_tool

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def x265_record(size: str) -> bytes:
    path = Path(tempfile.mkdtemp(prefix="mv-hevc-")) / "clip.mp4"
    subprocess.run([require_tool("ffmpeg"), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate=30", "-frames:v", "2", "-c:v", "libx265", "-x265-params",
                    "log-level=error", "-tag:v", "hvc1", str(path)], check=True, timeout=60)
    with av.open(str(path)) as container:
        return bytes(container.streams.video[0].codec_context.extradata)


RECORD = x265_record("480x270")


@pytest.mark.parametrize(("size", "expected"), [("480x270", (480, 270)), ("1280x720", (1280, 720)),
                                                ("322x180", (322, 180))])
def test_the_sps_of_an_x265_record_gives_the_encoded_size(size, expected):
    record = RECORD if size == "480x270" else x265_record(size)
    sps = hevc.record_sps(record)
    assert (sps[0] >> 1) & 0x3F == hevc.NAL_SPS
    found = hevc.sps_size(sps)
    assert (found.width, found.height) == expected


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_records_raise_only_malformed_data(data):
    try:
        hevc.sps_size(hevc.record_sps(data))
    except MalformedData:
        pass


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(RECORD) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, len(RECORD)))
def test_mutated_and_cut_records_raise_only_malformed_data(changes, cut):
    data = bytearray(RECORD)
    for at, value in changes:
        data[at] = value
    try:
        size = hevc.sps_size(hevc.record_sps(bytes(data[:cut])))
    except MalformedData:
        return
    assert 0 < size.width <= 16384 and 0 < size.height <= 16384
