"""One stream's Low-Latency HLS media playlist (RFC 8216bis, HLS 2nd edition), sans-I/O.

The segmenter reports finished parts and segment boundaries; this module keeps the window and
renders the playlist text, decides blocking reloads (`_HLS_msn`/`_HLS_part`) and delta updates
(`_HLS_skip`), and names and parses the media URIs. No files, clock, sockets or PyAV here.

URIs, relative to the playlist (fMP4/CMAF):
    init.mp4, init{E}.mp4    the init section, a new one per publish epoch E >= 1 when it changes
    part{msn}.{n}.m4s        part n of segment msn
    seg{msn}.m4s             segment msn, the concatenation of its parts

Serving, as the media HTTP server is expected to wire it:
- `blocking_reload(q.get("_HLS_msn"), q.get("_HLS_part"))` gives `Ready`, `Wait(target)` or
  `BadRequest(reason)`. Waiters are kept in a dict keyed by target; after every change of the
  playlist (`add_part`, `end_segment`, `discontinuity`, `end`), wake the keys `satisfies()`
  accepts: a few distinct keys per stream (viewers at the live edge ask for the same part), no task
  or timer per viewer. A waiter still blocked after `block_timeout` seconds gets 503.
- A request for `next_part` (the preload hint) waits for that part; other unknown names get 404.
"""
from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import NamedTuple

INIT_URI = "init.mp4"

_PART_HOLD_BACK = 3  # PART-HOLD-BACK >= 2x PART-TARGET is a MUST, 3x the SHOULD
_SKIP_BOUNDARY = 6  # CAN-SKIP-UNTIL MUST be >= 6x TARGETDURATION
_PART_HORIZON = 3  # EXT-X-PART tags SHOULD go once more than 3 target durations from the end
_MIN_PLAYLIST = 3  # a live playlist MUST NOT shrink below 3 target durations
_BLOCK_LIMIT = 3  # blocking for more than 3 target durations SHOULD end in 503
_MIN_PART_SHARE = 0.85  # a part MUST be >= 85% of PART-TARGET unless independent or its segment's last
# Durations come from media ticks: sub-microsecond float noise is not a longer part.
_EPSILON = 1e-6
_DECIMAL_MAX = 2**64 - 1  # the RFC's decimal-integer range


# Names


def init_uri(epoch: int = 0) -> str:
    """The init section of publish epoch `epoch` (0: the first)."""
    return INIT_URI if epoch == 0 else f"init{epoch}.mp4"


def part_uri(msn: int, part: int) -> str:
    return f"part{msn}.{part}.m4s"


def segment_uri(msn: int) -> str:
    return f"seg{msn}.m4s"


@dataclass(frozen=True, slots=True)
class InitResource:
    epoch: int


@dataclass(frozen=True, slots=True)
class PartResource:
    msn: int
    part: int


@dataclass(frozen=True, slots=True)
class SegmentResource:
    msn: int


Resource = InitResource | PartResource | SegmentResource

# Canonical numbers only (no sign, no leading zero): one resource, one name, one cache entry.
_NUMBER = r"(0|[1-9][0-9]{0,19})"
_INIT_NAME = re.compile(r"init([1-9][0-9]{0,19})?\.mp4")
_PART_NAME = re.compile(rf"part{_NUMBER}\.{_NUMBER}\.m4s")
_SEGMENT_NAME = re.compile(rf"seg{_NUMBER}\.m4s")


def parse_uri(name: str) -> Resource | None:
    """What a name under the stream directory refers to, or None (a 404, also for any `/`)."""
    if match := _INIT_NAME.fullmatch(name):
        resource: Resource = InitResource(int(match[1] or 0))
    elif match := _PART_NAME.fullmatch(name):
        resource = PartResource(int(match[1]), int(match[2]))
    elif match := _SEGMENT_NAME.fullmatch(name):
        resource = SegmentResource(int(match[1]))
    else:
        return None
    numbers = match.groups(default="0")
    return resource if all(int(number) <= _DECIMAL_MAX for number in numbers) else None


