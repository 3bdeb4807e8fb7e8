"""From the publisher's send log and the readers' receive logs to per-case figures."""

from __future__ import annotations

import bisect
import statistics
from pathlib import Path

FPS_OK = 29.0  # below this a reader counts as behind (the source is 30 fps)
LAG_OK_MS = 1000.0  # a frame later than this makes its reader count as behind


def load_sends(path: Path) -> dict[int, list[float]]:
    """frame key -> sorted send times (a key repeats once per loop of the source)."""
    sends: dict[int, list[float]] = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                sends.setdefault(int(parts[1]), []).append(float(parts[0]))
    return sends


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def reader_lags(frames: list, sends: dict[int, list[float]]) -> tuple[list[float], int]:
    """Lags in ms (receive - latest send of the same frame before it) and the unmatched count."""
    lags, unmatched = [], 0
    for received, key in frames:
        times = sends.get(key)
        i = bisect.bisect_right(times, received) if times else 0
        if i == 0:
            unmatched += 1
        else:
            lags.append((received - times[i - 1]) * 1000)
    return lags, unmatched


def summarize(readers: list[dict], sends: dict[int, list[float]], t0: float, t1: float) -> dict:
    """Per reader fps and lag; across readers fps min/median, pooled lag median/p99/max."""
    window = t1 - t0
    per_reader, pooled, unmatched_total = [], [], 0
    for log in readers:
        lags, unmatched = reader_lags(log["frames"], sends)
        lags.sort()
        unmatched_total += unmatched
        pooled.extend(lags)
        fps = len(log["frames"]) / window
        per_reader.append({
            "index": log["index"], "error": log["error"], "fps": round(fps, 2),
            "lag_median_ms": percentile(lags, 50), "lag_p99_ms": percentile(lags, 99),
            "lag_max_ms": lags[-1] if lags else None, "unmatched": unmatched,
            "behind": fps < FPS_OK or not lags or lags[-1] > LAG_OK_MS,
        })  # fmt: skip
    pooled.sort()
    sent = sum(1 for times in sends.values() for t in times if t0 <= t <= t1)
    fps_values = [r["fps"] for r in per_reader]
    errors = sorted({r["error"] for r in per_reader if r["error"]})
    return {
        "readers": len(readers),
        "readers_connected": sum(1 for log in readers if log["connected_at"] is not None),
        "readers_with_frames": sum(1 for log in readers if log["frames"]),
        "errors": errors[:5],
        "source_fps": round(sent / window, 2),
        "fps_min": min(fps_values, default=None),
        "fps_median": statistics.median(fps_values) if fps_values else None,
        "lag_median_ms": percentile(pooled, 50),
        "lag_p99_ms": percentile(pooled, 99),
        "lag_max_ms": pooled[-1] if pooled else None,
        "frames_unmatched": unmatched_total,
        "readers_behind": sum(1 for r in per_reader if r["behind"]),
        "per_reader": per_reader,
    }
