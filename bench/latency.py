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
on our HTTP-FLV, the watch page's settings), `webrtc` (the room's own watch page, WHEP: H.264 as
published, the AAC as Opus). Chromium pairs its eth0 socket with a loopback ICE candidate, so the
whole run (publisher, both servers, browser) re-executes itself inside a fresh network namespace
with only `lo` (`unshare --net`, root), as tests/sfu/browser_netns.py does.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.support.api import api, create_room, register
from tests.support.browser import WEBRTC_FLAGS, chromium
from tests.support.clock import BITS, BOX, READ_CLOCK, clock_publisher
from tests.support.procs import ROOT, Service, require_tool

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


def measure(kind: str, page_url: str, t0_us: int, settle: float, seconds: float) -> dict:
    with chromium(WEBRTC_FLAGS if kind == "webrtc" else None) as browser:
        browser.get(page_url)
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
        state = browser.execute_script("const s = document.getElementById('player-state'); return s && s.textContent")
    if kind == "webrtc" and state != "playing webrtc":  # the watch page fell back to HLS: not this way's figure
        return {"way": kind, "error": f"the watch page says {state!r}", "player_errors": errors}
    good = sorted(s for s in samples if 0 < s < 30)
    if not good:
        return {"way": kind, "error": f"no frame read ({len(samples)} presented)", "player_errors": errors}
    return {"way": kind, "frames": len(samples), "misread": len(samples) - len(good), "player_errors": errors,
            "p50": statistics.median(good), "p90": good[int(0.9 * (len(good) - 1))], "max": good[-1]}


PLAYERS = {"llhls": "hls.js 1.7.4, lowLatencyMode", "hls": "hls.js 1.7.4, default config",
           "nginx-hls": "hls.js 1.7.4, default config", "flv": "mpegts.js 1.8.2, no stash buffer",
           "webrtc": "Chromium RTCPeerConnection (the watch page)"}
SERVERS = {"llhls": "MicroVibe LL-HLS (0.2 s parts, 1 s segments)", "hls": "MicroVibe HLS (2 s segments)",
           "nginx-hls": "nginx-rtmp HLS (2 s fragments)", "flv": "MicroVibe HTTP-FLV",
           "webrtc": "MicroVibe WHEP (RTMP -> WebRTC, AAC -> Opus)"}
WAYS = "llhls,hls,nginx-hls,flv,webrtc"


def table(results: list[dict], seconds: float, settle: float) -> str:
    m = report.machine_info(None)
    meta = f"{m['nproc']} cores ({m['cpu_model']}), Linux {m['kernel']}, Python {m['python']}"
    lines = [f"Run {m['date_utc']} at commit {m['git_commit']}: {meta}. "
             f"Command: `python -m bench.latency`. One 640x360 30 fps H.264 (1 s GOP) + AAC ffmpeg publisher with "
             f"its clock in the picture, the same stream to both servers (tee); each way in headless Chromium, "
             f"{settle:g} s after the picture starts, then {seconds:g} s measured, one way at a time; "
             f"all inside one loopback-only network namespace.", "",
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
    parser.add_argument("--only", default=WAYS)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    if os.environ.get(NETNS_MARK) != "1":
        sys.exit(in_loopback_namespace())
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    run(args)


NETNS_MARK = "MV_BENCH_IN_NETNS"


def in_loopback_namespace() -> int:
    """This bench again, inside a new network namespace that has only `lo` (Chromium's WebRTC)."""
    if os.geteuid() != 0:
        sys.exit("bench.latency runs in its own network namespace (`unshare --net`): run it as root")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")} | {NETNS_MARK: "1"}
    return subprocess.run([require_tool("unshare"), "--net", sys.executable, "-m", "bench.latency", *sys.argv[1:]],
                          cwd=ROOT, env=env).returncode


def run(args: argparse.Namespace) -> None:
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
            pages = {way: f"{page}?kind={way}&url={url}" for way, url in targets.items()}
            pages["webrtc"] = service.url(f"/live/{public_id}?player=webrtc")
            for way in ways:
                result = measure(way, pages[way], t0_us, args.settle, args.seconds)
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