# Delivery directives


class DirectiveError(ValueError):
    """A malformed `_HLS_*` query value: the answer is 400 Bad Request."""


class ReloadTarget(NamedTuple):
    """What a blocking reload waits for: part `part` of segment `msn`, or (part None) the whole
    segment. A tuple, so waiter dicts may be keyed by plain `(msn, part)` too."""

    msn: int
    part: int | None = None


class PartRef(NamedTuple):
    msn: int
    part: int


def parse_decimal(name: str, value: str) -> int:
    """A decimal-integer (RFC 8216bis 4.2): ASCII digits only, at most 2**64 - 1."""
    if not (0 < len(value) <= 20 and value.isascii() and value.isdigit()):
        raise DirectiveError(f"{name} must be a non-negative decimal integer, not {value!r}")
    number = int(value)
    if number > _DECIMAL_MAX:
        raise DirectiveError(f"{name}={value} is out of range")
    return number


def parse_reload_target(msn: str | None, part: str | None) -> ReloadTarget | None:
    """The `_HLS_msn` and `_HLS_part` values (None when absent); None: no blocking asked for."""
    if msn is None:
        if part is not None:
            raise DirectiveError("_HLS_part without _HLS_msn")
        return None
    return ReloadTarget(parse_decimal("_HLS_msn", msn), None if part is None else parse_decimal("_HLS_part", part))


def parse_skip(value: str | None) -> bool:
    """`_HLS_skip`: whether a delta update is asked for. `v2` also skips date ranges; there are
    none here, so it gets the same delta as `YES`."""
    if value is None:
        return False
    if value in ("YES", "v2"):
        return True
    raise DirectiveError(f"_HLS_skip must be YES or v2, not {value!r}")


@dataclass(frozen=True, slots=True)
class Ready:
    """Answer now with `render()`."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Hold the request until `satisfies(target)`, or answer 503 after `block_timeout`."""

    target: ReloadTarget


@dataclass(frozen=True, slots=True)
class BadRequest:
    """Answer 400 at once."""

    reason: str


ReloadDecision = Ready | Wait | BadRequest


# The playlist


@dataclass(frozen=True, slots=True)
class LowLatencyOptions:
    part_target: float = 0.2  # PART-TARGET (s): no part is longer
    segment_target: float = 1.0  # cut on the first keyframe at or after this (s): a long GOP makes it longer
    window: int = 12  # complete segments listed, more when needed to span 3 target durations

    def __post_init__(self) -> None:
        if not 0 < self.part_target <= self.segment_target:
            raise ValueError(f"need 0 < part_target <= segment_target, got {self.part_target}, {self.segment_target}")
        if self.window < 1:
            raise ValueError(f"window must be at least 1 segment, got {self.window}")


@dataclass(frozen=True, slots=True)
class Part:
    duration: float
    independent: bool


@dataclass(slots=True)
class _Segment:
    """A segment: open (growing by parts) until closed, then never changed."""

    msn: int
    init_uri: str
    discontinuity: bool = False
    program_date_time: datetime | None = None
    parts: list[Part] = field(default_factory=list)
    duration: float = 0.0  # EXTINF, set when closed: the sum of its parts


