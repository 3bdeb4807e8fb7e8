"""The per-publisher PLI throttle."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class KeyframeThrottle:
    """Coalesces keyframe requests: at most one `send()` per `interval` seconds.

    A request inside the quiet period is remembered and sent when it ends, so a burst of
    subscribers joining (or their PLIs) costs the publisher one keyframe, not one each.
    """

    def __init__(self, send: Callable[[], None], interval: float = 0.3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self.interval = interval
        self._clock = clock
        self._last = -1e9
        self._pending: asyncio.TimerHandle | None = None
        self.sent = 0
        self.coalesced = 0

    def request(self) -> None:
        if self._pending is not None:
            self.coalesced += 1
            return
        wait = self._last + self.interval - self._clock()
        if wait <= 0:
            self._fire()
        else:
            self.coalesced += 1
            self._pending = asyncio.get_running_loop().call_later(wait, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self._last = self._clock()
        self.sent += 1
        self._send()

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
