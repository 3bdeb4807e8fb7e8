"""The media plane's handle on the control plane (``live.media_api``), injectable for tests.

Media code never imports ``live`` at module level (that needs Django configured): servers take
a ``ControlPlane`` and ``ControlPlane.from_live()`` binds the real service layer lazily.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

# reason values for publish_ended
PUBLISHER_LEFT = "publisher_left"
DROPPED_BY_STAFF = "dropped_by_staff"
KEY_ROTATED = "key_rotated"
ERROR = "error"
END_REASONS = (PUBLISHER_LEFT, DROPPED_BY_STAFF, KEY_ROTATED, ERROR)


@dataclass(frozen=True, slots=True)
class ControlPlane:
    # async (*, stream_key, protocol) -> grant with room_id, public_id, session_id, recording
    publish_authorize: Callable[..., Awaitable[Any]]
    # async (*, session_id, reason, bytes_received, peak_viewers) -> None
    publish_ended: Callable[..., Awaitable[None]]
    # async (*, public_id, count) -> None; called at most once a second per stream
    viewers_changed: Callable[..., Awaitable[None]]
    # the exception publish_authorize raises to refuse (has .reason and .message)
    publish_refused: type[BaseException]
    # async (*, public_id) -> bool, or None to let any live stream be played
    play_authorize: Callable[..., Awaitable[bool]] | None = None
    # registers the MediaControl implementation (staff drops and recording); returns a task or None
    media_control_register: Callable[[Any], Any] | None = None
    # async (*, public_id, media) -> None; what a live stream carries, when it changes and every 10 s
    stream_described: Callable[..., Awaitable[None]] | None = None
    # async (public_id, *, staff=False) -> RecordingPlan | None when a stream goes live (staff=True:
    # a staff start, recorded whatever the room says), and
    # async (plan, info, reason) -> None when its file is closed; None: nothing is recorded
    recording_wanted: Callable[..., Awaitable[Any]] | None = None
    recording_done: Callable[[Any, Any, str], Awaitable[None]] | None = None
    # async (ViewerSession) -> None before a player starts (raises media.hub.viewers.PlayRefused),
    # and (ViewerSession) -> None when it went: see media/hub/viewers.py
    play_started: Callable[[Any], Awaitable[None]] | None = None
    play_ended: Callable[[Any], None] | None = None
    # async (*, stat) -> None: the node's stats (media/stats.node_stat), once a second
    node_stat_report: Callable[..., Awaitable[None]] | None = None
    # () -> prometheus_client collectors the control plane adds to the node's /metrics
    metrics_collectors: Callable[[], list] | None = None
    # async (*, public_id) -> the public bases (`flv`, `hls`, `rtmp_play`, `whep`...) of the node
    # that holds the stream when another node does, else None: a player who reached the wrong
    # node is sent there
    stream_holder: Callable[..., Awaitable[dict | None]] | None = None

    @classmethod
    def from_live(cls) -> ControlPlane:
        from live import media_api

        return cls(
            publish_authorize=media_api.publish_authorize,
            publish_ended=media_api.publish_ended,
            viewers_changed=media_api.viewers_changed,
            publish_refused=media_api.PublishRefused,
            play_authorize=media_api.play_authorize,
            media_control_register=media_api.media_control_register,
            stream_described=media_api.stream_described,
            recording_wanted=media_api.recording_wanted,
            recording_done=media_api.recording_done,
            play_started=media_api.play_started,
            play_ended=media_api.play_ended,
            node_stat_report=media_api.node_stat_report,
            metrics_collectors=media_api.metrics_collectors,
            stream_holder=media_api.stream_holder,
        )


def normalize_end_reason(reason: str) -> str:
    """Map a drop reason from staff onto publish_ended's vocabulary."""
    return reason if reason in END_REASONS else DROPPED_BY_STAFF
