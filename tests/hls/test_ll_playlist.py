"""LowLatencyPlaylist: rendered playlists read back line by line against RFC 8216bis (parts,
preload hint, window, discontinuities, delta updates, target duration), blocking reload
decisions, delivery directive and URI parsing; property tests over random segmenter runs."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.hls.ll_playlist import (
    BadRequest,
    DirectiveError,
    InitResource,
    LowLatencyOptions,
    LowLatencyPlaylist,
    PartRef,
    PartResource,
    Ready,
    ReloadTarget,
    SegmentResource,
    Wait,
    init_uri,
    parse_decimal,
    parse_reload_target,
    parse_skip,
    parse_uri,
    part_uri,
    segment_uri,
)

# Durations are written to 10 us (5 decimals): half of that off, plus the float's own error.
RENDERED = 5e-6 + 1e-9


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite-wide Django fixture: these tests need no Django."""


# A reader of our playlists, strict about what the RFC asks of them


@dataclass
class Entry:
    """A segment as listed, or (uri None) the open segment's parts."""

    discontinuity: bool = False
    map_uri: str | None = None
    date_time: str | None = None
    parts: list[tuple[float, str, bool]] = field(default_factory=list)
    extinf: float | None = None
    uri: str | None = None


@dataclass
class Parsed:
    header: dict[str, str]
    segments: list[Entry]
    open: Entry
    skipped: int = 0
    hint: str | None = None
    endlist: bool = False


_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)(?:,|$)')


def attributes(text: str) -> dict[str, str]:
    pairs = _ATTRIBUTE.findall(text)
    assert ",".join(f"{k}={v}" for k, v in pairs) == text, text
    return {key: value.strip('"') for key, value in pairs}


def parse(text: str) -> Parsed:
    assert text.endswith("\n") and "\r" not in text
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    header: dict[str, str] = {}
    segments: list[Entry] = []
    entry = Entry()
    parsed = Parsed(header, segments, entry)
    for line in lines[1:]:
        assert not parsed.endlist and parsed.hint is None, "nothing follows ENDLIST or the preload hint"
        tag, _, value = line.partition(":")
        if not line.startswith("#"):
            assert entry.extinf is not None, f"{line} without EXTINF"
            entry.uri = line
            segments.append(entry)
            entry = parsed.open = Entry()
        elif tag == "#EXT-X-PART":
            assert entry.extinf is None
            part = attributes(value)
            assert set(part) <= {"DURATION", "URI", "INDEPENDENT"} and part.get("INDEPENDENT", "YES") == "YES"
            entry.parts.append((float(part["DURATION"]), part["URI"], "INDEPENDENT" in part))
        elif line == "#EXT-X-DISCONTINUITY" or tag in ("#EXT-X-MAP", "#EXT-X-PROGRAM-DATE-TIME"):
            assert not entry.parts and entry.extinf is None, f"{tag} must come before the segment's first part"
            if tag == "#EXT-X-MAP":
                entry.map_uri = attributes(value)["URI"]
            elif tag == "#EXT-X-PROGRAM-DATE-TIME":
                entry.date_time = value
            else:
                entry.discontinuity = True
        elif tag == "#EXTINF":
            assert value.endswith(",")
            entry.extinf = float(value[:-1])
        elif tag == "#EXT-X-SKIP":
            assert not segments and entry == Entry() and not parsed.skipped
            parsed.skipped = int(attributes(value)["SKIPPED-SEGMENTS"])
        elif tag == "#EXT-X-PRELOAD-HINT":
            hint = attributes(value)
            assert hint["TYPE"] == "PART"
            parsed.hint = hint["URI"]
        elif line == "#EXT-X-ENDLIST":
            parsed.endlist = True
        else:
            assert not segments and entry == Entry(), f"{tag} is a playlist tag: before the first segment"
            assert tag not in header
            header[tag] = value
    assert list(header)[:2] == ["#EXT-X-VERSION", "#EXT-X-TARGETDURATION"]
    return parsed


def opts(part_target=0.2, segment_target=1.0, window=12) -> LowLatencyOptions:
    return LowLatencyOptions(part_target=part_target, segment_target=segment_target, window=window)


def add_segment(playlist: LowLatencyPlaylist, parts=5, duration=0.2, end=True) -> None:
    for index in range(parts):
        playlist.add_part(duration, index == 0)
    if end:
        playlist.end_segment()


