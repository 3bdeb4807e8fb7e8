"""`python -m bench.latency`: how far behind live each way of watching plays in a browser.

One ffmpeg publisher burns its wall clock into every picture (tests/support/clock.py) and pushes the
same encoded stream (tee) to MicroVibe (`manage.py serve` with LL-HLS on) and to nginx-rtmp (HLS,
2 s fragments, as MicroVibe's default `HLS_FRAGMENT`). Headless Chromium plays each way in a page of
its own (the vendored hls.js / mpegts.js of the watch page); the page reads the clock back from
every presented frame, so a figure is glass to glass: encoder, RTMP, server, HTTP, the player's
buffer, decoder. One way at a time: settle `--settle` s after the picture starts, then `--seconds`
measured.

Ways: `llhls` (hls.js lowLatencyMode on `play_urls.llhls`), `hls` (hls.js, default config, our
MPEG-TS playlist), `nginx-hls` (hls.js, default config, nginx-rtmp's playlist), `flv` (mpegts.js
on our HTTP-FLV, the watch page's settings). WebRTC is not in this run: Chromium's WebRTC needs
a loopback-only network namespace here; its RTMP -> WebRTC figure is the Bridges section's.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from tests.support.api import api, create_room, register
from tests.support.browser import chromium
from tests.support.clock import BITS, BOX, READ_CLOCK, clock_publisher
from tests.support.procs import ROOT, Service

from . import report
from .nginx_rtmp import NginxRtmp
from .source import OUT

VENDOR = ROOT / "live" / "static" / "live" / "vendor"
START, END = "<!-- bench:latency:start -->", "<!-- bench:latency:end -->"
PAGE = """<!doctype html><html><body><video id="video" muted autoplay playsinline width="640" height="360"></video>
<script src="hls.js"></script><script src="mpegts.js"></script><script>
const q = new URLSearchParams(location.search), url = q.get("url"), kind = q.get("kind");
const video = document.getElementById("video");
window.playerErrors = [];
if (kind === "flv") {
  const p = mpegts.createPlayer({ type: "flv", isLive: true, url }, { enableStashBuffer: false });
  p.on(mpegts.Events.ERROR, (t, d) => window.playerErrors.push(t + ":" + d));
  p.attachMediaElement(video); p.load();
} else {
  const h = new Hls({ lowLatencyMode: kind === "llhls" });
  h.on(Hls.Events.ERROR, (_e, d) => { if (d.fatal) window.playerErrors.push(d.type + ":" + d.details); });
  h.loadSource(url); h.attachMedia(video);
}
video.play().catch(() => {});
</script></body></html>"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def page_server():
    """The players' page and the vendored players, on a loopback port of their own."""
    folder = Path(tempfile.mkdtemp(prefix="mv-latency-"))
    (folder / "index.html").write_text(PAGE)
    shutil.copy(next(VENDOR.glob("hls-*.min.js")), folder / "hls.js")
    shutil.copy(next(VENDOR.glob("mpegts-*.js")), folder / "mpegts.js")
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


def measure(page: str, kind: str, url: str, t0_us: int, settle: float, seconds: float) -> dict:
    with chromium() as browser:
        browser.get(f"{page}?kind={kind}&url={url}")
        started = time.monotonic()
        while browser.execute_script("return document.getElementById('video').currentTime") < 0.5:
            if time.monotonic() - started > 30:
                return {"way": kind, "error": f"no picture in 30 s: {browser.execute_script('return playerErrors')}"}
            time.sleep(0.2)
        time.sleep(settle)
        browser.execute_script(READ_CLOCK, t0_us / 1000, BITS, BOX)
        time.sleep(seconds)
        samples = [s for _, s in browser.execute_script("return window.__behind")]
        errors = browser.execute_script("return window.playerErrors")
    good = sorted(s for s in samples if 0 < s < 30)
    if not good:
        return {"way": kind, "error": f"no frame read ({len(samples)} presented)", "player_errors": errors}
    return {"way": kind, "frames": len(samples), "misread": len(samples) - len(good), "player_errors": errors,
            "p50": statistics.median(good), "p90": good[int(0.9 * (len(good) - 1))], "max": good[-1]}


