"""The results as a Markdown table (stdout + docs/benchmarks.md) and raw JSON (bench/out/)."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench:latest:start -->", "<!-- bench:latest:end -->"


def machine_info(nginx_version: str | None) -> dict:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "nginx": nginx_version or "not run",
        "git_commit": commit.stdout.strip() or "?",
    }


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(results: list[dict], row: dict) -> str:
    """MicroVibe CPU / nginx CPU for the same case (RTMP cases: nginx runs only those)."""
    if row["server"] != "MicroVibe":
        return ""
    ref = next((r for r in results if r["case"] == row["case"] and r["server"] == "nginx-rtmp"), None)
    if not ref or ref.get("skipped") or not ref["server_cpu_pct"]:
        return ""
    return f"{row['server_cpu_pct'] / ref['server_cpu_pct']:.2f}"


def table(results: list[dict]) -> str:
    lines = [
        "| case | server | readers ok | server CPU % | MV / nginx CPU | RSS MiB | fps min / med "
        "| lag med / p99 / max ms | behind | client CPU % (max proc / procs) | publisher CPU % | other CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.get("skipped"):
            lines.append(f"| {r['case']} | {r['server']} | {r['skipped']} | | | | | | | | | |")
            continue
        clients = r["client_cpu_pct"]
        lines.append(
            f"| {r['case']} | {r['server']} | {r['readers_with_frames']}/{r['readers']} "
            f"| {_f(r['server_cpu_pct'])} | {_ratio(results, r)} | {_f(r['server_rss_mib'])} "
            f"| {_f(r['fps_min'])} / {_f(r['fps_median'])} "
            f"| {_f(r['lag_median_ms'], 0)} / {_f(r['lag_p99_ms'], 0)} / {_f(r['lag_max_ms'], 0)} "
            f"| {r['readers_behind']} | {_f(max(clients, default=None))} / {len(clients)} "
            f"| {_f(r['publisher_cpu_pct'])} | {_f(r['other_cpu_pct'])} |"
        )
    return "\n".join(lines)


def latest_section(results: list[dict], machine: dict, settings: dict) -> str:
    m = machine
    errors = [f"- {r['server']} {r['case']}: {', '.join(r['errors'])}" for r in results if r.get("errors")]
    parts = [
        f"Run {m['date_utc']} at commit {m['git_commit']}: {m['nproc']} cores ({m['cpu_model']}), "
        f"Linux {m['kernel']}, Python {m['python']}, {m['nginx']} + nginx-rtmp (Debian libnginx-mod-rtmp). "
        f"Each case: {settings['warmup']:g} s warm-up, {settings['seconds']:g} s measured "
        f"(ingest: {settings.get('ingest_seconds', settings['seconds']):g} s, a small figure against the 10 ms tick); "
        f"at most {settings['readers_per_proc']} readers per client process; "
        f"HLS muxing {'on' if settings['hls'] else 'off'} in both servers.",
        "",
        table(results),
    ]
    if errors:
        parts += ["", "Reader errors:", *errors]
    return "\n".join(parts)


def write_doc(section: str, template: str, *, start: str = START, end: str = END,
              heading: str = "## Latest table") -> None:
    """Replace the section between the markers `start` and `end`; the prose around it stays.

    Missing markers are added under `heading` at the end of the file, or before the SFU section
    (another harness's, between its own markers) when there is one.
    """
    text = DOC.read_text() if DOC.exists() else template
    if start not in text or end not in text:
        block = f"{heading}\n\n{start}\n{end}\n"
        sfu = text.find("<!-- bench:sfu:")
        heading_at = text.rfind("\n## ", 0, sfu) if sfu >= 0 else -1
        if heading_at >= 0:
            text = text[: heading_at + 1] + block + "\n" + text[heading_at + 1 :]
        else:
            text = text.rstrip() + "\n\n" + block
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    DOC.write_text(pattern.sub(lambda _: f"{start}\n{section}\n{end}", text, count=1))


def write_json(out_dir: Path, results: list[dict] | dict, machine: dict, settings: dict, *, prefix: str = "") -> Path:
    """`{prefix}results-{time}.json` and `{prefix}latest.json` in `out_dir`."""
    out_dir.mkdir(exist_ok=True)
    data = {"machine": machine, "settings": settings, "results": results}
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = out_dir / f"{prefix}results-{stamp}.json"
    path.write_text(json.dumps(data, indent=1))
    (out_dir / f"{prefix}latest.json").write_text(json.dumps(data, indent=1))
    return path