class LowLatencyPlaylist:
    """The playlist of one stream: complete segments in the window, then the open segment's parts.

    Not thread-safe: drive it from the event loop (the segmenter's results are handed over there).
    """

    def __init__(self, options: LowLatencyOptions, *, init_uri: str = INIT_URI, first_msn: int = 0) -> None:
        """`first_msn`: the first segment's media sequence number (a publish that starts from one
        never used before gets names, and so cache entries, of its own)."""
        self.options = options
        self._segments: deque[_Segment] = deque()
        if first_msn < 0:
            raise ValueError("first_msn must not be negative")
        self._open = _Segment(first_msn, _checked_uri(init_uri))
        self._started = False  # a part was ever added: only then can a discontinuity follow anything
        self._discontinuity_sequence = 0  # EXT-X-DISCONTINUITY tags rolled out of the window
        self._longest = 0  # the longest EXTINF seen, rounded: TARGETDURATION never goes down
        self._ended = False
        # Viewers woken together by one part get one render between them.
        self._rendered: dict[bool, str] = {}

    # The segmenter's side

    def add_part(self, duration: float, independent: bool, *, program_date_time: datetime | None = None) -> PartRef:
        """A part is written and can be served in full. `program_date_time` (aware) is the wall
        clock of its segment's start: accepted on a segment's first part only."""
        self._check_live()
        self._check_part(duration, independent, program_date_time)
        if program_date_time is not None:
            self._open.program_date_time = program_date_time
        self._open.parts.append(Part(duration, independent))
        self._started = True
        self._changed()
        return PartRef(self._open.msn, len(self._open.parts) - 1)

    def end_segment(self) -> int:
        """The open segment is complete (the next part starts on a keyframe); returns its msn."""
        self._check_live()
        if not self._open.parts:
            raise ValueError(f"segment {self._open.msn} has no parts to close")
        msn = self._open.msn
        self._close_open()
        self._changed()
        return msn

    def discontinuity(self, init_uri: str | None = None) -> None:
        """A new publish: the next segment is discontinuous and, given a new `init_uri`, gets a new
        EXT-X-MAP (pass a new name when the init changes: clients cache inits by URI)."""
        self._check_live()
        if init_uri is not None:
            _checked_uri(init_uri)
        if self._open.parts:
            self._close_open()
        self._open.discontinuity = self._started
        if init_uri is not None:
            self._open.init_uri = init_uri
        self._changed()

    def end(self) -> None:
        """The stream ended: the open segment, if any, is closed, then EXT-X-ENDLIST."""
        if self._ended:
            return
        if self._open.parts:
            self._close_open()
        self._ended = True
        self._changed()

    # The viewers' side

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def target_duration(self) -> int:
        """EXT-X-TARGETDURATION: every EXTINF, rounded to the nearest integer, is at most this."""
        return max(1, math.ceil(self.options.segment_target - _EPSILON), self._longest)

    @property
    def block_timeout(self) -> float:
        return _BLOCK_LIMIT * self.target_duration

    @property
    def first_msn(self) -> int:
        """EXT-X-MEDIA-SEQUENCE: the oldest listed segment's msn."""
        return self._segments[0].msn if self._segments else self._open.msn

    @property
    def next_part(self) -> PartRef | None:
        """The part named by EXT-X-PRELOAD-HINT (None once ended)."""
        return None if self._ended else PartRef(self._open.msn, len(self._open.parts))

    def blocking_reload(self, msn: str | None, part: str | None) -> ReloadDecision:
        """What to do with a playlist request carrying these `_HLS_msn`/`_HLS_part` values."""
        try:
            target = parse_reload_target(msn, part)
        except DirectiveError as error:
            return BadRequest(str(error))
        if target is None or self.satisfies(target):
            return Ready()
        reason = self._too_far(target)
        return BadRequest(reason) if reason else Wait(target)

    def satisfies(self, target: ReloadTarget) -> bool:
        """Whether the playlist now holds `target` (or anything later). A part index past a
        complete segment's last counts as part 0 of the next segment (RFC 8216bis 6.2.5.2)."""
        if self._ended:
            return True  # directives are ignored once ENDLIST is there
        msn, part = target
        open_msn = self._open.msn
        if part is None:
            return msn < open_msn
        if msn < open_msn - 1:
            return True  # that segment and the next are complete
        if msn == open_msn - 1:
            return part < len(self._segments[-1].parts) or bool(self._open.parts)
        return msn == open_msn and part < len(self._open.parts)

    def render(self, skip: bool = False) -> str:
        """The media playlist; `skip`: the delta update (`_HLS_skip=YES`), ignored once ended."""
        skip = skip and not self._ended
        if skip not in self._rendered:
            self._rendered[skip] = self._render(skip)
        return self._rendered[skip]

    # Internals

    def _check_live(self) -> None:
        if self._ended:
            raise ValueError("the playlist has ended (EXT-X-ENDLIST): it must not change")

    def _check_part(self, duration: float, independent: bool, program_date_time: datetime | None) -> None:
        target = self.options.part_target
        if not 0 < duration <= target + _EPSILON:
            raise ValueError(f"a part's duration must be in (0, PART-TARGET={target}], got {duration}")
        parts = self._open.parts
        if not parts and not independent:
            raise ValueError("a segment starts on a keyframe: its first part must be independent")
        if parts and program_date_time is not None:
            raise ValueError("PROGRAM-DATE-TIME is the start of a segment: give it with the first part")
        if program_date_time is not None and program_date_time.utcoffset() is None:
            raise ValueError("PROGRAM-DATE-TIME must be timezone-aware")
        if parts and not parts[-1].independent and parts[-1].duration < _MIN_PART_SHARE * target - _EPSILON:
            raise ValueError(
                f"part {self._open.msn}.{len(parts) - 1} ({parts[-1].duration} s) is under 85% of PART-TARGET:"
                " only an independent part or a segment's last may be that short"
            )

    def _close_open(self) -> None:
        segment = self._open
        segment.duration = math.fsum(part.duration for part in segment.parts)
        self._segments.append(segment)
        # The client rounds the EXTINF it reads, so round the rendered value.
        self._longest = max(self._longest, _round_half_up(float(_decimal(segment.duration))))
        self._open = _Segment(segment.msn + 1, segment.init_uri)
        self._trim()

    def _trim(self) -> None:
        """Drop the oldest segments past the window, keeping at least 3 target durations."""
        floor = _MIN_PLAYLIST * self.target_duration
        while len(self._segments) > self.options.window and self._duration(from_index=1) >= floor:
            self._discontinuity_sequence += self._segments.popleft().discontinuity

    def _duration(self, from_index: int = 0) -> float:
        return math.fsum(segment.duration for segment in islice(self._segments, from_index, None))

    def _changed(self) -> None:
        self._rendered.clear()

    def _too_far(self, target: ReloadTarget) -> str | None:
        """Why the RFC's 400 applies to a target not yet there, or None: it is worth waiting for."""
        open_segment = self._open
        last_msn = open_segment.msn if open_segment.parts else open_segment.msn - 1
        if target.msn > last_msn + 2:
            return f"_HLS_msn={target.msn} is more than two segments past the last one ({last_msn})"
        if target.part is None:
            return None
        if target.msn == open_segment.msn:
            ahead = target.part + 1 - len(open_segment.parts)
        else:  # a later segment: the open one needs a part still if it has none, each between at least one
            ahead = target.part + 1 + (target.msn - open_segment.msn - 1) + (not open_segment.parts)
        limit = self._advance_part_limit()
        if ahead > limit:
            return f"_HLS_part={target.part} is {ahead} parts past the last, over the Advance Part Limit ({limit:g})"
        return None

    def _advance_part_limit(self) -> float:
        part_target = self.options.part_target
        return 3 / part_target if part_target < 1 else 3

    def _render(self, skip: bool) -> str:
        target = self.target_duration
        skipped = self._skipped_count(target) if skip else 0
        lines = self._header(target, skipped)
        parts_from = self._parts_from_msn(target)
        previous_init = None
        for segment in list(self._segments)[skipped:]:
            lines += _segment_tags(segment, previous_init)
            if segment.msn >= parts_from:
                lines += _part_lines(segment)
            lines += [f"#EXTINF:{_decimal(segment.duration)},", segment_uri(segment.msn)]
            previous_init = segment.init_uri
        if self._open.parts:
            lines += _segment_tags(self._open, previous_init) + _part_lines(self._open)
        if self._ended:
            lines.append("#EXT-X-ENDLIST")  # and no preload hint: none may follow ENDLIST
        else:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{part_uri(self._open.msn, len(self._open.parts))}"')
        return "\n".join(lines) + "\n"

    def _header(self, target: int, skipped: int) -> list[str]:
        part_target = self.options.part_target
        lines = [
            "#EXTM3U",
            # Version 6 for EXT-X-MAP (decimal EXTINF needs 3); EXT-X-SKIP needs 9.
            f"#EXT-X-VERSION:{9 if skipped else 6}",
            f"#EXT-X-TARGETDURATION:{target}",
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES"
            f",PART-HOLD-BACK={_decimal(_PART_HOLD_BACK * part_target)}"
            f",CAN-SKIP-UNTIL={_decimal(_SKIP_BOUNDARY * target)}",
            f"#EXT-X-PART-INF:PART-TARGET={_decimal(part_target)}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.first_msn}",
        ]
        # Needed once a discontinuity is listed, so removing one can be counted; a delta has the same.
        if self._discontinuity_sequence or any(s.discontinuity for s in (*self._segments, self._open)):
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self._discontinuity_sequence}")
        if skipped:
            lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
        return lines

    def _skipped_count(self, target: int) -> int:
        """How many of the oldest segments lie wholly beyond the skip boundary from the end of the
        last complete segment (the whole segment, so a delta never holds less than the boundary)."""
        boundary, after, skipped = _SKIP_BOUNDARY * target, 0.0, 0
        for segment in reversed(self._segments):
            skipped += after > boundary + _EPSILON
            after += segment.duration
        return skipped

    def _parts_from_msn(self, target: int) -> int:
        """The oldest complete segment whose parts are listed: one starting within 3 target
        durations of the playlist's end. Whole segments, so removal goes in playlist order."""
        distance = math.fsum(part.duration for part in self._open.parts)
        first = self._open.msn
        for segment in reversed(self._segments):
            distance += segment.duration
            if distance > _PART_HORIZON * target + _EPSILON:
                break
            first = segment.msn
        return first