def playlist_with(segments: int, open_parts: int = 0, **options) -> LowLatencyPlaylist:
    playlist = LowLatencyPlaylist(opts(**options))
    for _ in range(segments):
        add_segment(playlist)
    add_segment(playlist, parts=open_parts, end=False)
    return playlist


# Rendering, line by line


def test_a_live_playlist_lists_segments_parts_and_the_next_part_as_rfc_8216bis_asks():
    playlist = playlist_with(2, open_parts=2, window=3)
    parts = [
        [f'#EXT-X-PART:DURATION=0.2,URI="part{msn}.{n}.m4s"' + (",INDEPENDENT=YES" if n == 0 else "") for n in range(5)]
        for msn in range(3)
    ]
    assert playlist.render().splitlines() == [
        "#EXTM3U",
        "#EXT-X-VERSION:6",
        "#EXT-X-TARGETDURATION:1",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6,CAN-SKIP-UNTIL=6.0",
        "#EXT-X-PART-INF:PART-TARGET=0.2",
        "#EXT-X-MEDIA-SEQUENCE:0",
        '#EXT-X-MAP:URI="init.mp4"',
        *parts[0],
        "#EXTINF:1.0,",
        "seg0.m4s",
        *parts[1],
        "#EXTINF:1.0,",
        "seg1.m4s",
        *parts[2][:2],
        '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part2.2.m4s"',
    ]
    assert playlist.next_part == PartRef(2, 2)


def test_after_a_segment_boundary_the_hint_names_part_0_of_the_next_segment():
    playlist = playlist_with(3)
    assert playlist.render().splitlines()[-3:] == [
        "#EXTINF:1.0,", "seg2.m4s", '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part3.0.m4s"']
    assert playlist.next_part == (3, 0)


def test_add_part_says_which_part_landed_and_end_segment_which_segment():
    playlist = LowLatencyPlaylist(opts())
    assert playlist.add_part(0.2, True) == PartRef(0, 0) == (0, 0)
    assert playlist.add_part(0.2, False) == (0, 1)
    assert playlist.end_segment() == 0
    assert playlist.add_part(0.2, True) == (1, 0)


def test_media_sequence_advances_as_segments_leave_the_window():
    playlist = playlist_with(10, window=3)
    parsed = parse(playlist.render())
    assert parsed.header["#EXT-X-MEDIA-SEQUENCE"] == "7" and playlist.first_msn == 7
    assert [s.uri for s in parsed.segments] == ["seg7.m4s", "seg8.m4s", "seg9.m4s"]
    assert parsed.segments[0].map_uri == "init.mp4"  # the first listed segment states its init


def test_the_window_never_shrinks_the_playlist_below_three_target_durations():
    playlist = playlist_with(5, window=1)
    assert [s.uri for s in parse(playlist.render()).segments] == ["seg2.m4s", "seg3.m4s", "seg4.m4s"]


def test_parts_are_listed_only_for_segments_within_three_target_durations_of_the_end():
    playlist = playlist_with(6, open_parts=3, window=6)
    parsed = parse(playlist.render())
    # The end is 0.6 s into segment 6: segments 4 and 5 start 2.6 and 1.6 s before it, 3 at 3.6 s.
    assert [bool(s.parts) for s in parsed.segments] == [False, False, False, False, True, True]
    assert len(parsed.open.parts) == 3


def test_target_duration_is_the_longest_extinf_rounded_and_never_goes_down():
    playlist = LowLatencyPlaylist(opts(window=3))
    add_segment(playlist, parts=7)  # 1.4 s rounds to 1
    assert parse(playlist.render()).header["#EXT-X-TARGETDURATION"] == "1"
    add_segment(playlist, parts=7, end=False)
    playlist.add_part(0.1, False)  # a short last part: 1.5 s rounds to 2
    playlist.end_segment()
    assert parse(playlist.render()).header["#EXT-X-TARGETDURATION"] == "2"
    add_segment(playlist, parts=13)  # a long GOP: 2.6 s
    parsed = parse(playlist.render())
    assert parsed.segments[-1].extinf == 2.6 and parsed.header["#EXT-X-TARGETDURATION"] == "3"
    assert "CAN-SKIP-UNTIL=18.0" in parsed.header["#EXT-X-SERVER-CONTROL"]
    assert playlist.block_timeout == 9
    for _ in range(12):
        add_segment(playlist)
    parsed = parse(playlist.render())
    assert {s.extinf for s in parsed.segments} == {1.0}
    assert parsed.header["#EXT-X-TARGETDURATION"] == "3"  # 2.6 s is gone, the target stays


