"""A bridge as a hub reader: a bounded per-stream queue, the conversion on a lane of the node's
worker pool (media/workers.py).

One `Bridge` per stream, track kind and target codec (e.g. a stream's AAC as Opus for WebRTC
viewers), made by a `Rendition` (rendition.py) when its first consumer needs it and stopped after
the last one leaves, so nothing is transcoded for nobody. The reader's queue is the bound: when the
bridge falls behind, the hub drops units to the next keyframe and counts them (asking the source
for one); memory never grows. Converted units go to `emit` on the event loop, in order.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from media.hub.stream import Stream
from media.hub.unit import AccessUnit
from media.workers import pool

log = logging.getLogger(__name__)

_BATCH = 16  # queued units converted in one thread hop when the bridge is behind


class Converter(Protocol):
    def feed(self, unit: AccessUnit) -> list[AccessUnit]: ...


class Bridge:
    """Converts one kind of a stream with `make(config_payload_or_None)`, emitting the results.

    A converter is made at the kind's configuration unit (the AAC AudioSpecificConfig, the H.264
    decoder record), again whenever it changes, or at the first frame of a codec that has none (VP8).
    """

    def __init__(self, stream: Stream, kind: str, name: str, make: Callable[[bytes | None], Converter],
                 emit: Callable[[AccessUnit], None], *, needs_config: bool, skip_before: int | None = None,
                 max_units: int = 512) -> None:
        self.stream = stream
        self.kind = kind
        self.name = name
        self._make = make
        self._emit = emit
        self.needs_config = needs_config
        # The reader starts with the GOP cache: units before this dts are old (live viewers want
        # live audio, not the last seconds); a video converter decodes them instead (references).
        self.skip_before = skip_before
        self.converter: Converter | None = None
        self.units_in = 0
        self.units_out = 0
        self.lane = pool().lane(f"{name} bridge of {stream.public_id}")  # raises WorkersFull
        try:
            self.reader = stream.add_reader(name, max_units=max_units)
        except BaseException:  # StreamClosed
            self.lane.close()
            raise
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"{name}-{stream.public_id}")

    async def _run(self) -> None:
        try:
            while (batch := await self.reader.batch(_BATCH)) is not None:
                batch = [unit for unit in batch if unit.kind == self.kind]
                if batch:
                    for out in await self.lane.run(self._convert, batch):
                        self.units_out += 1
                        self._emit(out)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("bridge %s of %s failed; stopped", self.name, self.stream.public_id)
        finally:
            self.reader.close()
            self.lane.close()

    def _convert(self, batch: list[AccessUnit]) -> list[AccessUnit]:
        """On a worker thread."""
        out: list[AccessUnit] = []
        for unit in batch:
            if unit.config:
                self.converter = self._make(unit.payload)
                continue
            if self.converter is None:
                if self.needs_config:
                    continue  # not decodable before its configuration
                self.converter = self._make(None)
            if self.skip_before is not None and unit.dts < self.skip_before:
                continue
            self.units_in += 1
            out += self.converter.feed(unit)
        return out

    @property
    def dropped(self) -> int:
        return self.reader.dropped

    def stop(self) -> None:
        self.reader.close()
        self.task.cancel()
