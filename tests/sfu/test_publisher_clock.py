"""The publisher clock: one timeline for a WebRTC publisher's tracks that never steps back.

Two tracks whose packets come with different network delays: each track is first anchored on its
arrival, then moves to its RTCP sender reports. The second track's switch disagrees with its anchor
by the delay difference; the clock absorbs it over the next frames, never giving two frames one
timestamp or squeezing them closer than (1 - SLEW) of their RTP spacing."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from media.hub.unit import TIME_BASE
from sfu.to_hub import NTP_TO_UNIX, SLEW, PublisherClock

START = 1_800_000_000.0  # sender's wall clock at its first frame (Unix seconds)


def ntp64(t: float) -> int:
    return round((t + NTP_TO_UNIX) * (1 << 32))


def run(audio_delay: float, video_delay: float, clock_skew: float, audio_sr: float, video_sr: float,
        seconds: float = 4.0) -> dict[str, list[int]]:
    """Frames and reports of both tracks in arrival order; the hub ticks of each track's frames."""
    now = [0.0]
    clock = PublisherClock(wall=lambda: now[0])
    tracks = {"audio": (clock.track(48000), 0.020, 48000, audio_delay, audio_sr),
              "video": (clock.track(90000), 1 / 30, 90000, video_delay, video_sr)}
    events = []
    for kind, (_, interval, rate, delay, sr_at) in tracks.items():
        for n in range(int(seconds / interval)):
            events.append((n * interval + delay, kind, "frame", round(n * interval * rate)))
        for n in range(8):  # a report every 0.5 s from sr_at
            sent = sr_at + n * 0.5
            events.append((sent + delay, kind, "report", round(sent * rate)))
    ticks: dict[str, list[int]] = {"audio": [], "video": []}
    for arrival, kind, what, rtp in sorted(events):
        track = tracks[kind][0]
        now[0] = arrival + clock_skew  # our clock differs from the sender's
        if what == "report":
            track.sender_report(ntp64(START + rtp / tracks[kind][2]), rtp & 0xFFFFFFFF)
        else:
            ticks[kind].append(track.dts(rtp))
    return ticks


def spacing_holds(ticks: list[int], interval: float) -> bool:
    nominal = interval * TIME_BASE
    return all(b - a >= nominal * (1 - SLEW) - 1 for a, b in zip(ticks, ticks[1:], strict=False))


def test_a_later_track_switching_to_reports_does_not_step_back():
    ticks = run(audio_delay=0.010, video_delay=0.060, clock_skew=3.5, audio_sr=0.3, video_sr=0.9)
    assert spacing_holds(ticks["video"], 1 / 30) and spacing_holds(ticks["audio"], 0.020)
    # and it converges: at the end the tracks are on the sender's timeline, in sync to the tick
    assert abs(ticks["video"][-1] - round((len(ticks["video"]) - 1) / 30 * TIME_BASE)) <= 1
    assert abs(ticks["audio"][-1] - round((len(ticks["audio"]) - 1) * 0.020 * TIME_BASE)) <= 1


@settings(max_examples=60, deadline=None)
@given(audio_delay=st.floats(0, 0.3), video_delay=st.floats(0, 0.3), clock_skew=st.floats(-100, 100),
       audio_sr=st.floats(0, 1.5), video_sr=st.floats(0, 1.5))
def test_any_delays_and_report_times_keep_each_track_increasing(audio_delay, video_delay, clock_skew,
                                                                audio_sr, video_sr):
    ticks = run(audio_delay, video_delay, clock_skew, audio_sr, video_sr)
    assert spacing_holds(ticks["video"], 1 / 30) and spacing_holds(ticks["audio"], 0.020)