def test_target_duration_rounds_the_extinf_as_rendered():
    playlist = LowLatencyPlaylist(opts())
    add_segment(playlist, parts=7, end=False)
    playlist.add_part(0.0999996, False)  # 1.4999996 s is written 1.5, which a client rounds to 2
    playlist.end_segment()
    parsed = parse(playlist.render())
    assert parsed.segments[0].extinf == 1.5 and parsed.header["#EXT-X-TARGETDURATION"] == "2"


def test_the_configured_segment_target_is_a_floor_for_the_target_duration():
    assert LowLatencyPlaylist(opts(segment_target=1.5)).target_duration == 2
    assert LowLatencyPlaylist(opts(part_target=0.5, segment_target=4.0)).target_duration == 4


def test_a_discontinuity_closes_the_segment_marks_the_next_and_states_a_new_init():
    playlist = LowLatencyPlaylist(opts(window=3))
    playlist.discontinuity(init_uri(0))  # before anything: nothing to be discontinuous with
    add_segment(playlist, parts=3, end=False)
    playlist.discontinuity(init_uri(1))  # a new publish, with a new init
    add_segment(playlist)
    playlist.discontinuity()  # another, same init
    add_segment(playlist)
    parsed = parse(playlist.render())
    assert parsed.header["#EXT-X-DISCONTINUITY-SEQUENCE"] == "0"
    assert [(s.uri, s.discontinuity, s.map_uri) for s in parsed.segments] == [
        ("seg0.m4s", False, "init.mp4"), ("seg1.m4s", True, "init1.mp4"), ("seg2.m4s", True, None)]
    assert parsed.segments[0].extinf == pytest.approx(0.6)
    for _ in range(2):
        add_segment(playlist)
    parsed = parse(playlist.render())  # segment 1 left: its discontinuity is counted in the sequence
    assert parsed.header["#EXT-X-DISCONTINUITY-SEQUENCE"] == "1"
    assert [(s.uri, s.discontinuity, s.map_uri) for s in parsed.segments] == [
        ("seg2.m4s", True, "init1.mp4"), ("seg3.m4s", False, None), ("seg4.m4s", False, None)]
    add_segment(playlist)
    assert parse(playlist.render()).header["#EXT-X-DISCONTINUITY-SEQUENCE"] == "2"


def test_no_discontinuity_sequence_tag_without_a_discontinuity():
    assert "#EXT-X-DISCONTINUITY-SEQUENCE" not in parse(playlist_with(20, window=3).render()).header


def test_the_tags_of_the_open_segment_come_before_its_first_part():
    playlist = playlist_with(1)
    playlist.discontinuity(init_uri(2))
    start = datetime(2026, 1, 2, 4, 4, 5, 678000, tzinfo=timezone(timedelta(hours=1)))
    playlist.add_part(0.2, True, program_date_time=start)
    lines = playlist.render().splitlines()
    assert lines[-6:-2] == [
        "seg0.m4s",
        "#EXT-X-DISCONTINUITY",
        '#EXT-X-MAP:URI="init2.mp4"',
        "#EXT-X-PROGRAM-DATE-TIME:2026-01-02T03:04:05.678Z",
    ]
    assert lines[-2].startswith('#EXT-X-PART:DURATION=0.2,URI="part1.0.m4s"')


def test_program_date_time_is_optional_and_per_segment():
    playlist = LowLatencyPlaylist(opts())
    start = datetime(2026, 5, 1, tzinfo=UTC)
    for msn in range(3):
        playlist.add_part(0.2, True, program_date_time=start + timedelta(seconds=msn) if msn != 1 else None)
        playlist.end_segment()
    dates = [s.date_time for s in parse(playlist.render()).segments]
    assert dates == ["2026-05-01T00:00:00.000Z", None, "2026-05-01T00:00:02.000Z"]