def _segment_tags(segment: _Segment, previous_init: str | None) -> list[str]:
    """The tags applied to a segment: before its first EXT-X-PART, as the RFC requires. The first
    segment listed (also after EXT-X-SKIP) states its EXT-X-MAP."""
    tags = []
    if segment.discontinuity:
        tags.append("#EXT-X-DISCONTINUITY")
    if segment.init_uri != previous_init:
        tags.append(f'#EXT-X-MAP:URI="{segment.init_uri}"')
    if segment.program_date_time is not None:
        tags.append(f"#EXT-X-PROGRAM-DATE-TIME:{_date_time(segment.program_date_time)}")
    return tags


def _part_lines(segment: _Segment) -> list[str]:
    return [
        f'#EXT-X-PART:DURATION={_decimal(part.duration)},URI="{part_uri(segment.msn, index)}"'
        + (",INDEPENDENT=YES" if part.independent else "")
        for index, part in enumerate(segment.parts)
    ]


def _decimal(seconds: float) -> str:
    """A decimal-floating-point to 10 us: "0.2", "1.0", "0.33333". Rounding is monotonic, so a part
    no longer than PART-TARGET is not rendered longer."""
    text = f"{seconds:.5f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _round_half_up(seconds: float) -> int:
    return math.floor(seconds + 0.5)


def _date_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _checked_uri(uri: str) -> str:
    """A URI goes into a quoted-string: no quote, CR or LF."""
    if not uri or any(char in uri for char in '"\r\n'):
        raise ValueError(f"not a usable URI: {uri!r}")
    return uri