PLAYERS = {"llhls": "hls.js 1.7.4, lowLatencyMode", "hls": "hls.js 1.7.4, default config",
           "nginx-hls": "hls.js 1.7.4, default config", "flv": "mpegts.js 1.8.2, no stash buffer"}
SERVERS = {"llhls": "MicroVibe LL-HLS (0.2 s parts, 1 s segments)", "hls": "MicroVibe HLS (2 s segments)",
           "nginx-hls": "nginx-rtmp HLS (2 s fragments)", "flv": "MicroVibe HTTP-FLV"}


def table(results: list[dict], seconds: float, settle: float) -> str:
    m = report.machine_info(None)
    meta = f"{m['nproc']} cores ({m['cpu_model']}), Linux {m['kernel']}, Python {m['python']}"
    lines = [f"Run {m['date_utc']} at commit {m['git_commit']}: {meta}. "
             f"Command: `python -m bench.latency`. One 640x360 30 fps H.264 (1 s GOP) + AAC ffmpeg publisher with "
             f"its clock in the picture, the same stream to both servers (tee); each way in headless Chromium, "
             f"{settle:g} s after the picture starts, then {seconds:g} s measured, one way at a time.", "",
             "| way | server | player | behind p50 s | p90 s | max s | frames read |", "|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['way']} | {SERVERS[r['way']]} | {PLAYERS[r['way']]} | failed: {r['error']} | | | |")
        else:
            lines.append(f"| {r['way']} | {SERVERS[r['way']]} | {PLAYERS[r['way']]} | {r['p50']:.2f} | "
                         f"{r['p90']:.2f} | {r['max']:.2f} | {r['frames'] - r['misread']}/{r['frames']} |")
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    body = doc.read_text()
    block = f"{START}\n{text}\n{END}"
    if START in body:
        body = body[:body.index(START)] + block + body[body.index(END) + len(END):]
    else:
        body = body.replace("## Low-Latency HLS\n", "## Latency behind live in a browser\n\n" + block +
                            "\n\n## Low-Latency HLS\n", 1)
    doc.write_text(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--only", default="llhls,hls,nginx-hls,flv")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    ways = args.only.split(",")
    results = []
    with Service(env={"LLHLS_ENABLED": "1"}) as service, NginxRtmp(hls=True) as nginx, page_server() as page:
        room = create_room(service, register(service, "latency"), title="latency")
        public_id = room["room"]["room_id"]
        nginx_publish, nginx_hls = nginx.new_stream()
        t0_us = int(time.time() * 1e6)
        publisher = clock_publisher(f"rtmp://127.0.0.1:{service.rtmp_port}/live/{room['stream_key']}", t0_us,
                                    nginx_publish)
        try:
            time.sleep(8)  # live on both, a few segments written
            urls = api(service, f"/api/v1/live/{public_id}")[1]["data"]["play_urls"]
            targets = {"llhls": urls["llhls"], "hls": urls["hls"], "nginx-hls": nginx_hls, "flv": urls["flv"]}
            for way in ways:
                result = measure(page, way, targets[way], t0_us, args.settle, args.seconds)
                print(way, {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}, flush=True)
                results.append(result)
        finally:
            publisher.kill()
            publisher.wait(10)
    OUT.mkdir(parents=True, exist_ok=True)
    raw = OUT / f"latency-{time.strftime('%Y%m%dT%H%M%S')}.json"
    raw.write_text(json.dumps(results, indent=1))
    text = table(results, args.seconds, args.settle)
    print(text)
    print(f"raw numbers: {raw}")
    if not args.no_doc:
        write_doc(text)


if __name__ == "__main__":
    main()