def test_a_delta_update_skips_the_segments_wholly_beyond_the_skip_boundary():
    playlist = playlist_with(12)
    full, delta = playlist.render().splitlines(), playlist.render(skip=True).splitlines()
    # 1 s segments, CAN-SKIP-UNTIL=6: segments 0-4 end more than 6 s before the end of segment 11.
    assert delta[:8] == [
        "#EXTM3U",
        "#EXT-X-VERSION:9",
        "#EXT-X-TARGETDURATION:1",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6,CAN-SKIP-UNTIL=6.0",
        "#EXT-X-PART-INF:PART-TARGET=0.2",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-SKIP:SKIPPED-SEGMENTS=5",
        '#EXT-X-MAP:URI="init.mp4"',  # the init in force, stated again for the first segment left
    ]
    assert full[1] == "#EXT-X-VERSION:6"
    assert delta[8:] == full[full.index("seg4.m4s") + 1:]


def test_a_delta_update_keeps_the_discontinuity_sequence_and_the_tags_of_segments_kept():
    playlist = LowLatencyPlaylist(opts(window=12))
    for msn in range(12):
        if msn in (2, 8):
            playlist.discontinuity()
        add_segment(playlist)
    full, delta = parse(playlist.render()), parse(playlist.render(skip=True))
    assert delta.skipped == 5 and delta.header["#EXT-X-DISCONTINUITY-SEQUENCE"] == "0"
    assert [s.uri for s in delta.segments] == [s.uri for s in full.segments[5:]]
    assert [s.discontinuity for s in delta.segments] == [False, False, False, True, False, False, False]


def test_nothing_to_skip_gives_the_full_playlist():
    playlist = playlist_with(6, open_parts=2)
    assert playlist.render(skip=True) == playlist.render()


def test_the_end_closes_the_open_segment_lists_endlist_and_drops_the_hint():
    playlist = playlist_with(12, open_parts=2)
    playlist.end()
    lines = playlist.render().splitlines()
    assert lines[-3:] == ["#EXTINF:0.4,", "seg12.m4s", "#EXT-X-ENDLIST"]
    assert not any(line.startswith("#EXT-X-PRELOAD-HINT") for line in lines)
    assert playlist.render(skip=True) == playlist.render()  # _HLS_skip is ignored once ended
    assert playlist.next_part is None and playlist.ended
    playlist.end()  # again: nothing changes
    assert playlist.render().splitlines() == lines
    for change in (lambda: playlist.add_part(0.2, True), playlist.end_segment, playlist.discontinuity):
        with pytest.raises(ValueError, match="ended"):
            change()


def test_a_render_is_shared_until_the_playlist_changes():
    playlist = playlist_with(2, open_parts=1)
    first = playlist.render()
    assert playlist.render() is first
    playlist.add_part(0.2, False)
    assert playlist.render() != first and playlist.render() is playlist.render()


# Refusing what the RFC forbids


@pytest.mark.parametrize("duration", [0.2001, 0.0, -0.1, math.nan, math.inf])
def test_a_part_longer_than_part_target_or_not_positive_is_refused(duration):
    with pytest.raises(ValueError, match="PART-TARGET"):
        LowLatencyPlaylist(opts()).add_part(duration, True)


def test_a_part_may_exceed_part_target_by_tick_rounding_only():
    playlist = LowLatencyPlaylist(opts())
    playlist.add_part(0.2000004, True)
    assert "DURATION=0.2," in playlist.render()


def test_a_segment_starts_with_an_independent_part():
    with pytest.raises(ValueError, match="keyframe"):
        LowLatencyPlaylist(opts()).add_part(0.2, False)


def test_a_short_part_must_be_independent_or_the_last_of_its_segment():
    playlist = LowLatencyPlaylist(opts())
    playlist.add_part(0.1, True)  # short but independent
    playlist.add_part(0.17, False)  # 85% of PART-TARGET
    playlist.add_part(0.1, False)
    with pytest.raises(ValueError, match="85%"):
        playlist.add_part(0.2, False)
    playlist.end_segment()  # as the last part it may be short
    assert parse(playlist.render()).segments[0].extinf == pytest.approx(0.37)


