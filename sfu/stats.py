"""Small measuring helpers: a bounded sample reservoir with percentiles."""
from __future__ import annotations

from collections import deque


class Samples:
    """The last `size` samples (seconds); percentiles on demand."""

    def __init__(self, size: int = 20000) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self.add = self._values.append

    def clear(self) -> None:
        self._values.clear()

    def __len__(self) -> int:
        return len(self._values)

    def percentile(self, p: float) -> float | None:
        if not self._values:
            return None
        ordered = sorted(self._values)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    def summary_ms(self) -> dict[str, float | int | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 2)

        return {"count": len(self), "p50_ms": ms(self.percentile(50)), "p99_ms": ms(self.percentile(99)),
                "max_ms": ms(self.percentile(100))}
