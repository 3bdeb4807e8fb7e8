"""A bridge as a hub reader: a bounded per-stream queue, the conversion in the bridge's own thread.

One `AudioBridge` per stream and target (e.g. the stream's AAC as Opus for WebRTC viewers), made
when its first consumer needs it and stopped after the last one leaves, so nothing is transcoded
for nobody. The reader's queue is the bound: when the bridge falls behind, the hub drops units to
the next keyframe and counts them; memory never grows. Converted units go to `emit` on the event
loop, in order.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from media.hub.stream import Stream
from media.hub.unit import TIME_BASE, AccessUnit

log = logging.getLogger(__name__)


class Converter(Protocol):
    def feed(self, unit: AccessUnit) -> list[AccessUnit]: ...


class AudioBridge:
    """Converts a stream's audio with `make(config_payload)`, emitting the results."""

    def __init__(self, stream: Stream, name: str, make: Callable[[bytes], Converter],
                 emit: Callable[[AccessUnit], None], *, max_units: int = 512) -> None:
        self.stream = stream
        self.name = name
        self._make = make
        self._emit = emit
        self._converter: Converter | None = None
        # The reader starts with the GOP cache: live viewers want live audio, not the last seconds.
        newest = stream.last_dts("audio")
        self._start = newest - TIME_BASE // 10 if newest is not None else None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-{stream.public_id}")
        self.reader = stream.add_reader(name, max_units=max_units)
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"{name}-{stream.public_id}")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (unit := await self.reader.get()) is not None:
                if unit.kind != "audio":
                    continue
                if unit.config:
                    self._converter = await loop.run_in_executor(self._executor, self._make, unit.payload)
                    continue
                if self._converter is None or (self._start is not None and unit.dts < self._start):
                    continue
                for out in await loop.run_in_executor(self._executor, self._converter.feed, unit):
                    self._emit(out)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("bridge %s of %s failed; stopped", self.name, self.stream.public_id)
        finally:
            self.reader.close()
            self._executor.shutdown(wait=False)

    @property
    def dropped(self) -> int:
        return self.reader.dropped

    def stop(self) -> None:
        self.reader.close()
        self.task.cancel()