def test_program_date_time_only_on_a_first_part_and_with_a_timezone():
    playlist = LowLatencyPlaylist(opts())
    with pytest.raises(ValueError, match="timezone"):
        playlist.add_part(0.2, True, program_date_time=datetime(2026, 1, 1))
    playlist.add_part(0.2, True)
    with pytest.raises(ValueError, match="first part"):
        playlist.add_part(0.2, False, program_date_time=datetime(2026, 1, 1, tzinfo=UTC))


def test_an_empty_segment_cannot_be_closed():
    with pytest.raises(ValueError, match="no parts"):
        LowLatencyPlaylist(opts()).end_segment()


@pytest.mark.parametrize("options", [
    dict(part_target=0.0), dict(part_target=2.0, segment_target=1.0), dict(window=0)])
def test_options_are_checked(options):
    with pytest.raises(ValueError):
        opts(**options)


@pytest.mark.parametrize("uri", ['in"it.mp4', "init.mp4\n#EXT-X-ENDLIST", ""])
def test_an_init_uri_must_fit_a_quoted_string(uri):
    with pytest.raises(ValueError, match="URI"):
        LowLatencyPlaylist(opts(), init_uri=uri)
    with pytest.raises(ValueError, match="URI"):
        LowLatencyPlaylist(opts()).discontinuity(uri)


# Blocking playlist reload


def decide(playlist, msn=None, part=None):
    return playlist.blocking_reload(msn, part)


@pytest.mark.parametrize("msn, part, expected", [
    (None, None, Ready()),
    ("1", None, Ready()),  # segment 1 is complete
    ("2", None, Wait(ReloadTarget(2, None))),  # segment 2 has parts, but is not complete
    ("4", None, Wait(ReloadTarget(4, None))),  # the last listed (2) plus two
    ("5", None, BadRequest),
    ("2", "1", Ready()),  # that part is listed
    ("2", "2", Wait(ReloadTarget(2, 2))),  # the hinted part
    ("1", "4", Ready()),
    ("1", "5", Ready()),  # past segment 1's last part: part 0 of segment 2, which is there
    ("0", "0", Ready()),
    ("2", "16", Wait(ReloadTarget(2, 16))),  # 15 parts ahead: 3 s at 0.2 s, the Advance Part Limit
    ("2", "17", BadRequest),
    ("3", "14", Wait(ReloadTarget(3, 14))),  # at least 15 parts ahead
    ("3", "15", BadRequest),
    ("4", "0", Wait(ReloadTarget(4, 0))),
    ("5", "0", BadRequest),
])
def test_blocking_reload_decisions_at_the_live_edge(msn, part, expected):
    playlist = playlist_with(2, open_parts=2)
    decision = decide(playlist, msn, part)
    if expected is BadRequest:
        assert isinstance(decision, BadRequest) and "past the last" in decision.reason
    else:
        assert decision == expected


@pytest.mark.parametrize("msn, part", [
    ("x", None), ("-1", None), ("+1", None), (" 1", None), ("1.0", None), ("", None), ("1e3", None),
    ("٣", None), ("0x1", None), (str(2**64), None), ("9" * 5000, None), ("1", "a"), ("1", ""), ("1", "-0"),
    (None, "0"),
])
def test_malformed_directives_are_a_bad_request(msn, part):
    decision = decide(playlist_with(2, open_parts=2), msn, part)
    assert isinstance(decision, BadRequest) and "_HLS_" in decision.reason


def test_blocking_reload_on_segments_gone_from_the_window_is_answered_now():
    playlist = playlist_with(20, open_parts=1, window=3)
    assert decide(playlist, "0", "3") == decide(playlist, "0") == Ready()


def test_blocking_reload_before_anything_is_published():
    playlist = LowLatencyPlaylist(opts())
    assert decide(playlist, "0", "0") == Wait(ReloadTarget(0, 0))
    assert decide(playlist, "1") == Wait(ReloadTarget(1, None))
    assert isinstance(decide(playlist, "2"), BadRequest)


def test_once_ended_directives_are_ignored_but_must_still_parse():
    playlist = playlist_with(2)
    playlist.end()
    assert decide(playlist, "99", "99") == Ready()
    assert isinstance(decide(playlist, None, "1"), BadRequest)


def test_the_advance_part_limit_is_three_parts_from_a_one_second_part_target():
    playlist = LowLatencyPlaylist(opts(part_target=1.0, segment_target=4.0))
    playlist.add_part(1.0, True)
    assert decide(playlist, "0", "3") == Wait(ReloadTarget(0, 3))
    assert isinstance(decide(playlist, "0", "4"), BadRequest)


def test_waiters_keyed_by_target_wake_exactly_when_their_part_or_segment_lands():
    playlist = playlist_with(2, open_parts=2)
    waiters = {}
    for msn, part in [("2", "2"), ("2", "4"), ("2", None), ("3", "0"), ("3", "1"), ("3", None)]:
        decision = decide(playlist, msn, part)
        assert isinstance(decision, Wait)
        waiters[decision.target] = []
    woken = []

    def change(step):
        step()
        due = [target for target in waiters if playlist.satisfies(target)]
        woken.append(sorted(due, key=str))
        for target in due:
            del waiters[target]

    change(lambda: playlist.add_part(0.2, False))  # part 2.2
    change(lambda: playlist.add_part(0.2, False))  # part 2.3
    change(playlist.end_segment)  # segment 2 ends at 4 parts: part 2.4 means part 3.0
    change(lambda: playlist.add_part(0.2, True))  # part 3.0
    change(lambda: playlist.add_part(0.2, False))  # part 3.1
    change(playlist.end)  # ENDLIST answers everyone left
    assert woken == [
        [(2, 2)], [], [(2, None)], [(2, 4), (3, 0)], [(3, 1)], [(3, None)]]


# Names and directives


def test_uris_name_init_parts_and_segments_and_parse_back():
    assert (init_uri(), init_uri(3), part_uri(12, 3), segment_uri(12)) == (
        "init.mp4", "init3.mp4", "part12.3.m4s", "seg12.m4s")
    assert parse_uri("init.mp4") == InitResource(0)
    assert parse_uri("init3.mp4") == InitResource(3)
    assert parse_uri("part12.3.m4s") == PartResource(12, 3)
    assert parse_uri("seg12.m4s") == SegmentResource(12)


@pytest.mark.parametrize("name", [
    "", "init0.mp4", "init.m4s", "seg01.m4s", "seg-1.m4s", "seg1.mp4", "seg1.m4s\n", "seg 1.m4s", "../seg1.m4s",
    "a/seg1.m4s", "seg１.m4s", "part1.m4s", "part1.01.m4s", "part1.2.3.m4s", f"seg{2**64}.m4s", "index.m3u8",
])
def test_other_names_are_not_ours(name):
    assert parse_uri(name) is None


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_every_name_parses_back_to_what_it_names(msn, part):
    assert parse_uri(part_uri(msn, part)) == PartResource(msn, part)
    assert parse_uri(segment_uri(msn)) == SegmentResource(msn)
    assert parse_uri(init_uri(part)) == InitResource(part)


def test_directive_values_are_strict_decimal_integers():
    assert parse_decimal("_HLS_msn", "007") == 7  # the RFC's decimal-integer allows leading zeros
    assert parse_decimal("_HLS_msn", str(2**64 - 1)) == 2**64 - 1
    assert parse_reload_target(None, None) is None
    assert parse_reload_target("3", None) == ReloadTarget(3) == (3, None)
    assert parse_reload_target("3", "0") == (3, 0)
    with pytest.raises(DirectiveError, match="_HLS_part without _HLS_msn"):
        parse_reload_target(None, "0")
    assert (parse_skip(None), parse_skip("YES"), parse_skip("v2")) == (False, True, True)
    for value in ("yes", "NO", ""):
        with pytest.raises(DirectiveError, match="_HLS_skip"):
            parse_skip(value)


# Properties over random segmenter runs


@dataclass
class Model:
    """What the test fed the playlist: the expected content, kept independently."""

    segments: dict[int, list[tuple[float, bool]]] = field(default_factory=dict)
    open: list[tuple[float, bool]] = field(default_factory=list)
    open_msn: int = 0
    init: dict[int, str] = field(default_factory=dict)  # msn -> init in force
    discontinuity: dict[int, int] = field(default_factory=dict)  # msn -> discontinuity sequence number
    current_init: str = "init.mp4"
    number: int = 0
    pending: bool = False  # the next segment is discontinuous
    started: bool = False

    def add(self, duration, independent):
        if not self.open:
            self.number += self.pending
            self.pending = False
            self.init[self.open_msn] = self.current_init
            self.discontinuity[self.open_msn] = self.number
        self.open.append((duration, independent))
        self.started = True

    def close(self):
        self.segments[self.open_msn] = self.open
        self.open, self.open_msn = [], self.open_msn + 1


# (PART-TARGET, segment target, window)
OPTIONS = st.sampled_from(
    [(0.2, 1.0, 3), (0.2, 1.0, 12), (0.2, 1.0, 40), (0.5, 2.0, 5), (1.0, 4.0, 2), (0.33334, 1.0, 7)])
# A segmenter's run: runs of alike segments, each run maybe after a discontinuity (a new publish).
RUNS = st.lists(st.tuples(
    st.integers(1, 16),  # parts in a segment
    st.floats(0.85, 1.0),  # a part's duration over PART-TARGET
    st.one_of(st.none(), st.floats(0.01, 1.0)),  # the last part's, when it differs
    st.sampled_from([None, "same init", "new init"]),  # a discontinuity before the run
    st.booleans(),  # independent parts inside segments too (audio only, intra refresh)
    st.integers(1, 8),  # segments in the run
), max_size=10)


def segments_of(runs):
    for parts, share, last, discontinuity, mixed, count in runs:
        for index in range(count):
            yield parts, share, last, discontinuity if index == 0 else None, mixed


def run_segment(playlist, model, segment, part_target, halfway=lambda: None):
    """One segment's parts, then its end; `halfway` runs with half of them listed."""
    parts, share, last, discontinuity, mixed = segment
    if discontinuity:
        new_init = f"init{model.open_msn}.mp4" if discontinuity == "new init" else None
        playlist.discontinuity(new_init)
        model.pending = model.pending or model.started
        model.current_init = new_init or model.current_init
    for index in range(parts):
        if index == (parts + 1) // 2:
            halfway()
        duration = (last if index == parts - 1 and last is not None else share) * part_target
        independent = index == 0 or (mixed and index % 3 == 0)
        assert playlist.add_part(duration, independent) == (model.open_msn, index)
        model.add(duration, independent)
    assert playlist.end_segment() == model.open_msn
    model.close()


def check_entry(entry, msn, parts, part_target):
    assert len(entry.parts) in (0, len(parts))
    for index, ((duration, uri, independent), (expected, expected_independent)) in enumerate(
            zip(entry.parts, parts, strict=False)):
        assert uri == part_uri(msn, index) and independent == expected_independent
        assert duration == pytest.approx(expected, abs=RENDERED) and duration <= part_target


def check_full(playlist, model, options, text, previous_first=0):
    part_target, _, window = options
    parsed = parse(text)
    target = int(parsed.header["#EXT-X-TARGETDURATION"])
    control = attributes(parsed.header["#EXT-X-SERVER-CONTROL"])
    assert parsed.header["#EXT-X-VERSION"] == "6" and not parsed.skipped
    assert float(parsed.header["#EXT-X-PART-INF"].removeprefix("PART-TARGET=")) == part_target
    assert control["CAN-BLOCK-RELOAD"] == "YES" and float(control["PART-HOLD-BACK"]) >= 3 * part_target - 1e-9
    assert float(control["CAN-SKIP-UNTIL"]) >= 6 * target
    first = int(parsed.header["#EXT-X-MEDIA-SEQUENCE"])
    msns = list(range(first, model.open_msn))
    assert [s.uri for s in parsed.segments] == [segment_uri(msn) for msn in msns]
    durations = [math.fsum(d for d, _ in model.segments[msn]) for msn in msns]
    # The window: at most `window` segments unless fewer would be under 3 target durations.
    assert len(msns) <= window or math.fsum(durations[1:]) < 3 * target
    if first > previous_first:  # removing segments left at least 3 target durations
        assert math.fsum(durations) >= 3 * target
    # Parts: listed for the segments starting within 3 target durations of the end, and no others.
    end = math.fsum(d for d, _ in model.open)
    distances = [end + math.fsum(durations[i:]) for i in range(len(msns))]
    assert [bool(s.parts) for s in parsed.segments] == [d <= 3 * target + 1e-6 for d in distances]
    sequence = int(parsed.header.get("#EXT-X-DISCONTINUITY-SEQUENCE", 0))
    init, count = None, 0
    for entry, msn, duration in zip(parsed.segments, msns, durations, strict=True):
        check_entry(entry, msn, model.segments[msn], part_target)
        assert entry.extinf == pytest.approx(duration, abs=RENDERED) and math.floor(entry.extinf + 0.5) <= target
        init, count = entry.map_uri or init, count + entry.discontinuity
        assert init == model.init[msn] and sequence + count == model.discontinuity[msn]
    check_entry(parsed.open, model.open_msn, model.open, part_target)
    assert len(parsed.open.parts) == len(model.open)
    if model.open:
        init, count = parsed.open.map_uri or init, count + parsed.open.discontinuity
        assert init == model.init[model.open_msn] and sequence + count == model.discontinuity[model.open_msn]
    if playlist.ended:
        assert parsed.endlist and parsed.hint is None
    else:
        assert parsed.hint == part_uri(model.open_msn, len(model.open))
    return parsed, target, first


def check_delta(playlist, full, target):
    delta = parse(playlist.render(skip=True))
    kept = full.segments[delta.skipped:]
    assert not delta.skipped or delta.segments[0].map_uri
    assert delta.header["#EXT-X-VERSION"] == ("9" if delta.skipped else "6")
    assert {k: v for k, v in delta.header.items() if k != "#EXT-X-VERSION"} == {
        k: v for k, v in full.header.items() if k != "#EXT-X-VERSION"}
    assert [(s.uri, s.extinf, s.parts, s.discontinuity) for s in delta.segments] == [
        (s.uri, s.extinf, s.parts, s.discontinuity) for s in kept]
    assert (delta.open, delta.hint, delta.endlist) == (full.open, full.hint, full.endlist)
    after = [math.fsum(s.extinf for s in full.segments[i + 1:]) for i in range(len(full.segments))]
    assert all(a > 6 * target - 1e-4 for a in after[:delta.skipped])  # skipped: wholly beyond the boundary
    assert all(a <= 6 * target + 1e-4 for a in after[delta.skipped:]) or playlist.ended


@settings(max_examples=150, deadline=None)
@given(OPTIONS, RUNS, st.integers(0, 16))
def test_every_render_of_a_random_run_keeps_the_rfc_rules(options, runs, open_parts):
    part_target, segment_target, window = options
    playlist = LowLatencyPlaylist(LowLatencyOptions(part_target, segment_target, window))
    model = Model()
    state = {"target": 0, "first": 0}

    def check():
        full, target, state["first"] = check_full(playlist, model, options, playlist.render(), state["first"])
        assert target >= state["target"]  # TARGETDURATION never goes down
        check_delta(playlist, full, target)
        state["target"] = target

    for segment in segments_of(runs):
        run_segment(playlist, model, segment, part_target, halfway=check)
        check()
    for index in range(open_parts):
        playlist.add_part(part_target, index == 0)
        model.add(part_target, index == 0)
    check()
    playlist.end()
    if model.open:
        model.close()
    check_full(playlist, model, options, playlist.render(), state["first"])


@settings(max_examples=150, deadline=None)
@given(RUNS, st.integers(0, 8), st.integers(-2, 3), st.one_of(st.none(), st.integers(0, 20)))
def test_a_wait_is_for_something_coming_soon_and_once_satisfied_stays_so(runs, open_parts, offset, part):
    playlist, model = LowLatencyPlaylist(LowLatencyOptions(0.2, 1.0, 5)), Model()
    for segment in segments_of(runs):
        run_segment(playlist, model, segment, 0.2)
    for index in range(open_parts):
        playlist.add_part(0.2, index == 0)
        model.add(0.2, index == 0)
    msn = max(0, model.open_msn + offset)  # around the live edge, where the decisions are
    decision = decide(playlist, str(msn), None if part is None else str(part))
    target = ReloadTarget(msn, part)
    assert (decision == Ready()) == playlist.satisfies(target)
    if not isinstance(decision, Wait):
        return
    assert decision.target == target
    # A segmenter cutting every 5 parts gets there within the Advance Part Limit and two segments.
    added = 0
    while not playlist.satisfies(target) and added < 40:
        playlist.add_part(0.2, not model.open)
        model.add(0.2, True)
        added += 1
        if len(model.open) >= 5:
            playlist.end_segment()
            model.close()
    assert playlist.satisfies(target) and added <= 15
    for _ in range(7):
        add_segment(playlist)
        assert playlist.satisfies(target)
